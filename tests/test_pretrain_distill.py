"""DistillingClassifier: its loss is the official formula computed independently (timm's
mixup targets and SoftTargetCrossEntropy, the teacher's argmax, torch ops), the teacher sees
the student's mixed batch, stays frozen, outside checkpoints, the optimizer and SyncBN
conversion, in eval mode and on the student's device; without a teacher checkpoint training
runs without distillation, says so once, and both heads learn the labels."""
import copy
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy

pytest.importorskip('mmpretrain')
from backbones.checkpoints.io import UnsafeCheckpointError  # noqa: E402
from backbones.pretrain.distill import distillation_loss  # noqa: E402

from .pretrain_helpers import tiny_classifier  # noqa: E402

FAMILY = 'EfficientFormerV2'  # the family whose official recipe distils
NUM_CLASSES = 10
TEACHER = 'test_resnet'  # a tiny timm model with BatchNorms stands in for regnety_160
SMOOTHING = 0.1


@pytest.fixture(scope='module')
def teacher_file(tmp_path_factory):
    """A teacher checkpoint as DeiT stores regnety_160's: the state dict under 'model'."""
    import timm
    torch.manual_seed(3)
    teacher = timm.create_model(TEACHER, num_classes=NUM_CLASSES, global_pool='avg')
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'model': teacher.state_dict(), 'epoch': 299}, path)
    return path


def _student(teacher=None, distillation=None):
    kwargs = dict(teacher=teacher) if teacher is not None else {}
    if distillation is not None:
        kwargs['distillation'] = distillation
    return tiny_classifier(FAMILY, NUM_CLASSES, cls_type='DistillingClassifier',
                           head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=SMOOTHING, mode='original')),
                           **kwargs).train()


def _mixed_batch(lam: float = 0.7):
    """A mixed-up batch and its samples as mmpretrain's batch augments hand them over (mixed
    one-hot gt_score), with the labels for timm's targets."""
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 64, 64, generator=g)
    labels = torch.tensor([1, 7, 3, 7])
    inputs = lam * x + (1 - lam) * x.flip(0)
    one_hot = F.one_hot(labels, NUM_CLASSES).float()
    mixed = lam * one_hot + (1 - lam) * one_hot.flip(0)
    samples = [DataSample().set_gt_label(int(y)).set_gt_score(s) for y, s in zip(labels, mixed)]
    return inputs, samples, labels, lam


def _heads_by_hand(model, inputs):
    """Both heads' logits from the backbone's output with torch ops (BatchNorm in training
    mode, global average pool, the two linears)."""
    feat = model.backbone(inputs)[-1]
    head = model.head
    pooled = F.batch_norm(feat, None, None, head.norm.weight, head.norm.bias, training=True).mean(dim=(2, 3))
    return F.linear(pooled, head.head.weight, head.head.bias), F.linear(pooled, head.head_dist.weight,
                                                                          head.head_dist.bias)


def _teacher_by_hand(teacher_file):
    import timm
    teacher = timm.create_model(TEACHER, num_classes=NUM_CLASSES, global_pool='avg')
    teacher.load_state_dict(torch.load(teacher_file, weights_only=True)['model'])
    return teacher.eval()


@pytest.mark.parametrize('kind', ['hard', 'soft'])
def test_loss_is_the_official_formula(kind, teacher_file):
    alpha, tau = (0.5, 1.0) if kind == 'hard' else (0.3, 2.0)
    model = _student(dict(name=TEACHER, checkpoint=str(teacher_file)), dict(type=kind, alpha=alpha, tau=tau))
    inputs, samples, labels, lam = _mixed_batch()
    losses = model.loss(inputs, samples)
    got = sum(losses.values())

    with torch.no_grad():
        cls, dist = _heads_by_hand(model, inputs)
        teacher = _teacher_by_hand(teacher_file)(inputs)
    targets = mixup_target(labels, NUM_CLASSES, lam=lam, smoothing=SMOOTHING)  # timm: flip-mixed, smoothed
    base = SoftTargetCrossEntropy()(cls, targets)
    if kind == 'hard':
        dist_loss = F.cross_entropy(dist, teacher.argmax(dim=1))
    else:  # KL(teacher || student) at temperature tau, summed, tau**2 over the number of logits
        p_t = (teacher / tau).softmax(dim=1)
        dist_loss = (p_t * (p_t.log() - (dist / tau).log_softmax(dim=1))).sum() * tau ** 2 / dist.numel()
    expected = base * (1 - alpha) + dist_loss * alpha
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses['loss_dist'].detach(), dist_loss * alpha, rtol=1e-5, atol=1e-6)
    got.backward()  # the student learns, the teacher does not
    assert model.head.head_dist.weight.grad is not None
    assert all(p.grad is None for p in model.teacher.module.parameters())


