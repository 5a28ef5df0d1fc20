import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: small official references shipped with the tests (made by the papers' code, tiny architectures)
COMPACT_REFERENCE = ROOT / 'tests' / 'data' / 'reference'
#: the papers' figures; ../shared/PAPERS.md when present (the maintained copy), else the shipped one
PAPERS_MD = ROOT / 'tests' / 'data' / 'PAPERS.md'


def shared_reference_dir():
    """$EDGEFORMERS_REFERENCE when set, else ../shared/reference beside the checkout; None when
    absent (setting the variable to an empty folder runs the suite as a user's clone would)."""
    env = os.environ.get('EDGEFORMERS_REFERENCE')
    candidates = [Path(env)] if env else [ROOT.parent / 'shared' / 'reference', ROOT / 'shared' / 'reference']
    for c in candidates:
        if (c / 'README.md').exists():
            return c
    return None


def _loader(folder: Path):
    cache = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = torch.load(folder / name, map_location='cpu', weights_only=True)
        return cache[name]

    load.folder = folder
    return load


@pytest.fixture(scope='session')
def compact_reference():
    """The compact official references in tests/data/reference (always present)."""
    return _loader(COMPACT_REFERENCE)


@pytest.fixture(scope='session')
def reference():
    """The full-size official references in ../shared/reference; tests that need them skip
    when the folder is absent (a user's clone has only the compact ones)."""
    folder = shared_reference_dir()
    if folder is None:
        pytest.skip('the full-size official references are not here: they live in ../shared/reference '
                    '(or set EDGEFORMERS_REFERENCE); the compact ones in tests/data/reference still run')
    return _loader(folder)


@pytest.fixture(scope='session')
def papers_text() -> str:
    shared = shared_reference_dir()
    path = shared.parent / 'PAPERS.md' if shared is not None and (shared.parent / 'PAPERS.md').exists() else PAPERS_MD
    return path.read_text()


# at most 2 threads per test, and no more threads than cores across pytest-xdist's workers
_THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(_THREADS)
    yield


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|"""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
