"""Parameters and MACs of the classification models at 224 against the papers' table.

The figures are read from PAPERS.md itself (../shared/PAPERS.md, or the copy in tests/data), so the package's own copy
(the families' `paper` figures, used by tools) is checked too.
"""
import re

import pytest

from backbones.analysis.complexity import imagenet_table
from backbones.analysis.papers import agrees, imagenet_figures

NAMES = {'EdgeViT-XXS': 'edgevit_xxs', 'EdgeViT-XS': 'edgevit_xs', 'EdgeViT-S': 'edgevit_s',
         'EfficientFormerV2-S0': 'efficientformerv2_s0', 'EfficientFormerV2-S1': 'efficientformerv2_s1',
         'EfficientFormerV2-S2': 'efficientformerv2_s2', 'EfficientFormerV2-L': 'efficientformerv2_l'}


@pytest.fixture(scope='module')
def papers(papers_text):
    text = papers_text
    section = text.split('## ImageNet-1K classification')[1].split('\n## ')[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if cells and cells[0] in NAMES:
            params = cells[1]
            code = re.search(r'code: ([\d.]+)', params)  # EdgeViT-S: the code's model
            rows[NAMES[cells[0]]] = dict(params=code.group(1) if code else params.split()[0],
                                         gmacs=cells[2], top1=cells[3].split()[0])
    assert len(rows) == 7
    return rows


def test_package_figures_match_papers_md(papers):
    assert imagenet_figures() == papers


@pytest.mark.slow
def test_params_and_macs_agree_with_the_papers(papers):
    rows = {r['model']: r for r in imagenet_table()}
    for name, paper in papers.items():
        r = rows[name]
        assert agrees(r['params'], paper['params'], 0.03), (name, r['params'], paper['params'])
        assert agrees(r['gmacs'], paper['gmacs'], 0.05), (name, r['gmacs'], paper['gmacs'])
    # EdgeViT-S is the code's 1,2,5,3 model, not the 11.1M of the paper's table
    assert rows['edgevit_s']['params'] == pytest.approx(13.1, abs=0.05)


def test_agrees_uses_printed_precision():
    assert agrees(0.557, '0.6', 0.0)
    assert not agrees(0.557, '0.60', 0.05)
    assert agrees(0.407, '0.40', 0.05) and not agrees(0.407, '0.40', 0.01)