def test_the_teacher_sees_the_students_mixed_batch(teacher_file):
    """Through train_step: the data preprocessor's Mixup / CutMix, then the loss; the teacher's
    input is the backbone's."""
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample
    model = _student(dict(name=TEACHER, checkpoint=str(teacher_file)))
    from mmpretrain.registry import MODELS
    model.data_preprocessor = MODELS.build(dict(
        _scope_='mmpretrain', type='ClsDataPreprocessor', num_classes=NUM_CLASSES, mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], to_rgb=True,
        batch_augments=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)])))
    seen = {}
    model.backbone.register_forward_pre_hook(lambda m, args: seen.__setitem__('student', args[0].clone()))
    model.teacher.module.register_forward_pre_hook(lambda m, args: seen.__setitem__('teacher', args[0].clone()))
    g = torch.Generator().manual_seed(2)
    images = [(torch.rand(3, 64, 64, generator=g) * 255).to(torch.uint8) for _ in range(4)]
    data = dict(inputs=images, data_samples=[DataSample().set_gt_label(i) for i in (0, 3, 3, 9)])
    torch.manual_seed(0)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log_vars = model.train_step(data, wrapper)
    assert set(log_vars) >= {'loss', 'loss_cls', 'loss_dist'}
    assert torch.equal(seen['teacher'], seen['student'])
    stacked = torch.stack([i.float() for i in images]).flip(1)  # RGB
    normalised = (stacked - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)) / torch.tensor(
        [58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    assert not torch.allclose(seen['teacher'], normalised)  # mixed, not the raw batch


def test_the_teacher_stays_frozen_outside_the_student(teacher_file):
    model = _student(dict(name=TEACHER, checkpoint=str(teacher_file)))
    teacher = model.teacher.module
    assert not any(k.startswith('teacher') for k in model.state_dict())
    assert {id(p) for p in model.parameters()}.isdisjoint(id(p) for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    model.train()
    assert not teacher.training
    # a whole-model SyncBN conversion (mmengine's sync_bn='torch') leaves the teacher's BNs alone
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in converted.head.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in converted.teacher.module.modules())
    # moved with the student (a dtype move stands in for a device move on this machine)
    model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in teacher.parameters())
    # an EMA copy of the student shares the teacher rather than copying it
    assert copy.deepcopy(model).teacher is model.teacher
    # the teacher's weights are the file's
    for k, v in torch.load(teacher_file, weights_only=True)['model'].items():
        torch.testing.assert_close(teacher.state_dict()[k].float(), v.float())


def test_without_a_teacher_checkpoint_both_heads_learn_the_labels_and_it_is_said_once(caplog):
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    logger.addHandler(caplog.handler)
    try:
        model = _student(dict(name='regnety_160', checkpoint=None))
        inputs, samples, labels, lam = _mixed_batch()
        losses = model.loss(inputs, samples)
        model.loss(inputs, samples)
    finally:
        logger.removeHandler(caplog.handler)
    said = [r for r in caplog.records if 'WITHOUT distillation' in r.getMessage()]
    assert len(said) == 1 and 'model.teacher.checkpoint=' in said[0].getMessage()
    assert model.teacher is None
    with torch.no_grad():
        cls, dist = _heads_by_hand(model, inputs)
    targets = mixup_target(labels, NUM_CLASSES, lam=lam, smoothing=SMOOTHING)
    expected = 0.5 * SoftTargetCrossEntropy()(cls, targets) + 0.5 * SoftTargetCrossEntropy()(dist, targets)
    torch.testing.assert_close(sum(losses.values()).detach(), expected, rtol=1e-5, atol=1e-6)


def test_bad_teachers_and_settings_are_named(tmp_path, teacher_file):
    with pytest.raises(ValueError, match='is not a timm model'):
        _student(dict(name='no_such_net', checkpoint=str(teacher_file)))
    with pytest.raises(ValueError, match='does not fit timm'):
        _student(dict(name='resnet18', checkpoint=str(teacher_file)))
    with pytest.raises(ValueError, match='checkpoint but no name'):
        _student(dict(checkpoint=str(teacher_file)))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        _student(dict(name=TEACHER, checkpoint=str(tmp_path / 'missing.pth')))
    with pytest.raises(ValueError, match="distillation type must be one of"):
        _student(distillation=dict(type='none'))
    with pytest.raises(ValueError, match='alpha must be in'):
        _student(distillation=dict(alpha=1.5))
    with pytest.raises(ValueError, match='needs a head with a distillation head'):
        tiny_classifier(FAMILY, NUM_CLASSES, cls_type='DistillingClassifier', head=dict(distillation=False))
    unsafe = tmp_path / 'unsafe.pth'
    torch.save({'model': {}, 'hook': logging.Logger}, unsafe)  # a pickle that names a class
    with pytest.raises(UnsafeCheckpointError, match='refused to load'):
        _student(dict(name=TEACHER, checkpoint=str(unsafe)))


def test_distillation_loss_rejects_unknown_types():
    with pytest.raises(ValueError, match='must be one of'):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), type='none')
