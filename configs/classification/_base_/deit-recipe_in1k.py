# ImageNet-1K classification with a backbone of this package: what the official EfficientFormerV2
# and EdgeViT training share. Both official scripts are forks of DeiT's main.py
# (snap-research/EfficientFormer main.py, saic-fi/edgevit src/main.py); every value below is a
# default of both, with its argument. The family bases (_base_/{edgevit,efficientformerv2}_*.py)
# add what differs; leaves set the arch.
# Official (argument, same default in both main.py files):
#   data: ImageNet train/val folders; --input-size 224; --train-interpolation bicubic;
#     RandomResizedCrop scale (0.08, 1), ratio (3/4, 4/3) and flip 0.5 (timm create_transform);
#     --aa rand-m9-mstd0.5-inc1 (2 ops, magnitude 9 of 10, std 0.5, increasing ops); --color-jitter
#     0.4 is inactive when --aa is set; --reprob 0.25 --remode pixel --recount 1 (RandomErasing,
#     area 0.02-1/3, aspect 0.3-3.3); --mixup 0.8 --cutmix 1.0 --mixup-prob 1.0
#     --mixup-switch-prob 0.5 --mixup-mode batch; --smoothing 0.1 (SoftTargetCrossEntropy on the
#     mixed smoothed targets); --repeated-aug (RASampler, 3 repeats); train loader drop_last,
#     --num_workers 10; eval Resize(256, bicubic) + CenterCrop(224) (256 = 224 / 0.875), val
#     batch 1.5 x the train batch; ImageNet mean / std.
#   optimizer: --opt adamw, --opt-eps 1e-8, --opt-betas None (AdamW's (0.9, 0.999)); no weight
#     decay for parameters with ndim <= 1 or a name ending in '.bias' (timm
#     create_optimizer(filter_bias_and_bn=True)).
#   schedule: --sched cosine (timm CosineLRScheduler, stepped once per epoch), --warmup-epochs 5,
#     --min-lr 1e-5, --epochs 300 (--cooldown-epochs 10 is not trained: the loop stops at
#     --epochs).
#   --model-ema, --model-ema-decay 0.99996 (timm ModelEma over the whole state dict, buffers
#     included, every iteration); the raw model is evaluated, the EMA saved.
#   --seed 0, each rank seed + rank.
# Ours (mmpretrain's way of saying the same, or an approximation):
#   the pipeline of mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py: RandAugment
#     policies='timm_increasing' (timm's increasing ops), fill = ImageNet mean; RandomErasing
#     mode='rand' with the ImageNet mean / std in pixels, applied before normalisation on uint8
#     (timm: N(0, 1) after normalisation; the same up to clipping to 0-255).
#   Mixup / CutMix as model.train_cfg batch augments (one of the two per batch, uniformly =
#     switch prob 0.5); LabelSmoothLoss mode 'original' smooths the mixed one-hot targets (the
#     same targets as timm's Mixup(label_smoothing=0.1)).
#   RepeatAugSampler (3 repeats) yields ceil(len / world) samples per rank; the official
#     RASampler floor(len // 256 * 256 / world).
#   weight decay: paramwise_cfg norm_decay_mult=0 and bias_decay_mult=0 give the official split
#     for these models (tests/test_pretrain_optim.py checks it on the official parameter shapes);
#     flat_decay_mult is NOT set: the official layer scales are (dim, 1, 1) and decayed, ours are
#     (dim,) vectors.
#   schedule: TimmCosineLR (backbones.pretrain) gives the official per-epoch lr, epoch for epoch.
#   EMA: mmpretrain's EMAHook, momentum 4e-5 = 1 - 0.99996, update_buffers=True (buffers averaged
#     as timm's ModelEma does); evaluate_on_origin=True gives the official evaluation of the raw
#     model (metrics with the _origin suffix), evaluate_on_ema=True adds the EMA's. Checkpoints
#     hold the EMA weights under state_dict and the raw ones under ema_state_dict (mmengine).
#   randomness seed 0 with diff_rank_seed (seed + rank); checkpoints every epoch, the last 3 kept
#     (the official script overwrites one).
#   the head: EdgeformersClsHead (backbones.pretrain): BatchNorm -> global average pool ->
#     Linear, Linear layers truncated normal std 0.02, as both official classifiers.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['backbones', 'backbones.pretrain'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(out_indices=(-1, )),  # the last stage only
    neck=None,
    head=dict(
        type='EdgeformersClsHead',
        num_classes=1000,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(
    num_workers=10,
    drop_last=True,
    pin_memory=True,
    persistent_workers=True,
    sampler=dict(type='RepeatAugSampler', shuffle=True, num_repeats=3))
val_dataloader = dict(num_workers=10, pin_memory=True, persistent_workers=True)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

custom_hooks = [
    dict(type='EMAHook', momentum=4e-5, update_buffers=True, evaluate_on_ema=True, evaluate_on_origin=True,
         priority='ABOVE_NORMAL'),
]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
randomness = dict(seed=0, diff_rank_seed=True)
