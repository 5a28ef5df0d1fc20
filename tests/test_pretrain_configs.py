"""The ImageNet-1K pretraining configs: one per registered variant, named by convention; each
builds in mmpretrain's scope with the papers' parameter count, and follows the official recipe
of its family setting for setting, as tests/data/recipes.md records it (official value and
source). Every row of that table has a check here, and every check a row."""
import functools
import glob
import math
import os.path as osp
import re
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn as nn

pytest.importorskip('mmpretrain')
from backbones.registry import FAMILIES, get_variant, variants  # noqa: E402
from backbones.runtime.models import build_model_from_config, load_config  # noqa: E402

from .conftest import ROOT  # noqa: E402

CLASSIFICATION = ROOT / 'configs' / 'classification'
CONFIGS = sorted(glob.glob(str(CLASSIFICATION / '*.py')))
RECIPES = ROOT / 'tests' / 'data' / 'recipes.md'
NAME = re.compile(r'^(?P<prefix>[a-z0-9]+)-(?P<arch>[a-z0-9]+)_(?P<gpus>\d+)xb(?P<batch>\d+)-(?P<epochs>\d+)e_in1k\.py$')

#: the settings every family's table states (the task's list), and those that depend on others
REQUIRED = ('GPUs', 'batch per GPU', 'epochs', 'input size', 'optimizer', 'base lr', 'lr scaling batch', 'eps',
            'betas', 'weight decay', 'no weight decay', 'schedule', 'warmup epochs', 'warmup lr', 'min lr',
            'RandAugment', 'random erasing prob', 'mixup alpha', 'cutmix alpha', 'label smoothing',
            'repeated augmentation', 'eval resize', 'eval crop', 'eval interpolation', 'drop path', 'EMA decay',
            'clip mode', 'distillation type', 'SyncBN', 'AMP')
REQUIRED_IF = {('clip mode', 'agc'): ('clip value', 'AGC eps'),
               ('distillation type', 'hard'): ('distillation alpha', 'teacher'),
               ('distillation type', 'soft'): ('distillation alpha', 'distillation tau', 'teacher')}


def read_recipes(path=RECIPES) -> Dict[str, Dict[str, Tuple[str, str]]]:
    """{family: {setting: (official value, source)}} from the Markdown tables, one section per family."""
    out: Dict[str, Dict[str, Tuple[str, str]]] = {}
    family = None
    for line in path.read_text().splitlines():
        if line.startswith('## '):
            family = line[3:].strip()
            out[family] = {}
        elif family and line.startswith('|'):
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if len(cells) != 3 or cells[0] == 'setting' or set(cells[0]) <= set('-: '):
                continue
            assert cells[0] not in out[family], f'{family}: {cells[0]} twice'
            out[family][cells[0]] = (cells[1], cells[2])
    return out


def _nums(value: str) -> List[float]:
    return [float(v) for v in value.split(',')]


def _num(value: str) -> float:
    [v] = _nums(value)
    return v


def _yes(value: str) -> bool:
    assert value in ('yes', 'no'), value
    return value == 'yes'


def _plain(d) -> dict:
    """A config dict without the ``_scope_`` mmengine adds to what comes from another package's base."""
    return {k: v for k, v in dict(d).items() if k != '_scope_'}


def _transform(pipeline, name):
    found = [t for t in pipeline if t['type'] == name]
    assert len(found) == 1, f'{name}: {len(found)} in {[t["type"] for t in pipeline]}'
    return found[0]


class Ctx:
    """What a check sees: the config, its built model, its variant, its family's recipe rows."""

    def __init__(self, config: str, cfg, model, recipe):
        self.config, self.cfg, self.model, self.recipe = config, cfg, model, recipe
        self.name = NAME.match(osp.basename(config)).groupdict()

    def row(self, setting: str) -> str:
        return self.recipe[setting][0]

    @property
    def total_batch(self) -> int:
        return int(_num(self.row('GPUs'))) * int(_num(self.row('batch per GPU')))

    @property
    def train(self):
        return self.cfg.train_dataloader.dataset.pipeline

    @property
    def tests(self):
        return [self.cfg.val_dataloader.dataset.pipeline, self.cfg.test_dataloader.dataset.pipeline]

    @property
    def scheduler(self):
        [sched] = self.cfg.param_scheduler
        return sched

    @property
    def ema(self):
        [hook] = [h for h in self.cfg.custom_hooks if h['type'] == 'EMAHook']
        return hook

    @property
    def augments(self):
        return self.cfg.model.train_cfg.augments


