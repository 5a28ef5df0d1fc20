# Semantic FPN on ADE20K 512x512 with an EdgeViT backbone: the PVT protocol the EdgeViT paper
# follows (AdamW lr 2e-4, weight decay 1e-4, 40k iterations at batch 32 = 8 GPUs x 4,
# poly power 0.9 to 0, FPN neck 4 levels + FPNHead 128 channels, dropout 0.1, 150 classes).
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='EdgeViT',
        arch='xxs',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[36, 72, 144, 288], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=4)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000))

auto_scale_lr = dict(enable=True, base_batch_size=32)
