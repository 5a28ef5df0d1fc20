"""backbones.benchmark.timing: the timing statistics and the host thread pool; timings
themselves are measured by tools/benchmark.py, never asserted."""
import pytest
import torch

from backbones.benchmark.timing import host_threads, time_callable, time_interleaved


def test_time_callable_reports_median_and_p90():
    calls = []
    median, p90, runs = time_callable(lambda: calls.append(1), seconds=0.05, warmup=3)
    assert runs >= 5 and len(calls) == runs + 3
    assert 0 <= median <= p90


def test_interleaved_timing_gives_every_model_its_share():
    calls = {'a': 0, 'b': 0}

    def make(name):
        def run():
            calls[name] += 1
        return run

    stats = time_interleaved({'a': make('a'), 'b': make('b')}, seconds=0.04, rounds=4, warmup=2)
    for name in ('a', 'b'):
        median, p90, runs = stats[name]
        assert runs >= 4 and calls[name] == runs + 2 and 0 <= median <= p90


def test_median_and_p90_of_known_durations(monkeypatch):
    """A fake clock: call k takes k ms, so the statistics are known exactly."""
    import backbones.benchmark.timing as timing
    clock = {'now': 0.0, 'calls': 0}

    def perf_counter():
        return clock['now']

    def run():
        clock['calls'] += 1
        clock['now'] += clock['calls'] * 1e-3

    monkeypatch.setattr(timing.time, 'perf_counter', perf_counter)
    median, p90, runs = time_interleaved({'f': run}, seconds=0.045, rounds=1, warmup=0)['f']
    # durations 1, 2, ... ms until 45 ms have passed: 1 + ... + 9 = 45
    assert runs == 9 and median == pytest.approx(5.0) and p90 == pytest.approx(9.0)


def test_host_threads_holds_and_restores_torch_pool():
    before = torch.get_num_threads()
    with host_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with host_threads(0):  # 0 / None: PyTorch's pool as it is
        assert torch.get_num_threads() == before