def _check_drop_path(ctx: Ctx, value: str) -> None:
    pairs = dict(item.split() for item in value.split(',')) if ' ' in value.strip() else None
    arch = ctx.name['arch']
    rate = float(pairs[arch]) if pairs else float(value)
    probs = [m.drop_prob for m in ctx.model.backbone.modules() if type(m).__name__ == 'DropPath']
    if rate == 0:
        assert not probs, probs
    else:  # rising linearly from 0 to the rate at the last block
        assert math.isclose(max(probs), rate, rel_tol=1e-9), (max(probs), rate)


def _check_randaugment(ctx: Ctx, value: str) -> None:
    parts = value.split('-')
    assert parts[0] == 'rand', value
    opts = {re.match(r'[a-z]+', p).group(0): p[len(re.match(r'[a-z]+', p).group(0)):] for p in parts[1:]}
    t = _transform(ctx.train, 'RandAugment')
    assert t['policies'] == ('timm_increasing' if opts.get('inc') == '1' else 'timm'), t['policies']
    assert t['num_policies'] == int(opts.get('n', 2)) and t['total_level'] == 10
    assert t['magnitude_level'] == float(opts['m']) and t['magnitude_std'] == float(opts['mstd'])
    mean = ctx.cfg.data_preprocessor.mean
    assert _plain(t['hparams']) == dict(pad_val=[round(x) for x in mean[::-1]], interpolation='bicubic')  # BGR images


def _check_erasing_mode(ctx: Ctx, value: str) -> None:
    t = _transform(ctx.train, 'RandomErasing')
    assert value == 'pixel'
    # per-pixel normal noise with the dataset's mean / std in pixels = timm's N(0, 1) after normalising
    pre = ctx.cfg.data_preprocessor
    assert t['mode'] == 'rand' and list(t['fill_color']) == pre.mean[::-1] and list(t['fill_std']) == pre.std[::-1]
    assert t['min_area_ratio'] == 0.02 and math.isclose(t['max_area_ratio'], 1 / 3)
    assert tuple(t.get('aspect_range', (3 / 10, 10 / 3))) == pytest.approx((3 / 10, 10 / 3))


def _check_eval(ctx: Ctx, key: str, value: str) -> None:
    for pipeline in ctx.tests:
        resize, crop = _transform(pipeline, 'ResizeEdge'), _transform(pipeline, 'CenterCrop')
        assert resize['edge'] == 'short' and resize['backend'] == 'pillow'
        got = dict(resize=resize['scale'], crop=crop['crop_size'], interpolation=resize['interpolation'])[key]
        assert str(got) == value if key == 'interpolation' else got == int(value), (key, got, value)


def _check_lr(ctx: Ctx, value: str) -> None:
    # the official linear rule at the recipe's total batch
    expected = _num(ctx.row('base lr')) * ctx.total_batch / _num(ctx.row('lr scaling batch'))
    assert math.isclose(ctx.cfg.optim_wrapper.optimizer.lr, expected, rel_tol=1e-12), expected


def _check_lr_scaling(ctx: Ctx, value: str) -> None:
    _check_lr(ctx, value)
    # --auto-scale-lr multiplies the lr by real / base_batch_size: the official rule at any batch
    assert _plain(ctx.cfg.auto_scale_lr) == dict(enable=False, base_batch_size=ctx.total_batch)


def _check_clip_mode(ctx: Ctx, value: str) -> None:
    wrapper = ctx.cfg.optim_wrapper
    kind = wrapper.get('type', 'OptimWrapper')
    if value == 'none':
        assert kind in ('OptimWrapper', 'AmpOptimWrapper') and not wrapper.get('clip_grad'), wrapper
    else:
        assert value == 'agc' and kind in ('AGCOptimWrapper', 'AmpAGCOptimWrapper')
        assert wrapper.clip_grad.type == 'agc'


def _check_distillation_type(ctx: Ctx, value: str) -> None:
    if value == 'none':
        assert ctx.cfg.model.type == 'ImageClassifier' and 'distillation' not in ctx.cfg.model
    else:
        assert ctx.cfg.model.type == 'DistillingClassifier' and ctx.model.distillation['type'] == value


