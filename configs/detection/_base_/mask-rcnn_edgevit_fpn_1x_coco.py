# Mask R-CNN 1x COCO with an EdgeViT backbone: the PVT protocol the EdgeViT paper follows
# (AdamW lr 2e-4, weight decay 1e-4, FPN 5 levels, 12 epochs, batch 16 = 8 GPUs x 2, 1333x800).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='EdgeViT',
        arch='xxs',
        drop_path_rate=0.1,  # PVT's detection backbones
        out_indices=(0, 1, 2, 3),
        norm_eval=True,  # 2 images per GPU: keep the BNs' statistics
        init_cfg=None),
    neck=dict(in_channels=[36, 72, 144, 288]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))

auto_scale_lr = dict(enable=True, base_batch_size=16)
