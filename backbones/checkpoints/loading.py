"""Checked loading of backbone checkpoints in any registered layout.

:func:`load_pretrained` is what ``init_cfg=dict(type='Pretrained', checkpoint=...)`` runs: it
reads the file (:mod:`.io`), unwraps it, detects and converts the layout
(:mod:`.layouts`), lets the model fit size-dependent tables, and refuses a checkpoint that
does not fit, naming the variant it does fit (guessed over the family registry). Imports no
family.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..fileio import save_torch
from ..registry import variants
from .io import CheckpointFileError, read_checkpoint
from .layouts import (CLASSIFIER_PREFIXES, DETECTOR, MMPRETRAIN_RULES, UNKNOWN, StateDict, convert_full_checkpoint,
                      convert_state_dict, detect_layout, get_layout, mmpretrain_keys)


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model it is loaded into (another arch or model)."""

# below this fraction of the model's weights found in a checkpoint, loading is refused
MIN_MATCHED_FRACTION = 0.5


#: wrappers of EMA weights, preferred over the raw weights beside them (timm: state_dict_ema;
#: DeiT-style trainers such as EfficientFormer's: model_ema)
EMA_WRAPPERS = ('model_ema', 'state_dict_ema', 'ema_state_dict')


def _is_mmengine_ema(ema: Any) -> bool:
    """mmengine's EMAHook saves the EMA weights under ``state_dict`` and the raw model's under
    ``ema_state_dict`` (an averaged-model state: ``steps`` and ``module.``-prefixed keys)."""
    return isinstance(ema, dict) and 'steps' in ema and all(k == 'steps' or k.startswith('module.') for k in ema)


def find_state_dict(checkpoint: Any) -> Tuple[Any, str]:
    """The weights a checkpoint holds, preferring EMA weights, and where they were found."""
    if not isinstance(checkpoint, dict):
        return checkpoint, 'the file'
    ema_key = next((k for k in EMA_WRAPPERS if isinstance(checkpoint.get(k), dict) and checkpoint[k]), None)
    if ema_key == 'ema_state_dict' and isinstance(checkpoint.get('state_dict'), dict) \
            and _is_mmengine_ema(checkpoint['ema_state_dict']):
        return checkpoint['state_dict'], ("'state_dict': the EMA weights (mmengine's EMAHook keeps them there; "
                                          "'ema_state_dict' holds the raw ones)")
    if ema_key is not None:
        others = [k for k in ('state_dict', 'model') if isinstance(checkpoint.get(k), dict)]
        return checkpoint[ema_key], f"'{ema_key}': the EMA weights" + (
            f" (preferred over '{others[0]}')" if others else '')
    for wrapper in ('state_dict', 'model', 'module'):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
            return checkpoint[wrapper], f"'{wrapper}'"
    return checkpoint, 'the top level'


def _drop_mmcv_ema_buffers(sd: Dict[str, Any]) -> Tuple[Dict[str, Any], int]:
    """mmcv 1.x's EMAHook registers ``ema_<name with _ for .>`` buffers on the model (and swaps
    the EMA weights into the parameters before epoch-end checkpoints): drop the buffers."""
    shadow = {'ema_' + k.replace('.', '_') for k in sd if not k.startswith('ema_')}
    dropped = [k for k in sd if k in shadow]
    return ({k: v for k, v in sd.items() if k not in shadow}, len(dropped)) if dropped else (sd, 0)


def extract_state_dict(checkpoint: Any, prefix: Optional[str] = None, source: str = 'checkpoint') -> StateDict:
    """The state dict inside a checkpoint: EMA weights where the checkpoint has them (see
    :func:`find_state_dict`), else the one under ``state_dict`` / ``model`` / ``module``;
    strips DistributedDataParallel's ``module.``, and keeps only ``prefix`` keys (stripped).
    Logs where the weights came from when the checkpoint is wrapped."""
    sd, where = find_state_dict(checkpoint)
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f'{source} holds no state dict (expected a dict of tensors, or one under '
                         "'state_dict' or 'model')")
    sd, dropped = _drop_mmcv_ema_buffers(sd)
    if 'EMA' in where or dropped:
        print_log(f'{source}: using the weights in {where}' + (
            f"; dropped {dropped} 'ema_*' buffers of mmcv's EMAHook" if dropped else ''), logger='current')
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


