# Semantic FPN on ADE20K 512x512 with an EfficientFormerV2 backbone, as the official configs
# (snap-research/EfficientFormer segmentation/): AdamW lr 2e-4, weight decay 1e-4, poly power
# 0.9 to 1e-6, 40k iterations at batch 32 = 8 GPUs x 4 (the same schedule as mmseg's 80k at
# batch 16), crop 512 from a 0.5-2.0 resize of (2048, 512), flip, photometric distortion,
# single-scale whole-image test with sides resized to a multiple of 32, backbone BN in eval,
# dense attention biases for a base resolution of 512 (official bias mode).
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='EfficientFormerV2',
        arch='s0',
        resolution=512,
        bias_mode='official',
        out_indices=(0, 1, 2, 3),
        norm_eval=True,
        init_cfg=None),
    neck=dict(in_channels=[32, 48, 96, 176], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=4)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-6, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000))

auto_scale_lr = dict(enable=True, base_batch_size=32)
