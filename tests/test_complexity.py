"""backbones.analysis.complexity: parameters and MACs of the classifiers at 224, and of whole
detectors and segmentors at the papers' sizes, against the papers' tables.

The figures are read from PAPERS.md itself (../shared/PAPERS.md, or the copy in tests/data), so the package's own copy
(the families' `paper` figures, used by tools) is checked too.
"""
import os.path as osp
import re

import pytest

from backbones.analysis.complexity import imagenet_table, model_complexity
from backbones.analysis.papers import agrees, imagenet_figures
from backbones.registry import downstream_figures, variants

from .conftest import ROOT, paper_table


@pytest.fixture(scope='module')
def papers(papers_text):
    """ImageNet params (M, EdgeViT-S: the code's model), GMACs and top-1 of every registered
    variant, from PAPERS.md's table."""
    table = paper_table(papers_text, 'ImageNet-1K classification')
    rows = {}
    for v in variants():
        row = table[v.label]
        code = re.search(r'code: ([\d.]+)', row['params (M)'])
        rows[v.name] = dict(params=code.group(1) if code else row['params (M)'].split()[0], gmacs=row['GMACs'],
                            top1=row['top-1'].split()[0])
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


def test_semantic_fpn_edgevit_xxs_matches_the_paper():
    config = str(ROOT / 'configs' / 'segmentation' / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py')
    c = model_complexity(config)
    paper = downstream_figures()[osp.basename(config)[:-3]]
    assert (c['height'], c['width']) == (512, 512)
    assert abs(c['params'] - float(paper['params'])) <= 0.03 * float(paper['params'])
    assert abs(c['gflops'] - float(paper['gflops'])) <= 0.10 * float(paper['gflops']), c


@pytest.mark.slow
def test_detector_flops_at_a_given_size():
    config = str(ROOT / 'configs' / 'detection' / 'retinanet_efficientformerv2-s0_fpn_8xb2-1x_coco.py')
    small = model_complexity(config, (128, 160))
    large = model_complexity(config, (256, 320))
    assert small['params'] == large['params']
    assert 3.0 < large['gflops'] / small['gflops'] < 5.0  # about 4x the pixels


def test_package_downstream_figures_match_papers_md(papers_text):
    """The families' published downstream figures (used by the metafile and the tools) are
    PAPERS.md's, row for row."""
    from .conftest import paper_row
    from .test_configs import TASKS
    for v in variants():
        for task in TASKS:
            name = task.format(m=v.cls.model_prefix, a=v.arch)[:-3]
            assert downstream_figures().get(name, {}) == paper_row(papers_text, name), name