def _check_head(ctx: Ctx, value: str) -> None:
    assert value == 'BatchNorm, mean pool, Linear'
    head = ctx.model.head
    assert type(head).__name__ == 'EdgeformersClsHead' and ctx.cfg.model.neck is None
    assert isinstance(head.norm, nn.BatchNorm2d) and isinstance(head.head, nn.Linear)
    assert head.head.out_features == 1000 and ctx.model.backbone.out_indices == (ctx.model.backbone.num_stages - 1, )


def _check_teacher(ctx: Ctx, value: str) -> None:
    assert _plain(ctx.cfg.model.teacher) == dict(name=value, checkpoint=None)  # the path is the user's to give


def _check_layer_scale(ctx: Ctx, value: str) -> None:
    scales = [p for n, p in ctx.model.backbone.named_parameters() if n.endswith('gamma')]
    assert scales and all(float(p.min()) == float(p.max()) == pytest.approx(_num(value)) for p in map(torch.Tensor.detach, scales))


#: setting -> check(ctx, official value): False, or an AssertionError, when the config does not
#: express the official value
CHECKS = {
    'GPUs': lambda c, v: int(c.name['gpus']) == int(v),
    'batch per GPU': lambda c, v: (c.cfg.train_dataloader.batch_size == int(c.name['batch']) == int(v)
                                  ),
    'epochs': lambda c, v: c.cfg.train_cfg.max_epochs == int(c.name['epochs']) == int(v),
    'input size': lambda c, v: _transform(c.train, 'RandomResizedCrop')['scale'] == int(v),
    'optimizer': lambda c, v: c.cfg.optim_wrapper.optimizer.type == v,
    'base lr': _check_lr,
    'lr scaling batch': _check_lr_scaling,
    'eps': lambda c, v: c.cfg.optim_wrapper.optimizer.eps == _num(v),
    'betas': lambda c, v: tuple(c.cfg.optim_wrapper.optimizer.betas) == tuple(_nums(v)),
    'weight decay': lambda c, v: c.cfg.optim_wrapper.optimizer.weight_decay == _num(v),
    # the split this gives, on the official shapes: tests/test_pretrain_optim.py
    'no weight decay': lambda c, v: (v == 'ndim <= 1 or .bias' and _plain(c.cfg.optim_wrapper.paramwise_cfg) == dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0)),
    'schedule': lambda c, v: (v == 'cosine per epoch' and c.scheduler.type == 'TimmCosineLR' and c.scheduler.by_epoch
                              and c.scheduler.get('t_initial') in (None, c.cfg.train_cfg.max_epochs)),
    'warmup epochs': lambda c, v: c.scheduler.warmup_t == int(v),
    'warmup lr': lambda c, v: c.scheduler.warmup_lr_init == _num(v),
    'min lr': lambda c, v: c.scheduler.lr_min == _num(v),
    'clip mode': _check_clip_mode,
    'clip value': lambda c, v: c.cfg.optim_wrapper.clip_grad.clip_factor == _num(v),
    'AGC eps': lambda c, v: c.cfg.optim_wrapper.clip_grad.eps == _num(v),
    'train interpolation': lambda c, v: (_transform(c.train, 'RandomResizedCrop')['interpolation'] == v
                                         and _transform(c.train, 'RandomResizedCrop')['backend'] == 'pillow'
                                         and _transform(c.train, 'RandAugment')['hparams']['interpolation'] == v
                                         ),
    'random resized crop scale': lambda c, v: (tuple(_transform(c.train, 'RandomResizedCrop').get(
        'crop_ratio_range', (0.08, 1.0))) == tuple(_nums(v)) and tuple(_transform(c.train, 'RandomResizedCrop').get(
            'aspect_ratio_range', (3 / 4, 4 / 3))) == pytest.approx((3 / 4, 4 / 3))),
    'flip prob': lambda c, v: (_transform(c.train, 'RandomFlip')['prob'] == _num(v)
                               and _transform(c.train, 'RandomFlip')['direction'] == 'horizontal'),
    'RandAugment': _check_randaugment,
    'color jitter': lambda c, v: (v == 'none' and not [t for t in c.train if 'Color' in t['type']]),
    'random erasing prob': lambda c, v: _transform(c.train, 'RandomErasing')['erase_prob'] == _num(v),
    'random erasing mode': _check_erasing_mode,
    'random erasing count': lambda c, v: (int(v) == 1 and _transform(c.train, 'RandomErasing')),
    'mixup alpha': lambda c, v: [a.alpha for a in c.augments if a.type == 'Mixup'] == [_num(v)],
    'cutmix alpha': lambda c, v: [a.alpha for a in c.augments if a.type == 'CutMix'] == [_num(v)],
    # RandomBatchAugment without probs picks one of its augments uniformly for every batch
    'mixup prob': lambda c, v: (_num(v) == 1.0 and c.cfg.model.train_cfg.get('probs') is None),
    'mixup switch prob': lambda c, v: (len(c.augments) == 2 and c.cfg.model.train_cfg.get('probs') is None
                                       and _num(v) == 1 / len(c.augments)),
    'mixup mode': lambda c, v: (v == 'batch' and {a.type for a in c.augments} == {'Mixup', 'CutMix'}
                                and all(a.get('cutmix_minmax') is None for a in c.augments)),
    'label smoothing': lambda c, v: (_plain(c.cfg.model.head.loss) == dict(type='LabelSmoothLoss', label_smooth_val=_num(v),
                                                                    mode='original')),
    'repeated augmentation': lambda c, v: (_plain(c.cfg.train_dataloader.sampler) == dict(
        type='RepeatAugSampler', shuffle=True, num_repeats=int(v))),
    'drop last': lambda c, v: c.cfg.train_dataloader.drop_last is _yes(v),
    'eval resize': lambda c, v: _check_eval(c, 'resize', v),
    'eval crop': lambda c, v: _check_eval(c, 'crop', v),
    'eval interpolation': lambda c, v: _check_eval(c, 'interpolation', v),
    'normalization mean': lambda c, v: (c.cfg.data_preprocessor.mean == pytest.approx([x * 255 for x in _nums(v)])
                                        and c.cfg.data_preprocessor.to_rgb),
    'normalization std': lambda c, v: c.cfg.data_preprocessor.std == pytest.approx([x * 255 for x in _nums(v)]),
    'drop path': _check_drop_path,
    'layer scale init': _check_layer_scale,
    'classifier head': _check_head,
    'distillation head': lambda c, v: (c.model.head.head_dist is not None) is _yes(v),
    'distillation type': _check_distillation_type,
    'distillation alpha': lambda c, v: c.cfg.model.distillation.alpha == _num(v),
    'distillation tau': lambda c, v: c.cfg.model.distillation.tau == _num(v),
    'teacher': _check_teacher,
    # mmengine's EMA: ema = (1 - momentum) * ema + momentum * model
    'EMA decay': lambda c, v: math.isclose(c.ema['momentum'], 1 - _num(v), rel_tol=1e-9),
    'EMA buffers': lambda c, v: (v == 'averaged' and c.ema['update_buffers'] is True),
    'evaluated model': lambda c, v: (v == 'raw' and c.ema['evaluate_on_origin'] is True),
    'eval interval': lambda c, v: c.cfg.train_cfg.val_interval == int(v),
    'SyncBN': lambda c, v: (c.cfg.get('sync_bn') == 'torch') is _yes(v),
    'AMP': lambda c, v: c.cfg.optim_wrapper.get('type', 'OptimWrapper').startswith('Amp') is _yes(v),
    'seed': lambda c, v: (v == '0 + rank' and c.cfg.randomness.seed == 0 and c.cfg.randomness.diff_rank_seed is True),
}


