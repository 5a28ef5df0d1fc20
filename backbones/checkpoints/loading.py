"""Checked loading of backbone checkpoints in any registered layout.

:func:`load_pretrained` is what ``init_cfg=dict(type='Pretrained', checkpoint=...)`` runs: it
reads the file (:mod:`.io`), unwraps it, detects and converts the layout
(:mod:`.layouts`), lets the model fit size-dependent tables, and refuses a checkpoint that
does not fit, naming the variant it does fit (guessed over the family registry). Imports no
family.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..registry import variants
from .io import read_checkpoint
from .layouts import DETECTOR, UNKNOWN, StateDict, convert_full_checkpoint, convert_state_dict, detect_layout, get_layout

CLASSIFIER_KEYS = ('head.', 'head_dist.', 'norm.')
# below this fraction of the model's weights found in a checkpoint, loading is refused
MIN_MATCHED_FRACTION = 0.5


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


def _shapes_on_meta(cls: type, arch: str) -> Dict[str, torch.Size]:
    with torch.device('meta'):
        model = cls(arch=arch)
    return {k: v.shape for k, v in model.state_dict().items()}


_SHAPE_CACHE: Dict[Tuple[type, str], Dict[str, torch.Size]] = {}


def guess_arch(state_dict: StateDict) -> Tuple[str, str, float]:
    """The (family, arch, fraction of matching weights) of the registered variant that best
    fits a converted state dict."""
    best = ('unknown', '', 0.0)
    for variant in variants():
        key = (variant.cls, variant.arch)
        if key not in _SHAPE_CACHE:
            _SHAPE_CACHE[key] = _shapes_on_meta(variant.cls, variant.arch)
        shapes = _SHAPE_CACHE[key]
        matched = sum(1 for k, v in state_dict.items()
                      if k in shapes and shapes[k] == v.shape and not k.endswith('attention_biases'))
        score = matched / max(len(shapes), 1)
        if score > best[2]:
            best = (variant.family, variant.arch, score)
    return best


def _describe_guess(state_dict: StateDict) -> str:
    family, arch, score = guess_arch(state_dict)
    if not arch or score < 0.2:
        return 'it matches no registered variant'
    return f"it looks like {family}(arch='{arch}') ({score:.0%} of that model's weights match)"


def load_state_dict_checked(model: nn.Module, state_dict: StateDict, source: str = 'checkpoint') -> Dict[str, List[str]]:
    """Load an (unconverted) backbone state dict into ``model`` with checks.

    Converts the layout, drops classifier parts, adapts size-dependent tables, then raises a
    ValueError if any shape differs or fewer than half of the model's weights are found
    (naming the arch the checkpoint looks like); otherwise loads and logs what was ignored.
    Returns ``dict(missing=..., unexpected=..., ignored=...)``.
    """
    converted, layout = convert_state_dict(state_dict)
    if layout == DETECTOR:
        raise ValueError(f"{source} is a whole detector/segmentor checkpoint; pass prefix='backbone.' "
                         '(init_cfg=dict(type=\'Pretrained\', checkpoint=..., prefix=\'backbone.\'))')
    ignored = sorted(k for k in converted if k.startswith(CLASSIFIER_KEYS))
    converted = {k: v for k, v in converted.items() if not k.startswith(CLASSIFIER_KEYS)}
    if hasattr(model, 'adapt_state_dict'):
        from_classifier = bool(getattr(get_layout(layout), 'classification', False) or ignored)
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
    if not prefix and detect_layout(state_dict) == DETECTOR:
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
    # a classifier layout may keep its backbone under `backbone.` too (EasyCV): that is one layout
    whole_model = any(k.startswith(prefix) for k in state_dict) and detect_layout(state_dict) == DETECTOR
    if whole_model:
        converted = convert_full_checkpoint(state_dict, prefix)
        backbone = {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}
        layout = detect_layout({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    else:
        converted, layout = convert_state_dict(state_dict)
        backbone = converted
    if layout == UNKNOWN:
        raise ValueError(f'{src}: no weights of a registered backbone found (keys such as '
                         f'{list(state_dict)[:3]})')
    family, arch, match = guess_arch(backbone)
    out: Dict[str, Any] = {'state_dict': converted}
    if isinstance(raw, dict) and isinstance(raw.get('meta'), dict):
        out['meta'] = raw['meta']
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save(out, dst)
    return dict(layout=('whole model, backbone ' if whole_model else '') + layout, family=family, arch=arch,
                match=match, num_tensors=len(converted))