def nonfinite_tensors(tensors: Dict[str, torch.Tensor]) -> List[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity."""
    return [k for k, v in tensors.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_values(state_dict: Dict[str, torch.Tensor], source: str,
                 expected: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """Refuse weights no model should be given: tensors holding NaN or infinity (a diverged
    training run or a damaged file), and, against the model's own ``expected`` tensors,
    integer tensors where the model has floating-point weights (which loading would cast
    silently). Raises :class:`~.io.CheckpointFileError` naming how many tensors and which."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise CheckpointFileError(f'{source}: {len(bad)} of its {len(state_dict)} tensors hold NaN or infinite values '
                                  f'({_listed(bad)}): the training that wrote it diverged or the file is damaged; use '
                                  'an earlier checkpoint')
    if expected is not None:
        wrong = [f'{k} ({v.dtype})' for k, v in state_dict.items() if k in expected and isinstance(v, torch.Tensor)
                 and expected[k].is_floating_point() and not v.is_floating_point()]
        if wrong:
            raise CheckpointFileError(f'{source}: {len(wrong)} weights are integers where the model has floating-point '
                                      f'weights ({_listed(wrong)}): not a checkpoint of trained weights (a quantised '
                                      'or otherwise converted file?); export or save the float weights')


def _listed(names: List[str], limit: int = 5) -> str:
    return ', '.join(names[:limit]) + (f' and {len(names) - limit} more' if len(names) > limit else '')


def _shapes_on_meta(cls: type, arch: str) -> Dict[str, torch.Size]:
    with torch.device('meta'):
        model = cls(arch=arch)
    return {k: v.shape for k, v in model.state_dict().items()}


_SHAPE_CACHE: Dict[Tuple[type, str], Dict[str, torch.Size]] = {}


def _comparable(key: str) -> bool:
    # size-dependent tables and BN counters say nothing about the arch; heads are not the backbone's
    return not key.endswith(('attention_biases', 'num_batches_tracked')) and not key.startswith(CLASSIFIER_PREFIXES)


def guess_arch(state_dict: StateDict) -> Tuple[str, str, float]:
    """The (family, arch, score) of the registered variant that best fits a converted state
    dict. The score is matching tensors (name and shape) over the tensors of the model and the
    checkpoint together, so a deeper checkpoint does not fit a shallower variant as well as
    its own (EdgeViT-S's weights hold every tensor of EdgeViT-XS)."""
    best = ('unknown', '', 0.0)
    ours = {k: v.shape for k, v in state_dict.items() if _comparable(k)}
    for variant in variants():
        key = (variant.cls, variant.arch)
        if key not in _SHAPE_CACHE:
            _SHAPE_CACHE[key] = _shapes_on_meta(variant.cls, variant.arch)
        shapes = {k: v for k, v in _SHAPE_CACHE[key].items() if _comparable(k)}
        matched = sum(1 for k, v in ours.items() if k in shapes and shapes[k] == v)
        score = matched / max(len(shapes) + len(ours) - matched, 1)
        if score > best[2]:
            best = (variant.family, variant.arch, score)
    return best


def _describe_guess(state_dict: StateDict) -> str:
    family, arch, score = guess_arch(state_dict)
    if not arch or score < 0.2:
        return 'it matches no registered variant. Check the file and the arch'
    return f"it looks like {family}(arch='{arch}') ({score:.0%} of the tensors of both match). Choose that arch"


_BLOCK = re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.')


def _blocks_per_stage(keys) -> Dict[int, Set[int]]:
    found: Dict[int, Set[int]] = {}
    for k in keys:
        m = _BLOCK.match(k)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return found


def _span(indices) -> str:
    return ', '.join(str(i) for i in sorted(indices)) or 'none'


def _in_block_of(key: str, blocks: Dict[int, Set[int]], absent_from: Dict[int, Set[int]]) -> bool:
    """Whether ``key`` is in a block of ``blocks`` that ``absent_from`` lacks altogether."""
    m = _BLOCK.match(key)
    return bool(m) and int(m.group(2)) in blocks.get(int(m.group(1)), set()) - absent_from.get(int(m.group(1)), set())