@functools.lru_cache(maxsize=None)
def _built(config: str):
    cfg = load_config(config)
    model, scope = build_model_from_config(config)
    return cfg, model, scope


def _family_of(config: str) -> str:
    prefix = NAME.match(osp.basename(config)).group('prefix')
    [family] = [f for f, cls in FAMILIES.items() if cls.model_prefix == prefix]
    return family


def test_one_config_per_registered_variant():
    names = [osp.basename(c) for c in CONFIGS]
    assert all(NAME.match(n) for n in names), names
    assert sorted((NAME.match(n).group('prefix'), NAME.match(n).group('arch')) for n in names) == sorted(
        (v.cls.model_prefix, v.arch) for v in variants())


def test_every_family_has_a_recipe_table_and_every_row_a_check():
    recipes = read_recipes()
    assert set(recipes) >= set(FAMILIES), sorted(set(FAMILIES) - set(recipes))
    for family, rows in recipes.items():
        required = set(REQUIRED)
        for (setting, value), more in REQUIRED_IF.items():
            if rows.get(setting, ('', ''))[0] == value:
                required.update(more)
        assert required <= set(rows), f'{family}: no row for {sorted(required - set(rows))}'
        assert set(rows) <= set(CHECKS), f'{family}: no check for {sorted(set(rows) - set(CHECKS))}'
        assert all(value and source for value, source in rows.values()), family


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_follows_the_official_recipe(config):
    cfg, model, scope = _built(config)
    assert scope == 'mmpretrain' and cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports == dict(imports=['backbones', 'backbones.pretrain'], allow_failed_imports=False)
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert (dataset.type, dataset.data_root, dataset.split) == ('ImageNet', 'data/imagenet',
                                                                    'train' if split == 'train' else 'val')
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert [_plain(e) for e in ([evaluator] if isinstance(evaluator, dict) else evaluator)] == [
            dict(type='Accuracy', topk=(1, 5))]
    ctx = Ctx(config, cfg, model, read_recipes()[_family_of(config)])
    failures = []
    for setting, (value, source) in ctx.recipe.items():
        try:
            if CHECKS[setting](ctx, value) is False:
                failures.append(f'{setting} = {value} ({source}): the config differs')
        except (AssertionError, KeyError, AttributeError) as err:
            failures.append(f'{setting} = {value} ({source}): {type(err).__name__} {err}'.strip())
    assert not failures, '\n'.join(failures)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_builds_with_the_papers_parameter_count(config):
    """ImageNet parameters as the papers count them (EfficientFormerV2's with the distillation
    head); the teacher is no part of the model."""
    _, model, _ = _built(config)
    name = NAME.match(osp.basename(config))
    variant = get_variant(f'{name.group("prefix")}_{name.group("arch")}')
    paper = float(variant.imagenet['params']) * 1e6
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - paper) / paper < 0.03, (params, paper)


