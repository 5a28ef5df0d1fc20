"""Parity with outputs of the papers' official code.

Two sets of references, both made by the official code with random weights in eval mode:

* ``tests/data/reference`` (always here): tiny architectures of both families that exercise
  every code path: EdgeViT (three input sizes: features, final norm, logits), the
  EfficientFormerV2 classification model at 64x64 (features, logits) and the official dense
  EfficientFormerV2 backbone at ``resolution=128`` on 128x128, 96x160 and 160x224, with the
  random attention biases used.
* ``../shared/reference`` (when present): EdgeViT-XXS / XS and EfficientFormerV2-S0 at their
  real sizes. For EfficientFormerV2 the ``_biased`` files are used: eval mode was set after
  the weights were loaded, so the official attention-bias cache holds the stored tables.

Every file is loaded through ``init_cfg=dict(type='Pretrained', ...)`` as a user would, and
the logits through the classifier path.
"""
import pytest
import torch

from backbones import EdgeViT, EfficientFormerV2
from backbones.classifier import ImageClassifier, build_classifier

from .conftest import rel_err

TOL = 1e-4

#: the compact references' architectures, in our ``arch`` terms (tests/data/reference/README.md)
TINY_EDGEVIT = dict(depths=(1, 1, 2, 1), widths=(16, 32, 64, 96), head_dim=16, mlp_ratio=4.,
                    sr_ratios=(4, 2, 2, 1), qkv_bias=True)
TINY_EFFICIENTFORMERV2 = dict(depths=(1, 1, 2, 2), widths=(16, 24, 32, 48), num_vit=1, drop_path_rate=0.0,
                              mlp_ratios=((4,), (4,), (4, 3), (4, 3)))


def _pretrained(cls, path, **kwargs):
    model = cls(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    model.init_weights()
    return model.eval()


def _classifier(backbone, path, num_classes, distillation):
    classifier = ImageClassifier(backbone, num_classes, distillation)
    classifier.load_checkpoint(str(path))
    return classifier.eval()


def _check_features(model, case, label):
    with torch.no_grad():
        feats = model(case['input'].float())
    assert len(feats) == len(case['features']) == 4
    for i, (ours, theirs) in enumerate(zip(feats, case['features'])):
        assert ours.shape == theirs.shape, (label, i, ours.shape, theirs.shape)
        assert rel_err(ours, theirs) < TOL, (label, tuple(case['input'].shape), i, rel_err(ours, theirs))


def _check_classifier(classifier, case, label):
    x = case['input'].float()
    with torch.no_grad():
        if 'final_norm' in case:
            final = classifier.norm(classifier.backbone(x)[-1])
            assert rel_err(final, case['final_norm']) < TOL, label
        logits = classifier(x)
    assert rel_err(logits, case['logits']) < TOL, (label, rel_err(logits, case['logits']))


# ---------------------------------------------------------------------------- compact (shipped)
def test_compact_edgevit(compact_reference):
    name = 'edgevit_tiny.pt'
    ref = compact_reference(name)
    path = compact_reference.folder / name
    model = _pretrained(EdgeViT, path, arch=TINY_EDGEVIT)
    classifier = _classifier(EdgeViT(arch=TINY_EDGEVIT, out_indices=(3,)), path, 10, False)
    assert [tuple(c['input'].shape[-2:]) for c in ref['cases']] == [(64, 96), (96, 64), (128, 128)]
    for case in ref['cases']:
        _check_features(model, case, name)
        _check_classifier(classifier, case, name)


def test_compact_efficientformerv2_classification(compact_reference):
    name = 'efficientformerv2_tiny_cls64.pt'
    ref = compact_reference(name)
    path = compact_reference.folder / name
    model = _pretrained(EfficientFormerV2, path, arch=TINY_EFFICIENTFORMERV2, resolution=64)
    classifier = _classifier(EfficientFormerV2(arch=TINY_EFFICIENTFORMERV2, resolution=64, out_indices=(3,)),
                             path, 10, True)
    # the stored tables are random and used: zeroing them must change the attention stages
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith('attention_biases'))
    for case in ref['cases']:
        _check_features(model, case, name)
        _check_classifier(classifier, case, name)


def test_compact_efficientformerv2_dense(compact_reference):
    name = 'efficientformerv2_tiny_dense128.pt'
    ref = compact_reference(name)
    model = _pretrained(EfficientFormerV2, compact_reference.folder / name, arch=TINY_EFFICIENTFORMERV2,
                        resolution=128, bias_mode='official')
    assert [tuple(c['input'].shape[-2:]) for c in ref['cases']] == [(128, 128), (96, 160), (160, 224)]
    for case in ref['cases']:
        _check_features(model, case, name)


# ---------------------------------------------------------------------------- full size (../shared)
@pytest.mark.parametrize('arch', ['xxs', 'xs'])
def test_edgevit_features_and_logits(reference, arch):
    name = f'edgevit_{arch}.pt'
    ref = reference(name)
    model = _pretrained(EdgeViT, reference.folder / name, arch=arch)
    classifier = build_classifier(f'edgevit_{arch}')
    classifier.load_checkpoint(str(reference.folder / name))
    classifier.eval()
    assert len(ref['cases']) == 2
    for case in ref['cases']:
        _check_features(model, case, name)
        if 'logits' in case:
            _check_classifier(classifier, case, name)


def test_efficientformerv2_s0_classification(reference):
    name = 'efficientformerv2_s0_cls_biased.pt'
    ref = reference(name)
    model = _pretrained(EfficientFormerV2, reference.folder / name, arch='s0', resolution=224)
    classifier = build_classifier('efficientformerv2_s0')
    classifier.load_checkpoint(str(reference.folder / name))
    classifier.eval()
    for case in ref['cases']:
        _check_features(model, case, name)
        _check_classifier(classifier, case, name)


def test_efficientformerv2_s0_dense_official_mode(reference):
    name = 'efficientformerv2_s0_dense512_biased.pt'
    ref = reference(name)
    model = _pretrained(EfficientFormerV2, reference.folder / name, arch='s0', resolution=512,
                        bias_mode='official')
    assert [tuple(c['input'].shape[-2:]) for c in ref['cases']] == [(512, 512), (384, 640)]
    for case in ref['cases']:
        _check_features(model, case, name)