def describe_structure(model_keys, checkpoint_keys) -> List[str]:
    """What differs in the blocks of each stage: e.g. ``stage 1: blocks 0, 1 in the model,
    0 in the checkpoint (missing: 1)``."""
    model, ckpt = _blocks_per_stage(model_keys), _blocks_per_stage(checkpoint_keys)
    out = []
    for stage in sorted(set(model) | set(ckpt)):
        have, want = ckpt.get(stage, set()), model.get(stage, set())
        if have != want:
            diff = [f'missing: {_span(want - have)}'] if want - have else []
            diff += [f'unexpected: {_span(have - want)}'] if have - want else []
            out.append(f'stage {stage}: blocks {_span(want)} in the model, {_span(have)} in the checkpoint '
                       f'({"; ".join(diff)})')
    return out


def _partial_hint(source: str) -> str:
    return (f"To load only what matches (the rest keeps its initialisation), ask for it: "
            f"init_cfg=dict(type='Pretrained', checkpoint={source!r}, partial=True)")


def load_state_dict_checked(model: nn.Module, state_dict: StateDict, source: str = 'checkpoint',
                            partial: bool = False) -> Dict[str, List[str]]:
    """Load an (unconverted) backbone state dict into ``model`` with checks.

    Converts the layout, drops classifier parts, adapts size-dependent tables, then raises a
    ValueError, naming the registered arch the checkpoint fits, when any shape differs, when
    fewer than half of the model's weights are found, or when a weight of the model is missing
    or the checkpoint has blocks or stage weights the model has not (another depth: EdgeViT-XS
    weights in EdgeViT-S). ``partial=True`` accepts missing and unexpected weights (a subset of
    the model's), and the log lists them. Returns ``dict(missing=..., unexpected=..., ignored=...)``.
    """
    converted, layout = convert_state_dict(state_dict)
    check_values(converted, source)
    if layout == DETECTOR:
        raise CheckpointMismatchError(f"{source} is a whole detector/segmentor checkpoint; pass prefix='backbone.' "
                         '(init_cfg=dict(type=\'Pretrained\', checkpoint=..., prefix=\'backbone.\'))')
    ignored = sorted(k for k in converted if k.startswith(CLASSIFIER_PREFIXES))
    converted = {k: v for k, v in converted.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    left_at_init: Set[str] = set()
    if hasattr(model, 'adapt_state_dict'):
        from_classifier = bool(getattr(get_layout(layout), 'classification', False) or ignored)
        adapted = model.adapt_state_dict(converted, from_classifier)
        left_at_init = set(converted) - set(adapted)  # e.g. bias tables of another size, reported by the model
        converted = adapted
    own = model.state_dict()
    check_values(converted, source, own)
    name = f"{type(model).__name__}(arch={getattr(model, 'arch_name', '?')!r})"
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in converted.items() if k in own and own[k].shape != v.shape]
    matched = [k for k, v in converted.items() if k in own and own[k].shape == v.shape]
    weights = [k for k in own if not k.endswith('num_batches_tracked')]
    fraction = sum(1 for k in matched if not k.endswith('num_batches_tracked')) / max(len(weights), 1)
    if mismatched or (fraction < MIN_MATCHED_FRACTION and not (partial and matched)):
        detail = (f'{len(mismatched)} shapes differ, e.g. {mismatched[:3]}' if mismatched
                  else f'only {fraction:.0%} of the model\'s weights are in it')
        raise CheckpointMismatchError(f'{source} (layout: {layout}) does not fit {name}: {detail}; '
                         f'{_describe_guess(converted)}, or check the file.')
    missing = [k for k in weights if k not in converted and k not in left_at_init]
    parts = {k.split('.')[0] for k in own}
    unexpected = sorted(k for k in converted if k not in own)
    foreign = [k for k in unexpected if k.split('.')[0] in parts]  # weights of the model's own parts
    if (missing or foreign) and not partial:
        detail = describe_structure(own, converted)
        whole = _blocks_per_stage(own), _blocks_per_stage(converted)
        other_missing = [k for k in missing if not _in_block_of(k, *whole)]
        if other_missing:
            detail.append(f'{len(other_missing)} {"other " if detail else ""}weights missing, e.g. {other_missing[:3]}')
        other_foreign = [k for k in foreign if not _in_block_of(k, *reversed(whole))]
        if other_foreign:
            detail.append(f'{len(other_foreign)} {"other " if detail else ""}weights the model has no place for, '
                          f'e.g. {other_foreign[:3]}')
        raise CheckpointMismatchError(f'{source} (layout: {layout}) does not fit {name}: {"; ".join(detail)}; '
                         f'{_describe_guess(converted)}. {_partial_hint(source)}')
    model.load_state_dict(converted, strict=False)
    notes = ((ignored, f'ignored classifier keys: {ignored}'), (unexpected, f'ignored unexpected keys: {unexpected}'),
             (missing, f'partial load: {len(missing)} weights not in the checkpoint keep their initialisation: '
                       f'{missing}'))
    msg = [f'loaded {source} (layout: {layout}) into {name}: {len(matched)} tensors']
    print_log('; '.join(msg + [text for present, text in notes if present]), logger='current',
              level=logging.WARNING if missing or unexpected else logging.INFO)
    return dict(missing=missing, unexpected=unexpected, ignored=ignored)


