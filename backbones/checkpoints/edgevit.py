"""EdgeViT checkpoint layouts (data; see :mod:`backbones.checkpoints.layouts`)."""
from .layouts import MMPRETRAIN_RULES, Layout, register_layout, stage_rule

FAMILY = 'EdgeViT'

#: saic-fi/edgevit ``src/edgevit.py``: ``patch_embed{s}.``, ``blocks{s}.{b}.LocalAgg.`` /
#: ``.SelfAttn.``; the classifier's final BatchNorm ``norm`` and ``head`` keep their names
OFFICIAL_RULES = (
    stage_rule(r'^patch_embed(\d)\.', 'stages.{stage}.downsample.'),
    stage_rule(r'^blocks(\d)\.(\d+)\.LocalAgg\.attn\.', 'stages.{stage}.blocks.{1}.local_agg.dw_conv.'),
    stage_rule(r'^blocks(\d)\.(\d+)\.LocalAgg\.', 'stages.{stage}.blocks.{1}.local_agg.'),
    stage_rule(r'^blocks(\d)\.(\d+)\.SelfAttn\.attn\.LocalProp\.',
               'stages.{stage}.blocks.{1}.global_attn.attn.local_prop.'),
    stage_rule(r'^blocks(\d)\.(\d+)\.SelfAttn\.', 'stages.{stage}.blocks.{1}.global_attn.'),
)

register_layout(Layout(
    name='edgevit-official', family=FAMILY, priority=20, rules=OFFICIAL_RULES, classification=True,
    matches=lambda sd: any(k.startswith(('patch_embed1.', 'blocks1.')) for k in sd)))

register_layout(Layout(
    name='edgevit', family=FAMILY, priority=10,
    matches=lambda sd: any('.global_attn.' in k or '.local_agg.' in k for k in sd)))

# alibaba/EasyCV's classifier (the only published EdgeViT weights): ``Classification`` keeps
# the official EdgeViT names under ``backbone.`` (with the final BatchNorm ``norm``) and its
# ``ClsHead`` linear as ``head_0.fc_cls``; saved under ``state_dict`` beside ``meta`` and
# ``optimizer``, with the EMA weights when EMA was on. Its blocks' LayerNorms use eps 1e-8:
# ``EdgeViT(layer_norm_eps=1e-8)`` reproduces its outputs exactly (see the README).
register_layout(Layout(
    name='edgevit-easycv', family=FAMILY, priority=25, classification=True,
    rules=((r'^backbone\.', ''), (r'^head_0\.fc_cls\.', 'head.')) + OFFICIAL_RULES,
    matches=lambda sd: any(k.startswith(('backbone.patch_embed1.', 'backbone.blocks1.')) for k in sd)))

# a classifier trained with configs/classification/ (mmpretrain): our names under ``backbone.``,
# the head's BatchNorm and linear layers under ``head.``
register_layout(Layout(
    name='edgevit-mmpretrain', family=FAMILY, priority=26, classification=True, rules=MMPRETRAIN_RULES,
    matches=lambda sd: any(k.startswith('head.head.') for k in sd)
    and any(k.startswith('backbone.stages.') and ('.global_attn.' in k or '.local_agg.' in k) for k in sd)))
