"""EfficientFormerV2 checkpoint layouts (data; see :mod:`backbones.checkpoints.layouts`).

Our parameter names are timm's ``efficientformerv2_*`` names, with the attention biases in
a ``bias`` sub-module; the official snap-research/EfficientFormer code names its stages
``network.{i}``: ``network[2s]`` holds stage ``s``'s blocks and ``network[2s-1]`` the
downsampling in front of stage ``s``.
"""
import re

from .layouts import MMPRETRAIN_RULES, Layout, register_layout

FAMILY = 'EfficientFormerV2'


def _network(m: re.Match) -> str:
    index = int(m.group(1))
    return f'stages.{index // 2}.blocks.' if index % 2 == 0 else f'stages.{index // 2 + 1}.downsample.'


_ATTENTION = r'\.(token_mixer|attn)\.'
OFFICIAL_RULES = (
    (r'^patch_embed\.0\.', 'stem.conv1.conv.'), (r'^patch_embed\.1\.', 'stem.conv1.bn.'),
    (r'^patch_embed\.3\.', 'stem.conv2.conv.'), (r'^patch_embed\.4\.', 'stem.conv2.bn.'),
    (r'^network\.(\d+)\.', _network),
    # the downsampling conv + norm in front of a stage
    (r'\.downsample\.(?:proj|conv)\.', '.downsample.conv.conv.'),
    (r'\.downsample\.(?:norm|bn)\.', '.downsample.conv.bn.'),
    # attention: nn.Sequential(conv, bn) members, proj = Sequential(act, conv, bn)
    (_ATTENTION + r'(q|k|v|v_local|stride_conv)\.0\.', r'.\1.\2.conv.'),
    (_ATTENTION + r'(q|k|v|v_local|stride_conv)\.1\.', r'.\1.\2.bn.'),
    (_ATTENTION + r'proj\.1\.', r'.\1.proj.conv.'),
    (_ATTENTION + r'proj\.2\.', r'.\1.proj.bn.'),
    (r'\.attn\.q\.local\.0\.', '.attn.q.local.'),
    (r'\.attn\.q\.proj\.0\.', '.attn.q.proj.conv.'),
    (r'\.attn\.q\.proj\.1\.', '.attn.q.proj.bn.'),
    (r'\.attention_biases(?:_seg)?$', '.bias.attention_biases'),
    # MLP block members
    (r'\.layer_scale_1$', '.ls1.gamma'), (r'\.layer_scale_2$', '.ls2.gamma'),
    (r'\.mlp\.fc1\.', '.mlp.fc1.conv.'), (r'\.mlp\.norm1\.', '.mlp.fc1.bn.'),
    (r'\.mlp\.mid\.', '.mlp.mid.conv.'), (r'\.mlp\.mid_norm\.', '.mlp.mid.bn.'),
    (r'\.mlp\.fc2\.', '.mlp.fc2.conv.'), (r'\.mlp\.norm2\.', '.mlp.fc2.bn.'),
    (r'^dist_head\.', 'head_dist.'),
)
#: index buffers are derived from the resolution; a loader recomputes them
INDEX_BUFFERS = r'attention_bias_idxs(?:_seg)?$'
#: layer scales are (C, 1, 1) officially, vectors here
LAYER_SCALES = ((r'\.ls[12]\.gamma$', lambda v: v.flatten()),)


def _official(sd) -> bool:
    return any(k.startswith(('patch_embed.', 'network.')) for k in sd)


def _dense(sd) -> bool:
    return any(k.endswith('attention_biases_seg') for k in sd)


# detection/backbonev2.py (fork_feat): the tables in use are `attention_biases_seg`; the 224
# `attention_biases` it also keeps as buffers are never read by its forward
register_layout(Layout(
    name='efficientformerv2-official-dense', family=FAMILY, priority=30, rules=OFFICIAL_RULES,
    drop=(INDEX_BUFFERS, r'\.attention_biases$'), values=LAYER_SCALES,
    matches=lambda sd: _official(sd) and _dense(sd)))

# models/efficientformer_v2.py (ImageNet classifier, e.g. eformer_s0_450.pth)
register_layout(Layout(
    name='efficientformerv2-official-classification', family=FAMILY, priority=29, rules=OFFICIAL_RULES,
    drop=(INDEX_BUFFERS,), values=LAYER_SCALES, classification=True,
    matches=lambda sd: _official(sd) and not _dense(sd)))

# timm's efficientformerv2_* (and ours): the same names, tables directly in the attention
_TIMM_RULES = ((r'(?<!\.bias)\.attention_biases$', '.bias.attention_biases'),)


def _ours_or_timm(sd) -> bool:
    return any(k.startswith('stem.conv1.') for k in sd)


register_layout(Layout(
    name='efficientformerv2-classification', family=FAMILY, priority=11, rules=_TIMM_RULES,
    drop=(INDEX_BUFFERS,), classification=True,
    matches=lambda sd: _ours_or_timm(sd) and any(k.startswith('head.') for k in sd)))

register_layout(Layout(
    name='efficientformerv2', family=FAMILY, priority=10, rules=_TIMM_RULES, drop=(INDEX_BUFFERS,),
    matches=_ours_or_timm))

# a classifier trained with configs/classification/ (mmpretrain): our names under ``backbone.``,
# the head's BatchNorm and linear layers (with the distillation head) under ``head.``
register_layout(Layout(
    name='efficientformerv2-mmpretrain', family=FAMILY, priority=31, classification=True, rules=MMPRETRAIN_RULES,
    drop=(INDEX_BUFFERS,),
    matches=lambda sd: any(k.startswith('head.head.') for k in sd) and any(k.startswith('backbone.stem.conv1.')
                                                                            for k in sd)))
