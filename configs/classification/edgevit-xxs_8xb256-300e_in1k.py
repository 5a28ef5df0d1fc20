# EdgeViT-XXS ImageNet-1K pretraining, 300 epochs on 8 GPUs x 256 images.
# Official: saic-fi/edgevit src/main.py --model edgevit_xxs (the settings and their sources, and
# our choices, are listed in the bases' headers).
_base_ = './_base_/edgevit_8xb256-300e_in1k.py'

model = dict(backbone=dict(arch='xxs'), head=dict(in_channels=288))
