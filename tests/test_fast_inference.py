"""The inference fast path (BN folding + channels_last) equals the plain path in eval mode."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.roi_heads import build_box_head, build_mask_head

from resnest_dense import add_resnest_config
from resnest_dense.modeling.backbone.variants import variant_opts
from resnest_dense.utils import fold_batch_norms, optimize_for_inference

FEATURES = ["res2", "res3", "res4", "res5"]


def _randomize_norms(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if hasattr(m, "running_var") and m.running_var is not None:
            n = m.running_var.numel()
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _cfg(variant, norm, name="build_resnest_fpn_backbone"):
    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list(variant_opts(variant))
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = FEATURES
    cfg.MODEL.FPN.IN_FEATURES = FEATURES
    cfg.MODEL.FPN.NORM = norm
    return cfg


def _assert_close(got, want, tol=1e-4):
    for key in want:
        err = (got[key] - want[key]).abs().max() / want[key].abs().max().clamp(min=1e-12)
        assert err < tol, f"{key}: relative error {err:.2e}"


@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "SyncBN"])
@pytest.mark.parametrize(
    "variant",
    ["resnest14d"]
    + [
        pytest.param(v, marks=pytest.mark.slow)
        for v in ("resnest50d", "resnest50d_1s4x24d", "resnest50d_4s2x40d")
    ],
)
def test_backbone_fast_path_equals_plain(variant, norm):
    model = build_backbone(_cfg(variant, norm)).eval()
    _randomize_norms(model)
    fast = optimize_for_inference(copy.deepcopy(model))
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        want, got = model(x), fast(x)
    _assert_close(got, want)
    assert not any(
        isinstance(m, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)) for m in fast.modules()
    )


def test_heads_fold_and_match():
    cfg = _cfg("resnest14d", "BN")
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 4
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.NORM = "BN"
    cfg.MODEL.ROI_MASK_HEAD.NORM = "BN"
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
    box = build_box_head(cfg, ShapeSpec(channels=256, height=7, width=7)).eval()
    mask = build_mask_head(cfg, ShapeSpec(channels=256, height=14, width=14)).eval()
    for head, shape in [(box, (5, 256, 7, 7)), (mask, (5, 256, 14, 14))]:
        _randomize_norms(head)
        fast = copy.deepcopy(head)
        assert fold_batch_norms(fast) == 4
        x = torch.randn(*shape)
        with torch.no_grad():
            if head is mask:
                want, got = head.layers(x), fast.layers(x)
            else:
                want, got = head(x), fast(x)
        _assert_close({"out": got}, {"out": want})


def test_training_mode_norms_are_not_folded():
    model = build_backbone(_cfg("resnest14d", "BN")).train()
    num_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fold_batch_norms(model) == 0
    model.eval()
    # Every batch norm of the backbone follows a conv (or a split-attention fc1) and is folded.
    assert num_bn > 0 and fold_batch_norms(model) == num_bn
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_group_norm_left_alone():
    model = build_backbone(_cfg("resnest14d", "GN")).eval()
    num_gn = sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert fold_batch_norms(model) == 0
    assert num_gn > 0 and num_gn == sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
