import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """../shared/reference beside the checkout, or $EDGEFORMERS_REFERENCE."""
    env = os.environ.get('EDGEFORMERS_REFERENCE')
    candidates = [Path(env)] if env else []
    candidates += [ROOT.parent / 'shared' / 'reference', ROOT / 'shared' / 'reference']
    for c in candidates:
        if (c / 'README.md').exists():
            return c
    pytest.fail('the official reference outputs were not found; put shared/reference beside the '
                'checkout or set EDGEFORMERS_REFERENCE to the folder')


@pytest.fixture(scope='session')
def reference():
    folder = reference_dir()
    cache = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = torch.load(folder / name, map_location='cpu', weights_only=True)
        return cache[name]

    load.folder = folder
    return load


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|"""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
