"""Dilated ResNeSt / ResNet backbones: output strides, reference dilation and avd pools."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from torch import nn

from resnest_dense.modeling.backbone.dilated import (
    build_resnest_dilated_backbone,
    stage_dilations_for_output_stride,
)
from resnest_dense.modeling.backbone.resnest import ResNeStBottleneckBlock

from segmentation_helpers import segmentation_cfg, tiny_cfg

# (stage, first-block stride, first-block dilation, later-block dilation) per output stride.
EXPECTED = {
    8: {"res3": (2, 1, 1), "res4": (1, 1, 2), "res5": (1, 2, 4)},
    16: {"res3": (2, 1, 1), "res4": (2, 1, 1), "res5": (1, 1, 2)},
}


def _conv3x3(block) -> nn.Conv2d:
    return block.conv2.conv if isinstance(block, ResNeStBottleneckBlock) else block.conv2


@pytest.mark.parametrize("backbone", ["resnest", "resnet"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_strides(backbone, output_stride):
    cfg = tiny_cfg(
        backbone, output_stride, ["MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"]]
    )
    model = build_backbone(cfg).eval()
    shapes = model.output_shape()
    expected = {"res2": 4, "res3": 8, "res4": min(16, output_stride), "res5": output_stride}
    assert {k: v.stride for k, v in shapes.items()} == expected
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    for name, feature in out.items():
        assert feature.shape[-2:] == (64 // expected[name], 96 // expected[name]), name
        assert feature.shape[1] == shapes[name].channels


@pytest.mark.parametrize("backbone", ["resnest", "resnet"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_reference_dilation(backbone, output_stride):
    model = build_backbone(tiny_cfg(backbone, output_stride, ["MODEL.RESNETS.DEPTH", 50]))
    for stage, (stride, first_dilation, dilation) in EXPECTED[output_stride].items():
        blocks = list(getattr(model, stage).children())
        assert blocks[0].stride == stride
        assert _conv3x3(blocks[0]).dilation == (first_dilation, first_dilation)
        assert _conv3x3(blocks[0]).padding == (first_dilation, first_dilation)
        for block in blocks[1:]:
            assert _conv3x3(block).dilation == (dilation, dilation)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_official_avd_pools(output_stride):
    """The first block of res3/res4/res5 has an avd pool; stride 1 where the stage is dilated."""
    model = build_backbone(tiny_cfg("resnest", output_stride, ["MODEL.RESNETS.DEPTH", 50]))
    for stage in ("res2", "res3", "res4", "res5"):
        blocks = list(getattr(model, stage).children())
        pool = blocks[0].avd_last
        if stage == "res2":
            assert pool is None
        else:
            assert isinstance(pool, nn.AvgPool2d)
            assert (pool.kernel_size, pool.padding) == (3, 1)
            assert pool.stride == blocks[0].stride == EXPECTED[output_stride][stage][0]
        assert all(b.avd_last is None and b.avd_first is None for b in blocks[1:])
        if blocks[0].stride == 1 and stage != "res2":
            # The dilated stage's shortcut is a stride-1 1x1 conv without a pooling layer.
            assert blocks[0].shortcut_pool is None and blocks[0].shortcut.stride == (1, 1)


def test_avd_pool_hand_computed():
    """A stride-1 AvgPool(3, 1, 1) (zero padding counted) on ones: corners 4/9, edges 6/9."""
    model = build_backbone(tiny_cfg("resnest", 8))
    pool = model.res4[0].avd_last
    expected = torch.tensor([[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]) / 9
    assert torch.allclose(pool(torch.ones(1, 1, 3, 3))[0, 0], expected)


def test_dilated_first_block_matches_manual_reference():
    """res4.0 at OS8 = conv1 -> split-attention conv (dilation 1) -> avg_pool(3, 1, 1) -> conv3,
    plus the 1x1 shortcut; without the pool (timm / mmseg behaviour) the output differs."""
    model = build_backbone(tiny_cfg("resnest", 8)).eval()
    block = model.res4[0]
    x = torch.randn(2, block.in_channels, 12, 10)
    with torch.no_grad():
        out = block(x)
        branch = block.conv2(F.relu(block.conv1(x)))
        shortcut = block.shortcut(x)
        manual = F.relu(block.conv3(F.avg_pool2d(branch, 3, 1, 1)) + shortcut)
        no_pool = F.relu(block.conv3(branch) + shortcut)
    assert out.shape == (2, block.out_channels, 12, 10)
    torch.testing.assert_close(out, manual)
    assert not torch.allclose(out, no_pool, atol=1e-3)


def test_stage_dilations_table_and_errors():
    assert stage_dilations_for_output_stride(8) == (1, 1, 2, 4)
    assert stage_dilations_for_output_stride(16) == (1, 1, 1, 2)
    with pytest.raises(ValueError, match="OUTPUT_STRIDE"):
        stage_dilations_for_output_stride(4)
    cfg = tiny_cfg("resnest", 8, ["MODEL.RESNETS.RES5_DILATION", 2])
    with pytest.raises(ValueError, match="RES5_DILATION"):
        build_resnest_dilated_backbone(cfg, ShapeSpec(channels=3))
    cfg = tiny_cfg("resnet", 8, ["MODEL.RESNETS.RADIX", 2])
    with pytest.raises(ValueError, match="plain ResNet"):
        build_backbone(cfg)


def test_resnet50s_baseline_layout():
    """The R-50 baseline is Encoding's resnet50s: deep stem 64-64-128, 3x3 stride, no avd."""
    cfg = segmentation_cfg(
        "configs/ADE20K-SemanticSegmentation/deeplabv3_R_50_OS8_syncbn_120ep.yaml",
        ["MODEL.RESNETS.NORM", "BN"],
    )
    model = build_backbone(cfg)
    assert [model.stem.conv1_1.out_channels, model.stem.conv1_2.out_channels] == [64, 64]
    assert model.stem.out_channels == 128 and model.res2[0].in_channels == 128
    assert model.res3[0].conv2.stride == (2, 2) and model.res3[0].conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert [len(getattr(model, f"res{i}")) for i in range(2, 6)] == [3, 4, 6, 3]
