"""Reading, converting and loading checkpoints of every supported layout.

Layouts (auto-detected by :func:`detect_layout`):

* ``edgevit-official``: saic-fi/edgevit (``patch_embed1.``, ``blocks1.0.LocalAgg.`` ...)
* ``edgevit-easycv``: alibaba/EasyCV's EdgeViT classifier (``backbone.patch_embed1.`` ...,
  ``head_0.fc_cls.``)
* ``edgevit``: ours
* ``efficientformerv2-official-classification``: snap-research ``models/efficientformer_v2.py``
* ``efficientformerv2-official-dense``: snap-research ``detection/backbonev2.py`` (``*_seg``)
* ``efficientformerv2``: ours, which is timm's ``efficientformerv2_*`` layout

Full detector / segmentor checkpoints work with ``prefix='backbone.'`` (also detected when
no prefix is given). Conversion functions are pure and idempotent; :func:`load_pretrained`
reports ignored keys and raises when a checkpoint does not fit the model.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .compat import load_local_checkpoint
from .edgevit import (EdgeViT, convert_edgevit_easycv, convert_edgevit_official, is_edgevit_easycv,
                      is_edgevit_official)
from .efficientformer_v2 import (EfficientFormerV2, convert_efficientformerv2_official,
                                 convert_efficientformerv2_timm, is_efficientformerv2_dense,
                                 is_efficientformerv2_official)

StateDict = Dict[str, torch.Tensor]
CLASSIFIER_KEYS = ('head.', 'head_dist.', 'norm.')
FAMILIES = {'EdgeViT': EdgeViT, 'EfficientFormerV2': EfficientFormerV2}
# below this fraction of the model's weights found in a checkpoint, loading is refused
MIN_MATCHED_FRACTION = 0.5


def read_checkpoint(path: str, map_location: str = 'cpu') -> Dict[str, Any]:
    """Load a checkpoint file (local path, or any URL mmengine's loader knows).

    Plain tensor checkpoints load with ``weights_only=True``; a checkpoint that also pickles
    other objects (mmengine's ``meta``, message hubs) is loaded fully (see ``compat.py``).
    """
    if '://' in str(path):
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path!r} does not exist; check init_cfg.checkpoint '
                                '(or the path you passed)')
    return load_local_checkpoint(path, map_location=map_location)


def extract_state_dict(checkpoint: Any, prefix: Optional[str] = None) -> StateDict:
    """The state dict inside a checkpoint: unwraps ``state_dict`` / ``model`` / ``module``,
    strips DistributedDataParallel's ``module.``, and keeps only ``prefix`` keys (stripped)."""
    sd = checkpoint
    for wrapper in ('state_dict', 'model', 'module'):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict) or not sd:
        raise ValueError('the checkpoint holds no state dict (expected a dict of tensors, or one under '
                         "'state_dict' or 'model')")
    if all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    if prefix:
        if not prefix.endswith('.'):
            prefix += '.'
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sub:
            heads = sorted({k.split('.')[0] + '.' for k in sd})[:8]
            raise ValueError(f'no key of the checkpoint starts with prefix {prefix!r}; its top-level '
                             f'prefixes are {heads}')
        sd = sub
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def detect_layout(state_dict: StateDict) -> str:
    """Name the layout of a backbone state dict (see the module docstring)."""
    if is_edgevit_easycv(state_dict):
        return 'edgevit-easycv'
    if is_edgevit_official(state_dict):
        return 'edgevit-official'
    if is_efficientformerv2_official(state_dict):
        kind = 'dense' if is_efficientformerv2_dense(state_dict) else 'classification'
        return f'efficientformerv2-official-{kind}'
    keys = list(state_dict)
    if any('.global_attn.' in k or '.local_agg.' in k for k in keys):
        return 'edgevit'
    if any(k.startswith('stem.conv1.') for k in keys):
        has_head = any(k.startswith('head.') for k in keys)
        return 'efficientformerv2-classification' if has_head else 'efficientformerv2'
    if any(k.startswith('backbone.') for k in keys):
        return 'detector'
    return 'unknown'


def convert_state_dict(state_dict: StateDict) -> Tuple[StateDict, str]:
    """Any supported layout -> ours. Returns the converted dict and the detected layout."""
    layout = detect_layout(state_dict)
    if layout == 'edgevit-easycv':
        return convert_edgevit_easycv(state_dict), layout
    if layout == 'edgevit-official':
        return convert_edgevit_official(state_dict), layout
    if layout.startswith('efficientformerv2-official'):
        return convert_efficientformerv2_official(state_dict), layout
    if layout.startswith('efficientformerv2'):
        return convert_efficientformerv2_timm(state_dict), layout
    return dict(state_dict), layout


def convert_full_checkpoint(state_dict: StateDict, prefix: str = 'backbone.') -> StateDict:
    """Convert the backbone part of a whole detector/segmentor state dict; the rest is kept."""
    backbone = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not backbone:
        return convert_state_dict(state_dict)[0]
    converted, _ = convert_state_dict(backbone)
    out = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    out.update({prefix + k: v for k, v in converted.items()})
    return out


def _shapes_on_meta(cls: type, arch: str) -> Dict[str, torch.Size]:
    with torch.device('meta'):
        model = cls(arch=arch)
    return {k: v.shape for k, v in model.state_dict().items()}


_SHAPE_CACHE: Dict[Tuple[str, str], Dict[str, torch.Size]] = {}


def guess_arch(state_dict: StateDict) -> Tuple[str, str, float]:
    """The (family, arch, fraction of matching weights) that best fits a converted state dict."""
    best = ('unknown', '', 0.0)
    for family, cls in FAMILIES.items():
        for arch in cls.arch_settings:
            key = (family, arch)
            if key not in _SHAPE_CACHE:
                _SHAPE_CACHE[key] = _shapes_on_meta(cls, arch)
            shapes = _SHAPE_CACHE[key]
            matched = sum(1 for k, v in state_dict.items()
                          if k in shapes and shapes[k] == v.shape and not k.endswith('attention_biases'))
            score = matched / max(len(shapes), 1)
            if score > best[2]:
                best = (family, arch, score)
    return best


def _describe_guess(state_dict: StateDict) -> str:
    family, arch, score = guess_arch(state_dict)
    if not arch or score < 0.2:
        return 'it matches no EdgeViT or EfficientFormerV2 variant'
    return f"it looks like {family}(arch='{arch}') ({score:.0%} of that model's weights match)"


def load_state_dict_checked(model: nn.Module, state_dict: StateDict, source: str = 'checkpoint') -> Dict[str, List[str]]:
    """Load an (unconverted) backbone state dict into ``model`` with checks.

    Converts the layout, drops classifier parts, adapts size-dependent tables, then raises a
    ValueError if any shape differs or fewer than half of the model's weights are found
    (naming the arch the checkpoint looks like); otherwise loads and logs what was ignored.
    Returns ``dict(missing=..., unexpected=..., ignored=...)``.
    """
    converted, layout = convert_state_dict(state_dict)
    if layout == 'detector':
        raise ValueError(f"{source} is a whole detector/segmentor checkpoint; pass prefix='backbone.' "
                         '(init_cfg=dict(type=\'Pretrained\', checkpoint=..., prefix=\'backbone.\'))')
    ignored = sorted(k for k in converted if k.startswith(CLASSIFIER_KEYS))
    converted = {k: v for k, v in converted.items() if not k.startswith(CLASSIFIER_KEYS)}
    if hasattr(model, 'adapt_state_dict'):
        from_classifier = layout.endswith('classification') or bool(ignored)
        converted = model.adapt_state_dict(converted, from_classifier)
    own = model.state_dict()
    name = f"{type(model).__name__}(arch={getattr(model, 'arch_name', '?')!r})"
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in converted.items() if k in own and own[k].shape != v.shape]
    matched = [k for k, v in converted.items() if k in own and own[k].shape == v.shape]
    weights = [k for k in own if not k.endswith('num_batches_tracked')]
    fraction = sum(1 for k in matched if not k.endswith('num_batches_tracked')) / max(len(weights), 1)
    if mismatched or fraction < MIN_MATCHED_FRACTION:
        detail = (f'{len(mismatched)} shapes differ, e.g. {mismatched[:3]}' if mismatched
                  else f'only {fraction:.0%} of the model\'s weights are in it')
        raise ValueError(f'{source} (layout: {layout}) does not fit {name}: {detail}; '
                         f'{_describe_guess(converted)}. Choose that arch, or check the file.')
    result = model.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith('num_batches_tracked')]
    unexpected = list(result.unexpected_keys)
    msg = [f'loaded {source} (layout: {layout}) into {name}: {len(matched)} tensors']
    if ignored:
        msg.append(f'ignored classifier keys: {ignored}')
    if unexpected:
        msg.append(f'ignored unexpected keys: {unexpected}')
    if missing:
        msg.append(f'missing keys (keep their initialisation): {missing}')
    print_log('; '.join(msg), logger='current')
    return dict(missing=missing, unexpected=unexpected, ignored=ignored)


