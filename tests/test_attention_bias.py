"""EfficientFormerV2 attention biases: the two modes, the eval-time cache, export safety."""
import pytest
import torch

from backbones import EfficientFormerV2
from backbones.efficientformer_v2 import AttentionBias


def _with_random_tables(**kwargs):
    model = EfficientFormerV2('s0', **kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('attention_biases'):
                p.normal_()
            elif name.endswith('gamma'):
                p.fill_(1.0)  # layer scales start at 1e-5, which would hide the attention
    return model.eval()


def _bias_modules(model):
    return [m for m in model.modules() if isinstance(m, AttentionBias)]


def test_modes_agree_at_the_base_size_and_differ_elsewhere():
    official = _with_random_tables(resolution=256, bias_mode='official')
    table = EfficientFormerV2('s0', resolution=256, bias_mode='table').eval()
    table.load_state_dict(official.state_dict())
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        for a, b in zip(official(x), table(x)):
            assert torch.equal(a, b)
        y = torch.randn(1, 3, 192, 320)
        diff = [(a - b).abs().max().item() for a, b in zip(official(y), table(y))]
    assert diff[0] == diff[1] == 0 and min(diff[2:]) > 1e-4


def test_table_mode_keeps_offsets_meaningful():
    """In 'table' mode the bias between query cell (qy, qx) and key cell (ky, kx) is the offset
    table, resized bicubically to the grid, at (|qy - ky|, |qx - kx|): at the base size the
    table itself, at another size the resized table, so a cell's bias to itself is the (0, 0)
    entry everywhere. 'official' mode resizes the gathered matrix instead: its diagonal varies."""
    import torch.nn.functional as F
    bias = AttentionBias(num_heads=2, key_grid=8, q_step=1, mode='table')
    table = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        bias.attention_biases.copy_(table.reshape(2, 64))
    for side in (8, 16):
        resized = table if side == 8 else F.interpolate(table[None], size=(side, side), mode='bicubic',
                                                       align_corners=False)[0]
        b = bias.compute((side, side), (side, side))
        for q, k in [(0, 0), (5, 5), (0, side * side - 1), (3 * side + 1, side + 4), (side * side - 1, 2)]:
            dy, dx = abs(q // side - k // side), abs(q % side - k % side)
            torch.testing.assert_close(b[:, q, k], resized[:, dy, dx])
        torch.testing.assert_close(torch.diagonal(b, dim1=1, dim2=2),
                                   resized[:, 0, 0, None].expand(2, side * side))
    official = AttentionBias(num_heads=2, key_grid=8, q_step=1, mode='official')
    official.load_state_dict(bias.state_dict())
    diag = torch.diagonal(official.compute((12, 12), (12, 12)), dim1=1, dim2=2)
    assert diag.std() > 0.1


@pytest.mark.parametrize('mode', ['official', 'table'])
def test_gradients_reach_the_tables(mode):
    model = EfficientFormerV2('s0', resolution=224, bias_mode=mode).train()
    sum(o.mean() for o in model(torch.randn(2, 3, 96, 160))).backward()
    for m in _bias_modules(model):
        assert m.attention_biases.grad is not None and m.attention_biases.grad.abs().sum() > 0


def test_eval_bias_computed_once_per_size(monkeypatch):
    model = _with_random_tables(resolution=512)
    calls = []
    original = AttentionBias.compute

    def counting(self, q_hw, k_hw):
        calls.append((q_hw, k_hw))
        return original(self, q_hw, k_hw)

    monkeypatch.setattr(AttentionBias, 'compute', counting)
    n = len(_bias_modules(model))
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        first = model(x)
        assert len(calls) == n
        again = model(x)
        assert len(calls) == n  # cached
        model(torch.randn(2, 3, 160, 96))
        assert len(calls) == 2 * n  # a new size
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    model.train()
    assert all(not m._cache for m in _bias_modules(model))
    model(torch.randn(2, 3, 128, 192))
    assert len(calls) == 3 * n  # training computes in the graph


def test_cache_follows_in_place_updates_and_loading():
    model = _with_random_tables(resolution=224)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = model(x)[3]
        for m in _bias_modules(model):
            m.attention_biases.mul_(2)  # e.g. an EMA or optimizer step in eval mode
        after = model(x)[3]
    assert (before - after).abs().max() > 1e-4
    fresh = EfficientFormerV2('s0', resolution=224).eval()
    with torch.no_grad():
        fresh(x)  # fills the cache with the zero tables
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(fresh(x)[3], after)


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning', 'ignore::DeprecationWarning')
def test_torch_export_computes_in_graph_and_leaks_nothing():
    """torch.export, and torch.jit.trace (used by mmengine's FlopAnalyzer / get_flops)."""
    pytest.importorskip('torch.export', reason='torch.export needs torch >= 2.1')
    model = _with_random_tables(resolution=512)
    x = torch.randn(1, 3, 96, 160)
    for m in _bias_modules(model):
        m.clear_cache()
    exported = torch.export.export(model, (x,))
    assert all(not m._cache for m in _bias_modules(model))  # no fake tensors kept
    with torch.no_grad():
        eager = model(x)
    for a, b in zip(exported.module()(x), eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    traced = torch.jit.trace(model, (x,), check_trace=False)
    for a, b in zip(traced(x), eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode', ['official', 'table'])
def test_cache_keeps_the_tables_dtype_under_autocast(mode):
    """A bias cached while autocast runs is the table's own float32, so a float32 forward
    afterwards equals one that never saw autocast; a bfloat16 model gets a bfloat16 bias."""
    model = _with_random_tables(resolution=224, bias_mode=mode)
    twin = _with_random_tables(resolution=224, bias_mode=mode)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 160, 256)  # not the base size: the biases are resized
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            model(x)
        cached = [b for m in _bias_modules(model) for b in m._cache.values()]
        assert cached and all(b.dtype == torch.float32 for b in cached)
        for a, b in zip(model(x), twin(x)):
            assert a.dtype == torch.float32 and torch.equal(a, b)
        model.to(torch.bfloat16)
        out = model(x.to(torch.bfloat16))
        assert all(o.dtype == torch.bfloat16 and torch.isfinite(o).all() for o in out)
        assert all(b.dtype == torch.bfloat16 for m in _bias_modules(model) for b in m._cache.values())