def _wrong(value: str) -> str:
    """Another value of the same kind: a swapped word, or the first number changed."""
    swaps = {'yes': 'no', 'no': 'yes', 'none': 'agc', 'agc': 'none', 'hard': 'soft', 'AdamW': 'SGD',
             'bicubic': 'bilinear', 'pixel': 'const', 'batch': 'elem', 'raw': 'ema', 'averaged': 'copied',
             'regnety_160': 'resnet50', '0 + rank': '1 + rank', 'cosine per epoch': 'cosine per iter',
             'ndim <= 1 or .bias': 'ndim == 1', 'BatchNorm, mean pool, Linear': 'LayerNorm, Linear',
             'rand-m9-mstd0.5-inc1': 'rand-m7-mstd0.5-inc1'}
    if value in swaps:
        return swaps[value]
    assert re.search(r'\d', value), f'no wrong value for {value!r}: add one to _wrong'
    # every per-variant value changes (a drop path of `s0 0.0, l 0.1` becomes `s0 1.0, l 1.2`)
    return re.sub(r'(?<![a-z])(\d+\.?\d*(?:e-?\d+)?)', lambda m: repr(float(m.group(1)) * 2 + 1), value)


@pytest.mark.parametrize('config', sorted({_family_of(c): c for c in CONFIGS}.values()),
                         ids=lambda p: osp.basename(p)[:-3])
def test_every_check_rejects_a_wrong_value(config):
    """No check passes whatever the table says: each rejects another value of its setting."""
    cfg, model, _ = _built(config)
    recipe = read_recipes()[_family_of(config)]
    accepted = []
    for setting, (value, source) in recipe.items():
        wrong = dict(recipe, **{setting: (_wrong(value), source)})
        try:
            if CHECKS[setting](Ctx(config, cfg, model, wrong), wrong[setting][0]) is not False:
                accepted.append(f'{setting}: {wrong[setting][0]}')
        except (AssertionError, KeyError, AttributeError, ValueError):
            pass
    assert not accepted, accepted
