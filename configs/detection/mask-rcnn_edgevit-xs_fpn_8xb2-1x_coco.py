# EdgeViT-XS Mask R-CNN 1x COCO.
# Official: the PVT protocol the EdgeViT paper follows (EdgeViT has no dense configs).
# Our choices are listed in the base's header.
_base_ = './_base_/mask-rcnn_edgevit_fpn_1x_coco.py'

# ImageNet-1k initialisation of the backbone: EdgeViT-XS checkpoint (official saic-fi/edgevit layout, or ours).
# None trains from scratch (the backbone logs a warning); on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint = None

model = dict(
    backbone=dict(
        arch='xs',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[48, 96, 240, 384]))
