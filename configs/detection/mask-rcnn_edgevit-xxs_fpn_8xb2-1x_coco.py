_base_ = './_base_/mask-rcnn_edgevit_fpn_1x_coco.py'

# ImageNet-1k initialisation of the backbone: EdgeViT-XXS checkpoint (official saic-fi/edgevit layout, or ours).
# None trains from scratch (the backbone logs a warning).
checkpoint = None

model = dict(
    backbone=dict(
        arch='xxs',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint) if checkpoint else None),
    neck=dict(in_channels=[36, 72, 144, 288]))
