# EfficientFormerV2-L Semantic FPN ADE20K 512x512.
# Official: snap-research/EfficientFormer segmentation/configs/sem_fpn/fpn_efficientformerv2_l_ade20k_40k.py.
# Our choices are listed in the base's header.
_base_ = './_base_/fpn_efficientformerv2_8xb4-40k_ade20k-512x512.py'

# ImageNet-1k initialisation of the backbone: EfficientFormerV2-L checkpoint: the official 450-epoch
#   eformer_l_450.pth, timm's efficientformerv2_l.snap_dist_in1k, or ours.
# None trains from scratch (the backbone logs a warning); on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint = None

model = dict(
    backbone=dict(
        arch='l',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[40, 80, 192, 384]))
