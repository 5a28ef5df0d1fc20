# Semantic FPN on ADE20K 512x512 with an EdgeViT backbone. Leaf configs set the arch.
# Official: EdgeViT publishes no dense configs; its paper follows the PVT protocol, taken here
#   from PVT's configs (whai362/PVT segmentation/): mmseg's FPN model (FPN neck, FPNHead 128
#   channels, dropout 0.1, 150 classes) and ADE20K data (crop 512 from a 0.5-2.0 resize of
#   (2048, 512), flip, photometric distortion); AdamW lr 2e-4, weight decay 1e-4; poly power 0.9
#   to 0; 40k iterations at batch 32 = 8 GPUs x 4; single-scale whole-image test with sides
#   resized to a multiple of 32 (AlignResize); backbone drop path 0.1.
# Ours: mmseg 1.x syntax (ResizeToMultiple after Resize for AlignResize); the local-aggregation
#   BatchNorms (PVT has none) train on each GPU's 4 images; auto_scale_lr with the total batch
#   of the recipe, off as in mmdet (--auto-scale-lr scales the lr to another total batch).
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='EdgeViT',
        arch='xxs',
        drop_path_rate=0.1,
        norm_eval=False),
    neck=dict(in_channels=[36, 72, 144, 288]))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000))

auto_scale_lr = dict(enable=False, base_batch_size=32)
