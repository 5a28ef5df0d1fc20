"""The OpenMMLab backbone contract shared by every family, and the family hooks.

Subclasses build ``self.stem`` (may be ``nn.Identity``) and ``self.stages`` (a ``ModuleList``
whose stage ``i`` outputs stride ``4 * 2**i``), then call :meth:`_finish_init`. This class
provides ``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``, input checks and
checked checkpoint loading, so each family only describes its architecture. Where generic
code needs family-specific work it calls a hook that a family may override:
:meth:`~MultiScaleBackbone.size_kwargs` (arguments that depend on the input size),
:meth:`~MultiScaleBackbone.adapt_state_dict` (fitting size-dependent checkpoint tables) and
:meth:`~MultiScaleBackbone.prepare_export` (freezing what depends on the input size).
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from .checks import is_number, is_whole
from .checkpoints.layouts import CLASSIFIER_PREFIXES, convert_state_dict
from .checkpoints.loading import load_pretrained

#: torch.compiler.is_compiling on torch >= 2.3; before it (no such function) torch._utils.is_compiling,
#: which dynamo (behind torch.compile and torch 2.1's torch.export) folds to True while it traces
_IS_COMPILING = (getattr(getattr(torch, 'compiler', None), 'is_compiling', None)
                 or getattr(torch._utils, 'is_compiling', None) or (lambda: False))


def is_exporting() -> bool:
    """True while the forward is being traced (torch.jit.trace, torch.export, dynamo).

    Eval-mode caches must be bypassed then: a cached tensor would be baked into the graph as
    a constant of one input size, or leak fake tensors out of the trace.
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if _IS_COMPILING():
        return True
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None:
        if getattr(compiler, 'is_exporting', lambda: False)():
            return True
    return False


