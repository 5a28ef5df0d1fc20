# RetinaNet 1x COCO with an EfficientFormerV2 backbone. Leaf configs set the arch.
# No official recipe: the paper reports no RetinaNet. Our choice: the backbone and optimizer of
#   the official Mask R-CNN recipe (BatchNorm trained as SyncBN, attention biases for a base
#   resolution of 800 in the official mode, AdamW with weight decay 0.05, 500 linear warm-up
#   iterations from 1e-6) with the RetinaNet protocol of the field: lr 1e-4 (PVT's), mmdet's
#   RetinaNet R-50 FPN model (FPN from stage 1, extra convs on its input, 5 levels), COCO data
#   at 1333x800, steps at epochs 8 and 11, batch 16 = 8 GPUs x 2; auto_scale_lr with the total
#   batch of the recipe, off as in mmdet (--auto-scale-lr scales the lr to another total batch);
#   without CUDA the tools build BN for SyncBN.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='EfficientFormerV2',
        arch='s0',
        resolution=800,
        bias_mode='official',
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False),
    neck=dict(in_channels=[32, 48, 96, 176]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]

auto_scale_lr = dict(enable=False, base_batch_size=16)
