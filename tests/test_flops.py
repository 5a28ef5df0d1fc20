"""tools/get_flops.py: whole-model params and FLOPs against the papers."""
import os.path as osp

import pytest

from backbones.analysis.complexity import model_complexity
from backbones.analysis.papers import paper_models

from .conftest import ROOT


def test_semantic_fpn_edgevit_xxs_matches_the_paper():
    config = str(ROOT / 'configs' / 'segmentation' / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py')
    c = model_complexity(config)
    paper = paper_models()[osp.basename(config)[:-3]]
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


def test_metafile_lists_every_config_with_the_papers_results(papers_text):
    import yaml
    with open(ROOT / 'metafile.yml') as f:
        meta = yaml.safe_load(f)
    configs = sorted(m['Config'] for m in meta['Models'])
    assert len(configs) == 21 and all((ROOT / c).is_file() for c in configs)
    papers = papers_text
    for model in meta['Models']:
        assert model['Metadata']['Parameters'] > 1e6 and model['Metadata']['FLOPs'] > 1e9
        for result in model.get('Results', []):
            for value in result['Metrics'].values():
                assert f'| {value} |' in papers, (model['Name'], value)
