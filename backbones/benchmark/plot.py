"""ImageNet top-1 against measured latency, one point per model."""
from __future__ import annotations

from typing import Sequence

from ..fileio import atomic_path
from ..registry import FAMILIES, get_variant
from .baselines import BASELINES, top1

#: colour and marker per registered family, in registration order
PLOT_STYLES = (('tab:blue', 'o'), ('tab:red', '^'), ('tab:green', 'D'), ('tab:purple', 'v'))


def plot(timings: Sequence, fmt: str, threads: int, path: str, machine: str) -> str:
    """ImageNet top-1 (papers / torchvision) against measured latency, one point per model."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in timings:
        if t.fmt != fmt or t.threads != threads or top1(t.model) is None:
            continue
        if t.model in BASELINES:
            color, marker, label, offset = 'tab:gray', 's', t.model, (4, 3)
        else:
            variant = get_variant(t.model)
            index = list(FAMILIES).index(variant.family)
            color, marker = PLOT_STYLES[index % len(PLOT_STYLES)]
            label, offset = variant.label, (4, -10) if index % 2 == 0 else (4, 3)
        ax.scatter(t.median_ms, top1(t.model), c=color, marker=marker, s=40)
        ax.annotate(label, (t.median_ms, top1(t.model)), textcoords='offset points', xytext=offset, fontsize=8)
    ax.set_xlabel(f'latency, ms ({fmt}, {threads} thread{"s" if threads > 1 else ""}, median)')
    ax.set_ylabel('ImageNet top-1 (%)')
    ax.set_title(f'Accuracy vs measured latency at 224x224\n{machine}', fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    fig.tight_layout()
    with atomic_path(path) as tmp:  # keeps the suffix, from which matplotlib takes the format
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
