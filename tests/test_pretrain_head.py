"""EdgeformersClsHead: an mmpretrain classifier with it reproduces the official classifiers'
logits (the compact official references; EfficientFormerV2 evaluates the mean of its two
heads), its checkpoint keys are ``backbone.*``, ``head.norm.*``, ``head.head.*``,
``head.head_dist.*``, and bad input is named."""
import pytest
import torch

pytest.importorskip('mmpretrain')
from backbones.pretrain.head import EdgeformersClsHead  # noqa: E402
from backbones.registry import FAMILIES  # noqa: E402

from .pretrain_helpers import TINY, official_keys, tiny_classifier  # noqa: E402


@pytest.mark.parametrize('family', sorted(TINY))
def test_classifier_reproduces_the_official_logits(family, compact_reference):
    ref = compact_reference(TINY[family][0])
    model = tiny_classifier(family, num_classes=ref['meta']['num_classes'])
    own = model.state_dict()
    state = {k: v.float() for k, (_, v) in official_keys(family, compact_reference).items()}
    state = {k: v.reshape(own[k].shape) for k, v in state.items()}  # official (C, 1, 1) layer scales
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith('attention_bias_idxs') for k in missing), (missing, unexpected)
    model.eval()
    for case in ref['cases']:
        with torch.no_grad():
            logits = model(case['input'].float(), mode='tensor')
            [sample] = model(case['input'].float(), mode='predict')
        expected = case['logits'].float()
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
        assert int(sample.pred_label) == int(expected.argmax())
        torch.testing.assert_close(sample.pred_score, expected.softmax(dim=1)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_checkpoint_keys_are_backbone_and_the_three_head_parts(family):
    from mmpretrain.registry import MODELS
    cls = FAMILIES[family]
    backbone = cls(arch=next(iter(cls.arch_settings)), out_indices=(-1, ))
    model = MODELS.build(dict(_scope_='mmpretrain', type='ImageClassifier', backbone=backbone,
                              head=dict(type='EdgeformersClsHead', num_classes=10, in_channels=backbone.out_channels[-1],
                                        distillation=cls.classifier_distillation)))
    parts = {k.split('.')[0] if k.startswith('backbone.') else '.'.join(k.split('.')[:2]) for k in model.state_dict()}
    expected = {'backbone', 'head.norm', 'head.head'} | ({'head.head_dist'} if cls.classifier_distillation else set())
    assert parts == expected


def test_distillation_head_output_is_the_mean_of_both_heads_in_train_and_eval():
    head = EdgeformersClsHead(num_classes=5, in_channels=8, distillation=True)
    head.init_weights()
    feats = (torch.randn(3, 8, 4, 5), )
    for train in (True, False):
        head.train(train)
        pooled = torch.nn.functional.batch_norm(feats[0], head.norm.running_mean.clone(),
                                                head.norm.running_var.clone(), head.norm.weight, head.norm.bias,
                                                training=train).mean(dim=(2, 3))
        a, b = pooled @ head.head.weight.T + head.head.bias, pooled @ head.head_dist.weight.T + head.head_dist.bias
        torch.testing.assert_close(head(feats), (a + b) / 2)
        cls, dist = head.forward_heads(feats)
        torch.testing.assert_close(cls, a)
        torch.testing.assert_close(dist, b)


def test_official_initialisation_of_the_linear_layers():
    torch.manual_seed(0)
    head = EdgeformersClsHead(num_classes=1000, in_channels=384, distillation=True)
    head.init_weights()
    for linear in (head.head, head.head_dist):
        # trunc_normal_(std=.02) as the official code and timm (truncated at +-2, i.e. not at all)
        assert torch.all(linear.bias == 0) and abs(float(linear.weight.std()) - 0.02) < 0.0005
    assert torch.all(head.norm.weight == 1) and torch.all(head.norm.bias == 0)


@pytest.mark.parametrize('kwargs, feats, message', [
    (dict(num_classes=0, in_channels=8), None, 'num_classes must be a whole number >= 1, got 0'),
    (dict(num_classes=5, in_channels=8), torch.zeros(2, 6, 3, 3), r'expects the backbone\'s last output as \(N, 8'),
])
def test_bad_input_is_named(kwargs, feats, message):
    with pytest.raises(ValueError, match=message):
        EdgeformersClsHead(**kwargs)((feats, ))


def test_teacher_logits_need_a_distillation_head():
    from mmpretrain.structures import DataSample
    head = EdgeformersClsHead(num_classes=3, in_channels=4)
    samples = [DataSample().set_gt_label(1), DataSample().set_gt_label(2)]
    with pytest.raises(ValueError, match='set head.distillation=True'):
        head.loss((torch.randn(2, 4, 2, 2), ), samples, teacher_logits=torch.randn(2, 3))
