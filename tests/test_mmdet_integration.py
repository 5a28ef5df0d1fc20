"""Our backbones inside real mmdet / mmseg models, and whole-model checkpoint loading."""
import textwrap

import pytest
import torch
from mmengine.config import Config

import backbones  # noqa: F401  (registers the backbones)


def _retinanet(tmp_path, backbone: str, in_channels):
    cfg_file = tmp_path / 'retinanet.py'
    cfg_file.write_text(textwrap.dedent(f"""
        _base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['backbones'], allow_failed_imports=False)
        model = dict(backbone=dict(_delete_=True, {backbone}), neck=dict(in_channels={list(in_channels)}))
    """))
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    return MODELS.build(Config.fromfile(str(cfg_file)).model)


def test_load_from_official_dense_detector_checkpoint(reference, tmp_path):
    """`load_from` / `tools/test.py` with an official mmdet 2.x EfficientFormerV2 checkpoint."""
    from mmengine.runner.checkpoint import load_checkpoint
    model = _retinanet(tmp_path, "type='EfficientFormerV2', arch='s0', resolution=512", (32, 48, 96, 176))
    official = {k: v.float() if v.is_floating_point() else v
                for k, v in reference('efficientformerv2_s0_dense512_biased.pt')['state_dict'].items()}
    others = {k: torch.randn_like(v) if v.is_floating_point() else v
              for k, v in model.state_dict().items() if not k.startswith('backbone.')}
    ckpt = {'state_dict': {**{'backbone.' + k: v for k, v in official.items()}, **others},
            'meta': {'mmdet_version': '2.19.0', 'CLASSES': ['a', 'b']}}
    path = tmp_path / 'official_retinanet.pth'
    torch.save(ckpt, path)
    load_checkpoint(model, str(path), map_location='cpu', strict=True)  # what load_from does
    bb = model.backbone
    assert torch.equal(bb.stem.conv1.conv.weight, official['patch_embed.0.weight'])
    assert torch.equal(bb.stages[2].blocks[5].token_mixer.bias.attention_biases,
                       official['network.4.5.token_mixer.attention_biases_seg'])
    assert torch.equal(bb.stages[3].blocks[0].ls2.gamma, official['network.6.0.layer_scale_2'].flatten())
    assert torch.equal(model.bbox_head.retina_cls.weight, others['bbox_head.retina_cls.weight'])
    # plain torch load_state_dict goes through the same conversion
    model2 = _retinanet(tmp_path, "type='EfficientFormerV2', arch='s0', resolution=512", (32, 48, 96, 176))
    model2.load_state_dict(ckpt['state_dict'], strict=True)
    assert torch.equal(model2.backbone.stem.conv1.conv.weight, official['patch_embed.0.weight'])


@pytest.mark.parametrize('backbone,channels', [
    ("type='EdgeViT', arch='xxs'", (36, 72, 144, 288)),
    ("type='EfficientFormerV2', arch='s0', resolution=800", (32, 48, 96, 176)),
])
def test_retinanet_builds_and_runs(tmp_path, backbone, channels):
    model = _retinanet(tmp_path, backbone, channels).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 97, 131))
    assert [f.shape[1] for f in feats] == [256] * 5
    assert tuple(feats[0].shape[-2:]) == (13, 17)  # stride 8 (FPN from stage 1)