def load_pretrained(model: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                    map_location: str = 'cpu', partial: bool = False) -> Dict[str, List[str]]:
    """``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=..., partial=False)`` for our
    backbones (see :func:`load_state_dict_checked`)."""
    raw = read_checkpoint(checkpoint, map_location=map_location)
    state_dict = extract_state_dict(raw, prefix, source=str(checkpoint))
    if not prefix and detect_layout(state_dict) == DETECTOR:
        print_log(f"{checkpoint}: a whole-model checkpoint; loading its 'backbone.' part", logger='current')
        state_dict = extract_state_dict(state_dict, 'backbone.')
    return load_state_dict_checked(model, state_dict, source=str(checkpoint), partial=partial)


def _groups(keys: List[str], depth: int = 2) -> str:
    counts: Dict[str, int] = {}
    for k in keys:
        group = '.'.join(k.split('.')[:depth])
        counts[group] = counts.get(group, 0) + 1
    return ', '.join(f'{g} ({n})' for g, n in sorted(counts.items()))


def load_model_checkpoint(model: nn.Module, checkpoint: str, partial: bool = False,
                          map_location: str = 'cpu') -> Dict[str, List[str]]:
    """Load a whole-model (detector / segmentor) checkpoint for ``tools/test.py`` and
    ``tools/export.py``: strictly by default.

    Reads through the allow-list, prefers EMA weights, converts official backbone layouts (the
    backbone's load hook), then raises a ValueError naming what differs when a weight of the
    model is missing, the checkpoint has weights the model has not, or shapes differ, so a
    checkpoint of another model is never evaluated or exported with random weights. With
    ``partial=True`` it loads what matches and logs what was not loaded. (On an error the
    model holds a mix: do not use it.) Returns ``dict(missing=..., unexpected=..., mismatched=...)``.
    """
    from mmengine.model import is_model_wrapper
    target = model.module if is_model_wrapper(model) else model
    source = str(checkpoint)
    state_dict = extract_state_dict(read_checkpoint(checkpoint, map_location=map_location), source=source)
    state_dict = _as_mmpretrain_classifier(target, state_dict, source)
    check_values(state_dict, source, target.state_dict())
    found: Dict[str, List[str]] = {}

    def record(module, incompatible) -> None:  # the root's post-hook runs last, with every key
        found['missing'] = [k for k in incompatible.missing_keys if not k.endswith('num_batches_tracked')]
        found['unexpected'] = list(incompatible.unexpected_keys)

    handle = target.register_load_state_dict_post_hook(record)
    mismatched: List[str] = []
    try:
        target.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # torch loads every other tensor, then raises for the shapes that differ
        found_shapes = re.findall(r'size mismatch for ([^:\s]+): .*?torch\.Size\((\[.*?\])\).*?torch\.Size\((\[.*?\])\)',
                                  str(err))
        if not found_shapes:
            raise
        mismatched = [f'{k}: checkpoint {theirs} vs model {ours}' for k, theirs, ours in found_shapes]
    finally:
        handle.remove()
    missing, unexpected = found.get('missing', []), found.get('unexpected', [])
    report = dict(missing=missing, unexpected=unexpected, mismatched=mismatched)
    if not (missing or unexpected or mismatched):
        print_log(f'loaded {source}: all {len(state_dict)} tensors of {type(target).__name__}', logger='current')
        return report
    lines = []
    if missing:
        lines.append(f'{len(missing)} weights of the model are not in it: {_groups(missing)}')
    if unexpected:
        lines.append(f'{len(unexpected)} of its weights are not in the model: {_groups(unexpected)}')
    if mismatched:
        lines.append(f'{len(mismatched)} shapes differ, e.g. {mismatched[:3]}')
    backbone = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
    if backbone and any(k.startswith('backbone.') for k in missing + unexpected + mismatched):
        family, arch, score = guess_arch(convert_state_dict(backbone)[0])
        if arch and score >= 0.2:
            lines.append(f"its backbone looks like {family}(arch='{arch}') ({score:.0%} of the tensors of both "
                         'match): use a config with that backbone')
    elif not backbone and state_dict:
        lines.append("it has no 'backbone.' weights: a backbone or classifier checkpoint belongs in the backbone's "
                     "init_cfg=dict(type='Pretrained', checkpoint=...), not here")
    if not partial:
        raise CheckpointMismatchError(f'{source} does not fit the model ({type(target).__name__}) of this config: '
                         + '; '.join(lines) + '. Pass the config it was trained with, or --partial to load only '
                         'the weights that fit (the rest keeps its initialisation).')
    print_log(f'partial load of {source} into {type(target).__name__}: ' + '; '.join(lines)
              + f'\nnot loaded (keep their initialisation): {missing + [m.split(":")[0] for m in mismatched]}'
              + (f'\nignored: {unexpected}' if unexpected else ''), logger='current', level=logging.WARNING)
    return report


