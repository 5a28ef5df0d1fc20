# EdgeViT-XXS Semantic FPN ADE20K 512x512.
# Official: the PVT protocol the EdgeViT paper follows (EdgeViT has no dense configs).
# Our choices are listed in the base's header.
_base_ = './_base_/fpn_edgevit_8xb4-40k_ade20k-512x512.py'

# ImageNet-1k initialisation of the backbone: EdgeViT-XXS checkpoint in the official saic-fi/edgevit
#   layout, EasyCV's (ClsEvaluator_neck_top1_best.pth, the only published EdgeViT weights; EasyCV
#   trained with layer_norm_eps=1e-8, which the backbone takes to match it exactly), or ours.
# None trains from scratch (the backbone logs a warning); on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint = None

model = dict(
    backbone=dict(
        arch='xxs',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[36, 72, 144, 288]))