class MultiScaleBackbone(BaseModule):
    """Base class: multi-scale outputs at strides 4, 8, 16, 32 with the OpenMMLab contract.

    Args:
        out_indices: stages whose outputs are returned (negative indices allowed).
        frozen_stages: -1 freezes nothing, 0 freezes the stem, ``k`` freezes the stem and
            stages ``0..k-1`` (parameters frozen and their norms kept in eval mode).
        norm_eval: keep every BatchNorm in eval mode while training (statistics frozen).
        with_cp: gradient checkpointing per block (saves memory, costs one more forward).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, prefix=None)`` loads weights in
            any supported layout, refusing a checkpoint of another arch (``partial=True``
            accepts a subset of the weights); other mmengine init configs work as usual.
    """

    #: architecture table of the family: name -> settings; set by subclasses
    arch_settings: Dict[str, Dict[str, Any]] = {}
    #: the stride of each stage's output
    strides: Tuple[int, ...] = (4, 8, 16, 32)
    #: the registered type name, also used in messages ("EdgeViT", "EfficientFormerV2")
    family: str = ''
    #: prefix of the variant and config names ("edgevit" -> edgevit_xxs, retinanet_edgevit-xxs_...)
    model_prefix: str = ''
    #: the paper and its published figures (a :class:`backbones.registry.Paper`)
    paper = None
    #: whether the family's ImageNet classifier has a distillation head
    classifier_distillation: bool = False
    #: timm's model of the same architecture and parameter names, ``{arch}`` filled in (or None)
    timm_model: Optional[str] = None

    def __init__(self,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 in_channels: int = 3,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=copy.deepcopy(init_cfg))
        if in_channels != 3:
            # the stems are defined for RGB only; a pretrained stem would not fit anyway
            raise ValueError(f'{type(self).__name__} takes 3-channel images; got in_channels={in_channels}')
        self.in_channels = in_channels
        self._raw_out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

    # ------------------------------------------------------------------ construction
    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> Dict[str, Any]:
        """Validate ``arch`` (a name from :attr:`arch_settings` or a dict of settings)."""
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_settings:
                raise ValueError(f'{cls.family}: unknown arch {arch!r}; choose one of '
                                 f'{sorted(cls.arch_settings)} or pass a dict of settings')
            return copy.deepcopy(cls.arch_settings[key])
        if isinstance(arch, dict):
            required = cls.arch_settings[next(iter(cls.arch_settings))].keys()
            missing = [k for k in required if k not in arch]
            if missing:
                raise ValueError(f'{cls.family}: a custom arch dict needs the keys {sorted(required)}; '
                                 f'missing {missing}')
            depths = arch['depths']
            for key, value in arch.items():
                if isinstance(value, (list, tuple)) and key != 'depths' and len(value) != len(depths) \
                        and key in ('widths', 'sr_ratios', 'mlp_ratios'):
                    raise ValueError(f'{cls.family}: arch[{key!r}] has {len(value)} entries but '
                                     f'depths has {len(depths)}; give one per stage')
            return copy.deepcopy(dict(arch))
        raise TypeError(f'{cls.family}: arch must be a str or dict, got {type(arch).__name__}')

    def _finish_init(self) -> None:
        """Validate indices once the stages exist and apply freezing."""
        num_stages = len(self.stages)
        self.num_stages = num_stages
        indices = self._raw_out_indices
        name = type(self).__name__
        if isinstance(indices, int):
            indices = [indices]
        indices = tuple(indices)
        if not indices:
            raise ValueError(f'{name}: out_indices is empty, so the backbone would return nothing; give the '
                             f'stages to return, e.g. out_indices={tuple(range(num_stages))}')
        out = []
        for i in indices:
            if not is_whole(i):
                raise ValueError(f'{name}: out_indices must be stage numbers (ints), got {indices}')
            j = i + num_stages if i < 0 else i
            if not 0 <= j < num_stages:
                raise ValueError(f'{type(self).__name__}: out_indices {tuple(self._raw_out_indices)} '
                                 f'out of range for {num_stages} stages')
            out.append(j)
        if len(set(out)) != len(out):
            raise ValueError(f'{type(self).__name__}: out_indices has duplicates: {tuple(out)}')
        if list(out) != sorted(out):
            # the features come shallow to deep, as mmdet / mmseg necks expect
            raise ValueError(f'{name}: out_indices {indices} are not in ascending order; the outputs and '
                             f'out_channels come from shallow to deep, as the necks expect. Write '
                             f'out_indices={tuple(sorted(out))}')
        self.out_indices = tuple(out)
        frozen = self.frozen_stages
        if not is_whole(frozen) or not -1 <= frozen <= num_stages:
            raise ValueError(f'{name}: frozen_stages must be an integer in [-1, {num_stages}] (-1 freezes '
                             f'nothing, k freezes the stem and the first k stages), got {frozen!r}')
        self.frozen_stages = int(frozen)
        self._freeze_stages()

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of the returned features, in order (for the neck's ``in_channels``)."""
        return tuple(self.stage_channels[i] for i in self.out_indices)

    # ------------------------------------------------------------------ training modes
    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.stem] + [self.stages[i] for i in range(self.frozen_stages)]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'MultiScaleBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ forward
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the problem for inputs the network cannot take."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'{type(self).__name__} expects a tensor, got {type(x).__name__}')
        if x.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects a 4-D tensor (N, {self.in_channels}, H, W); '
                             f'got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects {self.in_channels} input channels (N, '
                             f'{self.in_channels}, H, W); got shape {tuple(x.shape)}')
        min_size = self.strides[self.num_stages - 1]
        if x.shape[2] < min_size or x.shape[3] < min_size:
            raise ValueError(f'{type(self).__name__} needs images of at least {min_size}x{min_size} '
                             f'(one stride-{min_size} cell); got {x.shape[2]}x{x.shape[3]}. '
                             'Resize or pad the input.')

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and self.training and torch.is_grad_enabled():
            x = stage.downsample(x)
            for block in stage.blocks:
                x = cp.checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        x = self.stem(x)
        outs = []
        last = max(self.out_indices)
        for i, stage in enumerate(self.stages):
            x = self._run_stage(stage, x)
            if i in self.out_indices:
                outs.append(x.contiguous())
            if i == last:
                break
        return tuple(outs)

    # ------------------------------------------------------------------ family hooks
    @classmethod
    def size_kwargs(cls, size: Tuple[int, int]) -> Dict[str, Any]:
        """Constructor arguments that depend on the input size ``(H, W)`` the model will see
        (e.g. the base resolution of attention-bias tables). Default: none."""
        return {}

    def prepare_export(self, size: Tuple[int, int]) -> None:
        """Make whatever depends on the input size constant for an export at ``size``
        (called on an eval-mode copy). Default: nothing to do."""

    # ------------------------------------------------------------------ checkpoints
    def adapt_state_dict(self, state_dict: Dict[str, torch.Tensor],
                         from_classifier: bool) -> Dict[str, torch.Tensor]:
        """Fit size-dependent entries (e.g. attention-bias tables) of a converted state dict to
        this model; ``from_classifier`` tells an ImageNet checkpoint. Default: unchanged."""
        return state_dict

    def init_weights(self) -> None:
        init_cfg = self.init_cfg
        pretrained = isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'
        if pretrained and init_cfg.get('checkpoint'):
            load_pretrained(self, init_cfg['checkpoint'], prefix=init_cfg.get('prefix'),
                            map_location=init_cfg.get('map_location', 'cpu'), partial=init_cfg.get('partial', False))
            self._is_init = True
            return
        if (init_cfg is None or pretrained) and not getattr(self, '_is_init', False):
            print_log(f'{type(self).__name__}: no pretrained checkpoint in init_cfg; weights keep their '
                      'random initialisation (training starts from scratch)', logger='current',
                      level=logging.WARNING)
        if pretrained:  # Pretrained without a checkpoint (the configs' default): nothing to load
            self.init_cfg = None
        super().init_weights()

    def _register_converting_hook(self) -> None:
        # A whole-model load (mmengine `load_from`, `--resume`, `load_state_dict` on a detector)
        # reaches the backbone with its own prefix; convert official key layouts there too.
        self._register_load_state_dict_pre_hook(self._convert_on_load, with_module=False)

    def _convert_on_load(self, state_dict, prefix, local_metadata, strict, missing_keys,
                         unexpected_keys, error_msgs) -> None:
        keys = [k for k in state_dict if k.startswith(prefix)]
        if not keys:
            return
        sub = {k[len(prefix):]: state_dict[k] for k in keys}
        converted, _ = convert_state_dict(sub, family=self.family)
        if converted.keys() == sub.keys():
            return
        for k in keys:
            del state_dict[k]
        for k, v in converted.items():
            if k.startswith(CLASSIFIER_PREFIXES):
                continue  # classifier parts a backbone does not have
            state_dict[prefix + k] = v


def stage_drop_path_rates(depths: Sequence[int], rate: float, denominator: Optional[int] = None) -> List[List[float]]:
    """Stochastic depth rising linearly over all blocks, split per stage.

    ``denominator`` defaults to ``sum(depths) - 1`` (``torch.linspace(0, rate, n)``).
    """
    if not is_number(rate) or not 0 <= rate < 1:
        raise ValueError(f'drop_path_rate must be a number in [0, 1) (the chance that the last block is '
                         f'skipped while training; 0 turns stochastic depth off, 0.1-0.3 is usual), got {rate!r}')
    total = sum(depths)
    denom = denominator if denominator is not None else max(total - 1, 1)
    rates = [rate * i / denom for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out
