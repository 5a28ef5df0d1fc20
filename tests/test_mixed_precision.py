"""The attention blocks and whole backbones under mixed precision, against their float32
results: bfloat16 autocast on CPU (what runs everywhere), float16 where this torch has CPU
kernels for it, and the size of the attention logits against float16's range (what CUDA
autocast computes them in)."""
from unittest import mock

import numpy as np
import pytest
import torch

from backbones import EdgeViT, EfficientFormerV2
from backbones.demo.dataset import render_scene
from backbones.edgevit import GlobalAttention, SparseAttention
from backbones.efficientformer_v2 import Attention2d, Attention2dDownsample
from backbones.export.targets import IMAGENET_MEAN, IMAGENET_STD

from .conftest import rel_err
from .test_prepare import _randomise_tables

#: bfloat16 keeps 8 bits of mantissa (a relative step of 2**-8 = 0.4%); through a block or a
#: whole backbone the rounding of every product adds up to about 1-2% of the largest output
BF16_TOL = 5e-2
#: float16 keeps 11 bits (2**-11 = 0.05%)
FP16_TOL = 1e-2
#: float16's largest finite value
FP16_MAX = torch.finfo(torch.float16).max

BLOCKS = {
    'SparseAttention-sr2': (lambda: SparseAttention(64, 2, qkv_bias=True, sr_ratio=2), (2, 64, 14, 14)),
    'SparseAttention-sr1': (lambda: SparseAttention(64, 2, qkv_bias=True, sr_ratio=1), (2, 64, 7, 7)),
    'GlobalAttention': (lambda: GlobalAttention(64, 2, mlp_ratio=4., qkv_bias=True, sr_ratio=2, drop=0.,
                                                attn_drop=0., drop_path=0.), (2, 64, 14, 14)),
    'Attention2d-table': (lambda: Attention2d(64, 7, 'table', key_dim=16, num_heads=4), (2, 64, 9, 11)),
    'Attention2d-official': (lambda: Attention2d(64, 7, 'official', key_dim=16, num_heads=4), (2, 64, 7, 7)),
    'Attention2d-stride2': (lambda: Attention2d(64, 14, 'table', key_dim=16, num_heads=4, stride=2),
                            (2, 64, 14, 14)),
    'Attention2dDownsample': (lambda: Attention2dDownsample(64, 96, 14, 'table', key_dim=16, num_heads=4),
                              (2, 64, 14, 18)),
}
BACKBONES = {'edgevit_xxs': lambda: EdgeViT('xxs'), 'efficientformerv2_s0': lambda: EfficientFormerV2('s0')}


def _scene(height=160, width=192, batch=1):
    """Rendered scenes of the built-in dataset, normalised as the configs' data preprocessors
    do (ImageNet mean and std): inputs with the statistics of real images."""
    rng = np.random.default_rng(0)
    images = np.stack([render_scene(rng, height, width)[0] for _ in range(batch)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _outputs(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _check_close(ours, fp32, tol, label):
    for i, (a, b) in enumerate(zip(_outputs(ours), _outputs(fp32))):
        assert torch.isfinite(a).all(), (label, i)
        assert a.shape == b.shape
        assert rel_err(a.float(), b) < tol, (label, i, rel_err(a.float(), b))


@pytest.mark.parametrize('name', list(BLOCKS))
def test_attention_blocks_under_bfloat16_autocast(name):
    build, shape = BLOCKS[name]
    block = _randomise_tables(build())
    x = torch.randn(shape)
    with torch.no_grad():
        fp32 = block(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            mixed = block(x)
    _check_close(mixed, fp32, BF16_TOL, name)
    # training: the forward in train mode and its gradients, as AMP runs them
    block.train()
    grads = []
    for autocast in (False, True):
        block.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = block(x)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in block.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    largest = max(float(g.abs().max()) for g in grads[0].values())
    for n, g in grads[0].items():
        assert torch.isfinite(grads[1][n]).all(), (name, n)
        # a gradient that is zero but for rounding (a conv bias before a training-mode
        # BatchNorm, a bias added to a whole softmax row) has no relative error to check
        if float(g.abs().max()) > 1e-6 * largest:
            assert rel_err(grads[1][n], g) < BF16_TOL, (name, n, rel_err(grads[1][n], g))


@pytest.mark.parametrize('name', list(BACKBONES))
def test_backbones_under_bfloat16_autocast(name):
    model = _randomise_tables(BACKBONES[name]())
    x = _scene(batch=2)
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            mixed = model(x)
    assert len(mixed) == 4
    _check_close(mixed, fp32, BF16_TOL, name)


def _cpu_float16_problem():
    """Why this torch cannot run the backbones in float16 on CPU, or None."""
    try:
        torch.nn.functional.conv2d(torch.ones(1, 2, 3, 3, dtype=torch.float16),
                                   torch.ones(2, 1, 3, 3, dtype=torch.float16), groups=2)
        with torch.autocast('cpu', dtype=torch.float16):
            pass
    except RuntimeError as err:
        return (f'torch {torch.__version__} has no float16 convolution or autocast on CPU ({str(err)[:60]}...); '
                'the bfloat16 checks and the logit magnitudes still run')
    return None


@pytest.mark.parametrize('name', list(BACKBONES))
def test_backbones_in_float16(name):
    problem = _cpu_float16_problem()
    if problem:
        pytest.skip(problem)
    model = _randomise_tables(BACKBONES[name]())
    x = _scene()
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast('cpu', dtype=torch.float16):
            _check_close(model(x), fp32, FP16_TOL, f'{name} under float16 autocast')
        _check_close(model.half()(x.half()), fp32, FP16_TOL, f'{name} in float16')


@pytest.mark.parametrize('name', list(BACKBONES))
def test_attention_logits_stay_far_inside_the_float16_range(name):
    """Every batched matmul of the attentions (the query-key logits before their scale, the
    talking heads, the weighted values) on a real image's statistics, with layer scales,
    norm statistics and attention biases of trained size: far below float16's largest value,
    which CUDA autocast computes them in. (A product past it is inf, and its softmax NaN.)"""
    model = _randomise_tables(BACKBONES[name]())
    largest = []
    bmm = torch.bmm

    def recording_bmm(a, b):
        out = bmm(a, b)
        largest.append(float(out.abs().max()))
        return out

    with torch.no_grad(), mock.patch('torch.bmm', recording_bmm):
        model(_scene(224, 320))
    assert largest, 'no attention ran'
    assert max(largest) < FP16_MAX / 16, max(largest)  # 16 times headroom
