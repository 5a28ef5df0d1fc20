# RetinaNet 1x COCO with an EfficientFormerV2 backbone. The paper reports no RetinaNet, so
# this takes the backbone settings and optimizer of the official Mask R-CNN configs
# (AdamW, weight decay 0.05, BN in eval, resolution 800, official bias mode, warm-up from 1e-6)
# with the RetinaNet protocol of the field (lr 1e-4, FPN from stage 1, extra convs on input).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
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
    neck=dict(in_channels=[32, 48, 96, 176], start_level=1, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]

auto_scale_lr = dict(enable=True, base_batch_size=16)
