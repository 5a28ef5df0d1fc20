# Mask R-CNN 1x COCO with an EfficientFormerV2 backbone. Leaf configs set the arch.
# Official (snap-research/EfficientFormer detection/configs and detection/backbonev2.py):
#   mmdet's Mask R-CNN R-50 FPN model, COCO instance data (1333x800, flip 0.5, pad to 32) and 1x
#   schedule; AdamW lr 2e-4, weight decay 0.05, no gradient clipping; steps at epochs 8 and 11
#   after 500 linear warm-up iterations from 1e-6; batch 16 = 8 GPUs x 2; the ImageNet
#   checkpoint's BatchNorms trained as SyncBN (with a checkpoint the official backbone converts
#   every BN to SyncBatchNorm, and its train() keeps only nn.BatchNorm2d in eval, which
#   SyncBatchNorm is not); dense attention biases for a base resolution of 800, starting at
#   zero.
# Ours: mmdet 3.x syntax; SyncBN also when training from scratch (the official backbone keeps
#   plain BN, frozen at its initial statistics, without a checkpoint); auto_scale_lr with the
#   total batch of the recipe, off as in mmdet (--auto-scale-lr scales the lr to another total
#   batch); without CUDA the tools build BN for SyncBN.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
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
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]

auto_scale_lr = dict(enable=False, base_batch_size=16)
