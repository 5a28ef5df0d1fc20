"""metafile.yml, OpenMMLab's model index: every config, its measured size, and the papers'
results as their tables print them."""
import yaml

from backbones.registry import variants

from .conftest import ROOT, paper_row
from .test_configs import TASKS

#: metafile metric -> the key of :func:`~tests.conftest.paper_row`
METRICS = {'box AP': 'box_ap', 'mask AP': 'mask_ap', 'mIoU': 'miou'}


def test_metafile_lists_every_config_with_the_papers_results(papers_text):
    with open(ROOT / 'metafile.yml') as f:
        meta = yaml.safe_load(f)
    expected = {t.format(m=v.cls.model_prefix, a=v.arch)[:-3] for v in variants() for t in TASKS}
    assert {m['Name'] for m in meta['Models']} == expected
    for model in meta['Models']:
        assert (ROOT / model['Config']).is_file()
        assert model['Metadata']['Parameters'] > 1e6 and model['Metadata']['FLOPs'] > 1e9
        published = paper_row(papers_text, model['Name'])
        listed = {METRICS[k]: str(v) for r in model.get('Results', []) for k, v in r['Metrics'].items()}
        assert listed == {k: v for k, v in published.items() if k in METRICS.values()}, model['Name']
