"""Checkpoint layouts as data, and the one dispatcher that detects and converts them.

A :class:`Layout` is one record: which family it belongs to, how to recognise a state dict
in it, and how its keys map to ours (flat regular-expression rules). Each family declares
its layouts in its own file of this folder (``checkpoints/edgevit.py``, ...), and
:func:`register_layout` adds them here. This module imports no family: adding a layout is
one entry in the family's file.

Conversion is pure and idempotent: a converted dict is detected as the family's own layout,
whose rules change nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

StateDict = Dict[str, torch.Tensor]
Replacement = Union[str, Callable[[re.Match], str]]


@dataclass(frozen=True)
class Layout:
    """One checkpoint layout of one family.

    Args:
        name: the name reported by :func:`detect_layout` (e.g. ``'edgevit-official'``).
        family: the family's registered type name.
        matches: whether a (backbone or classifier) state dict is in this layout.
        rules: ``(pattern, replacement)`` pairs applied to every key in order, each at most
            once (``re.sub(..., count=1)``); a replacement is a string or a function of the match.
        drop: patterns (``re.search`` on the original key) of entries to leave out, e.g.
            index buffers that are derived from the input size.
        values: ``(pattern, function)`` pairs applied to the value of every converted key
            that the pattern finds (e.g. reshaping layer scales).
        classification: the layout is an ImageNet classifier's (its heads are dropped when a
            backbone loads it, and size-dependent tables were made for 224).
        priority: layouts are tried from the highest priority down.
    """
    name: str
    family: str
    matches: Callable[[StateDict], bool]
    rules: Tuple[Tuple[str, Replacement], ...] = ()
    drop: Tuple[str, ...] = ()
    values: Tuple[Tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...] = ()
    classification: bool = False
    priority: int = 0

    def convert_key(self, key: str) -> Optional[str]:
        """Our name for ``key``, or None for an entry this layout leaves out."""
        if any(re.search(pattern, key) for pattern in self.drop):
            return None
        for pattern, replacement in self.rules:
            key = re.sub(pattern, replacement, key, count=1)
        return key

    def convert(self, state_dict: StateDict) -> StateDict:
        out: StateDict = {}
        for key, value in state_dict.items():
            new = self.convert_key(key)
            if new is None:
                continue
            for pattern, fn in self.values:
                if re.search(pattern, new):
                    value = fn(value)
            out[new] = value
        return out


#: the key prefixes of a classifier's parts that a backbone does not have: the final norm and
#: the heads (the distillation head of EfficientFormerV2 included), in our classifier layout
CLASSIFIER_PREFIXES = ('norm.', 'head.', 'head_dist.')

#: an mmpretrain ``ImageClassifier`` built from a family's backbone and
#: :class:`backbones.pretrain` 's head: ``backbone.*`` and ``head.norm.* / head.head.* /
#: head.head_dist.*``; these rules give our classifier layout (each family registers its layout
#: with them)
MMPRETRAIN_RULES = ((r'^backbone\.', ''), (r'^head\.(norm|head|head_dist)\.', r'\1.'))


def mmpretrain_keys(state_dict: 'StateDict') -> 'StateDict':
    """Our classifier layout (``norm.``, ``head.``, ``head_dist.``, the backbone's keys) in the
    key layout of the mmpretrain classifier: the inverse of :data:`MMPRETRAIN_RULES`."""
    return {('head.' if k.startswith(CLASSIFIER_PREFIXES) else 'backbone.') + k: v for k, v in state_dict.items()}


#: every registered layout, by name
LAYOUTS: Dict[str, Layout] = {}
#: whole detector / segmentor state dicts (a ``backbone.`` part), and anything else
DETECTOR, UNKNOWN = 'detector', 'unknown'


def register_layout(layout: Layout) -> Layout:
    if layout.name in (DETECTOR, UNKNOWN):
        raise ValueError(f'{layout.name!r} is reserved')
    LAYOUTS[layout.name] = layout
    return layout


def layouts(family: Optional[str] = None) -> List[Layout]:
    """Registered layouts from the highest priority down (of one family when given)."""
    found = [lay for lay in LAYOUTS.values() if family is None or lay.family == family]
    return sorted(found, key=lambda lay: -lay.priority)


def get_layout(name: str) -> Optional[Layout]:
    return LAYOUTS.get(name)


def detect_layout(state_dict: StateDict) -> str:
    """The name of the layout of a state dict: a registered layout's, ``'detector'`` for a
    whole-model dict with a ``backbone.`` part, or ``'unknown'``."""
    for layout in layouts():
        if layout.matches(state_dict):
            return layout.name
    if any(k.startswith('backbone.') for k in state_dict):
        return DETECTOR
    return UNKNOWN


def convert_state_dict(state_dict: StateDict, family: Optional[str] = None) -> Tuple[StateDict, str]:
    """Any registered layout -> ours. Returns the converted dict and the detected layout.

    With ``family``, a dict in another family's layout is returned unchanged (the caller's
    strict load then reports it).
    """
    name = detect_layout(state_dict)
    layout = LAYOUTS.get(name)
    if layout is None or (family is not None and layout.family != family):
        return dict(state_dict), name
    return layout.convert(state_dict), name


def convert_full_checkpoint(state_dict: StateDict, prefix: str = 'backbone.') -> StateDict:
    """Convert the backbone part of a whole detector/segmentor state dict; the rest is kept."""
    backbone = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not backbone:
        return convert_state_dict(state_dict)[0]
    converted, _ = convert_state_dict(backbone)
    out = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    out.update({prefix + k: v for k, v in converted.items()})
    return out


def stage_rule(pattern: str, template: str, offset: int = -1) -> Tuple[str, Replacement]:
    """A rule whose first group is a 1-based stage number: ``template`` gets it as ``{stage}``
    shifted by ``offset`` and the other groups as ``{1}``, ``{2}`` ... (e.g. official
    ``blocks3.1.`` -> ``stages.2.blocks.1.``)."""
    def replace(m: re.Match) -> str:
        return template.format(*m.groups(), stage=int(m.group(1)) + offset)
    return pattern, replace
