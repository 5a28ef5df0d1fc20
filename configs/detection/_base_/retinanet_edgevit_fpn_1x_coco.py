# RetinaNet 1x COCO with an EdgeViT backbone. Leaf configs set the arch.
# Official: EdgeViT publishes no dense configs; its paper follows the PVT protocol, taken here
#   from PVT's configs (whai362/PVT detection/): mmdet's RetinaNet R-50 FPN model (FPN from
#   stage 1, extra convs on its input, 5 levels), COCO data at 1333x800 and 1x schedule (500
#   linear warm-up iterations from 0.001, steps at epochs 8 and 11); AdamW lr 1e-4, weight decay
#   1e-4; batch 16 = 8 GPUs x 2; backbone drop path 0.1.
# Ours: mmdet 3.x syntax; the local-aggregation BatchNorms (PVT has none) in eval, since 2
#   images per GPU are too few for batch statistics; auto_scale_lr with the total batch of the
#   recipe, off as in mmdet (--auto-scale-lr scales the lr to another total batch).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='EdgeViT',
        arch='xxs',
        drop_path_rate=0.1,
        norm_eval=True),
    neck=dict(in_channels=[36, 72, 144, 288]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))

auto_scale_lr = dict(enable=False, base_batch_size=16)