def load_pretrained(model: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                    map_location: str = 'cpu') -> Dict[str, List[str]]:
    """``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` for our backbones."""
    raw = read_checkpoint(checkpoint, map_location=map_location)
    state_dict = extract_state_dict(raw, prefix)
    if not prefix and detect_layout(state_dict) == 'detector':
        print_log(f"{checkpoint}: a whole-model checkpoint; loading its 'backbone.' part", logger='current')
        state_dict = extract_state_dict(state_dict, 'backbone.')
    return load_state_dict_checked(model, state_dict, source=str(checkpoint))


def convert_checkpoint_file(src: str, dst: str, prefix: str = 'backbone.') -> Dict[str, Any]:
    """Convert a checkpoint file to our layout (see ``tools/convert_checkpoint.py``).

    A whole-model checkpoint keeps its other keys and its ``meta``; a backbone or classifier
    checkpoint is written as ``{'state_dict': ...}``. Returns what was detected.
    """
    raw = read_checkpoint(src)
    state_dict = extract_state_dict(raw)
    # (an EasyCV classifier keeps its backbone under `backbone.` too, but is one layout)
    whole_model = any(k.startswith(prefix) for k in state_dict) and detect_layout(state_dict) != 'edgevit-easycv'
    if whole_model:
        converted = convert_full_checkpoint(state_dict, prefix)
        backbone = {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}
        layout = detect_layout({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    else:
        converted, layout = convert_state_dict(state_dict)
        backbone = converted
    if layout == 'unknown':
        raise ValueError(f'{src}: no EdgeViT or EfficientFormerV2 weights found (keys such as '
                         f'{list(state_dict)[:3]})')
    family, arch, match = guess_arch(backbone)
    out: Dict[str, Any] = {'state_dict': converted}
    if isinstance(raw, dict) and isinstance(raw.get('meta'), dict):
        out['meta'] = raw['meta']
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save(out, dst)
    return dict(layout=('whole model, backbone ' if whole_model else '') + layout, family=family, arch=arch,
                match=match, num_tensors=len(converted))
