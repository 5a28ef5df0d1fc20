# EfficientFormerV2-S1 ImageNet-1K pretraining, 300 epochs on 8 GPUs x 128 images.
# Official: snap-research/EfficientFormer main.py --model efficientformerv2_s1 (the settings and
# their sources, and our choices, are listed in the bases' headers).
_base_ = './_base_/efficientformerv2_8xb128-300e_in1k.py'

model = dict(backbone=dict(arch='s1'), head=dict(in_channels=224))
