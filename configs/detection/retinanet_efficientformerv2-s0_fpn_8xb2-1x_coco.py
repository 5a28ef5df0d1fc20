# EfficientFormerV2-S0 RetinaNet 1x COCO.
# No official recipe (the paper has no RetinaNet): our choice, described in the base.
_base_ = './_base_/retinanet_efficientformerv2_fpn_1x_coco.py'

# ImageNet-1k initialisation of the backbone: EfficientFormerV2-S0 checkpoint: the official 450-epoch
#   eformer_s0_450.pth, timm's efficientformerv2_s0.snap_dist_in1k, or ours.
# None trains from scratch (the backbone logs a warning); on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint = None

model = dict(
    backbone=dict(
        arch='s0',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[32, 48, 96, 176]))
