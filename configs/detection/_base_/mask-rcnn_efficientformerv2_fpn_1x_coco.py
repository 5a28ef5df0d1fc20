# Mask R-CNN 1x COCO with an EfficientFormerV2 backbone, as the official configs
# (snap-research/EfficientFormer detection/): AdamW lr 2e-4, weight decay 0.05, no gradient
# clipping, steps at epochs 8 and 11, 500 linear warm-up iterations from 1e-6, 1333x800,
# flip 0.5, pad to 32, batch 16 = 8 GPUs x 2, backbone BatchNorm kept in eval mode, and the
# dense attention biases for a base resolution of 800 (official bias mode).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='EfficientFormerV2',
        arch='s0',
        resolution=800,
        bias_mode='official',
        out_indices=(0, 1, 2, 3),
        norm_eval=True,
        init_cfg=None),
    neck=dict(in_channels=[32, 48, 96, 176], out_channels=256, num_outs=5))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]

auto_scale_lr = dict(enable=True, base_batch_size=16)
