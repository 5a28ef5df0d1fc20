# EfficientFormerV2-S1 Mask R-CNN 1x COCO.
# Official: snap-research/EfficientFormer detection/configs/mask_rcnn_efficientformerv2_s1_fpn_1x_coco.py.
# Our choices are listed in the base's header.
_base_ = './_base_/mask-rcnn_efficientformerv2_fpn_1x_coco.py'

# ImageNet-1k initialisation of the backbone: EfficientFormerV2-S1 checkpoint: the official 450-epoch
#   eformer_s1_450.pth, timm's efficientformerv2_s1.snap_dist_in1k, or ours.
# None trains from scratch (the backbone logs a warning); on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint = None

model = dict(
    backbone=dict(
        arch='s1',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[32, 48, 120, 224]))
