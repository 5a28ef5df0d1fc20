# RetinaNet 1x COCO with an EdgeViT backbone: the PVT protocol the EdgeViT paper follows
# (AdamW lr 1e-4, weight decay 1e-4, FPN from stage 1 with extra convs on the input,
# 5 levels, 12 epochs, batch 16 = 8 GPUs x 2, 1333x800). Leaf configs set the arch.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='EdgeViT',
        arch='xxs',
        drop_path_rate=0.1,  # PVT's detection backbones
        out_indices=(0, 1, 2, 3),
        # 2 images per GPU are too few for batch statistics in the local-aggregation BNs
        norm_eval=True,
        init_cfg=None),
    neck=dict(in_channels=[36, 72, 144, 288], start_level=1, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))

# lr above is for a total batch of 16; on other GPU counts it is scaled linearly
auto_scale_lr = dict(enable=True, base_batch_size=16)