def _as_mmpretrain_classifier(model: nn.Module, state_dict: StateDict, source: str) -> StateDict:
    """A classification checkpoint of another layout (official, timm, EasyCV, ours) in the key
    layout of an mmpretrain classifier built from our backbone (``backbone.*``,
    ``head.norm.*`` ...), when ``model`` is one; anything else unchanged."""
    if not any(k.startswith('head.head.') for k in model.state_dict()):
        return state_dict
    name = detect_layout(state_dict)
    layout = get_layout(name)
    if layout is None or not layout.classification or layout.rules == MMPRETRAIN_RULES:
        return state_dict
    print_log(f'{source}: a classifier checkpoint in the {name} layout, converted to the mmpretrain classifier\'s',
              logger='current')
    return mmpretrain_keys(layout.convert(state_dict))


def convert_checkpoint_file(src: str, dst: str, prefix: str = 'backbone.', backbone_only: bool = False) -> Dict[str, Any]:
    """Convert a checkpoint file to our layout (see ``tools/convert_checkpoint.py``).

    A whole-model checkpoint keeps its other keys and its ``meta``; a backbone or classifier
    checkpoint is written as ``{'state_dict': ...}``. With ``backbone_only``, only the
    backbone's weights are written (of a classifier, an mmpretrain classifier or a whole
    model), as ``{'state_dict': ...}`` in our backbone layout. Returns what was detected.
    """
    raw = read_checkpoint(src)
    state_dict = extract_state_dict(raw, source=str(src))
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
    if backbone_only:
        converted = {k: v for k, v in backbone.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    check_values(converted, str(src))
    out: Dict[str, Any] = {'state_dict': converted}
    if isinstance(raw, dict) and isinstance(raw.get('meta'), dict) and not backbone_only:
        out['meta'] = raw['meta']
    save_torch(out, dst)  # a temporary file renamed into place: a previous dst survives a failed write
    return dict(layout=('whole model, backbone ' if whole_model else '') + layout, family=family, arch=arch,
                match=match, num_tensors=len(converted), backbone_only=backbone_only)
