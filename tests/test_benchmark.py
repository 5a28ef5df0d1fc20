"""The benchmark's bookkeeping (timing statistics, ratios, table, plot); timings themselves
are measured by tools/benchmark.py, never asserted."""
import pytest

from backbones.export.benchmark import REFERENCE, Timing, format_table, plot, time_callable, top1


def test_time_callable_reports_median_and_p90():
    calls = []
    median, p90, runs = time_callable(lambda: calls.append(1), seconds=0.05, warmup=3)
    assert runs >= 5 and len(calls) == runs + 3
    assert 0 <= median <= p90


def test_ratios_table_and_plot(tmp_path):
    timings = [Timing(REFERENCE, 'executorch', 1, 8.0, 9.0, 100), Timing('efficientformerv2_s0', 'executorch', 1, 12.0, 13.0, 80)]
    for t in timings:
        t.ratio = t.median_ms / 8.0
    table = format_table(timings, 'test machine')
    assert '12.00 (1.50x)' in table and '8.00 (1.00x)' in table and 'test machine' in table
    assert top1('efficientformerv2_s0') == pytest.approx(75.7)
    png = plot(timings, 'executorch', 1, str(tmp_path / 'plot.png'), 'test machine')
    assert (tmp_path / 'plot.png').stat().st_size > 1000 and png.endswith('.png')


def test_interleaved_timing_gives_every_model_its_share():
    from backbones.export.benchmark import time_interleaved
    calls = {'a': 0, 'b': 0}

    def make(name):
        def run():
            calls[name] += 1
        return run

    stats = time_interleaved({'a': make('a'), 'b': make('b')}, seconds=0.04, rounds=4, warmup=2)
    for name in ('a', 'b'):
        median, p90, runs = stats[name]
        assert runs >= 4 and calls[name] == runs + 2 and 0 <= median <= p90


def test_eager_table():
    from backbones.export.benchmark import EagerTiming, format_eager_table
    table = format_eager_table([EagerTiming('efficientformerv2_s0', 8, 2, 90.0, 100.0)], 'test machine')
    assert '| efficientformerv2_s0 | 8 | 2 | 90.0 | 100.0 | 0.90 |' in table


def test_host_threads_holds_and_restores_torch_pool():
    import torch
    from backbones.export.benchmark import host_threads
    before = torch.get_num_threads()
    with host_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with host_threads(0):  # 0 / None: PyTorch's pool as it is
        assert torch.get_num_threads() == before
