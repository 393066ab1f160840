"""Deformable split attention (DCNv1/DCNv2 on torchvision.ops.deform_conv2d).

The numerics are checked against a loop-by-loop bilinear-sampling reference written from
detectron2's ``ModulatedDeformConv`` kernel (``deform_conv_cuda_kernel.cu``:
``modulated_deformable_im2col_gpu_kernel`` + ``dmcn_im2col_bilinear``), which the pure-Python
detectron2 wheel here cannot run itself (it has no compiled ``_C``).
"""

import copy
import itertools
import math
import os

import pytest
import torch

from detection_helpers import TINY, train_net_args
from resnest_dense.layers import SplitAttentionConv2d
from resnest_dense.layers.deform_conv import deform_conv_from_offsets, offset_channels
from resnest_dense.modeling.backbone.resnest import ResNeStBottleneckBlock, build_resnest
from resnest_dense.utils.fast_inference import optimize_for_inference

DCN_FASTER = "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.yaml"


def _bilinear(img, h, w):
    """detectron2's ``dmcn_im2col_bilinear``: corners outside the image count as zero."""
    height, width = img.shape
    if not (-1 < h < height and -1 < w < width):
        return img.new_zeros(())
    h0, w0 = math.floor(h), math.floor(w)
    lh, lw = h - h0, w - w0
    out = img.new_zeros(())
    for hh, ww, wt in (
        (h0, w0, (1 - lh) * (1 - lw)),
        (h0, w0 + 1, (1 - lh) * lw),
        (h0 + 1, w0, lh * (1 - lw)),
        (h0 + 1, w0 + 1, lh * lw),
    ):
        if 0 <= hh < height and 0 <= ww < width:
            out = out + wt * img[hh, ww]
    return out


def reference_modulated_deform_conv(x, offset, mask, weight, stride, padding, dilation, dg):
    """The im2col formula of detectron2's modulated deformable conv, one output at a time.

    ``offset``: ``(B, 2 * dg * K, Ho, Wo)``, ``(dy, dx)`` per tap, deformable group major;
    ``mask``: ``(B, dg * K, Ho, Wo)`` (already through the sigmoid) or None for DCNv1.
    """
    b, cin, _, _ = x.shape
    cout, cin_g, kh, kw = weight.shape
    groups = cin // cin_g
    ho, wo = offset.shape[2:]
    out = x.new_zeros(b, cout, ho, wo)
    ch_per_dg = cin // dg
    for n, co, oy, ox in itertools.product(range(b), range(cout), range(ho), range(wo)):
        g = co // (cout // groups)
        acc = x.new_zeros(())
        for ci_local, i, j in itertools.product(range(cin_g), range(kh), range(kw)):
            ci = g * cin_g + ci_local
            d = ci // ch_per_dg
            tap = i * kw + j
            dy = offset[n, d * 2 * kh * kw + 2 * tap, oy, ox]
            dx = offset[n, d * 2 * kh * kw + 2 * tap + 1, oy, ox]
            h = oy * stride - padding + i * dilation + dy
            w = ox * stride - padding + j * dilation + dx
            m = 1.0 if mask is None else mask[n, d * kh * kw + tap, oy, ox]
            acc = acc + m * weight[co, ci_local, i, j] * _bilinear(x[n, ci], float(h), float(w))
        out[n, co, oy, ox] = acc
    return out


@pytest.mark.parametrize(
    "modulated,dg,groups,stride,dilation",
    [(True, 1, 1, 1, 1), (True, 2, 2, 2, 1), (False, 2, 1, 1, 2), (True, 1, 2, 1, 2)],
)
def test_torchvision_op_matches_detectron2_formula(modulated, dg, groups, stride, dilation):
    torch.manual_seed(0)
    cin, cout, size = 4, 4, 5
    x = torch.randn(1, cin, size, size, dtype=torch.float64)
    weight = torch.randn(cout, cin // groups, 3, 3, dtype=torch.float64)
    out_size = (size + 2 * dilation - 2 * dilation - 1) // stride + 1
    n = offset_channels(3, dg, modulated)
    # Offsets of up to ~2 px (fractional, some samples fall outside the image).
    offset_mask = 1.5 * torch.randn(1, n, out_size, out_size, dtype=torch.float64)
    ours = deform_conv_from_offsets(
        x, offset_mask, weight, None, (stride,) * 2, (dilation,) * 2, (dilation,) * 2, modulated
    )
    taps = 9 * dg
    mask = torch.sigmoid(offset_mask[:, 2 * taps :]) if modulated else None
    ref = reference_modulated_deform_conv(
        x, offset_mask[:, : 2 * taps], mask, weight, stride, dilation, dilation, dg
    )
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    # Fractional offsets away from integers: bilinear sampling is not differentiable at them.
    offset_mask = (0.3 + 0.4 * torch.rand(1, 27, 4, 4, dtype=torch.float64)).requires_grad_()

    def fn(x, offset_mask, weight, bias):
        return deform_conv_from_offsets(x, offset_mask, weight, bias, (1, 1), (1, 1), (1, 1), True)

    assert torch.autograd.gradcheck(fn, (x, offset_mask, weight, bias), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("modulated", [True, False])
@pytest.mark.parametrize("radix,stride,dg", [(2, 1, 1), (2, 2, 2), (1, 1, 2)])
def test_zero_offsets_equal_the_plain_layer(modulated, radix, stride, dg):
    """Zero offsets sample the regular grid; the mask sigmoid(0) = 0.5 halves the conv."""
    torch.manual_seed(0)
    kwargs = dict(stride=stride, radix=radix, cardinality=1, norm="BN")
    plain = SplitAttentionConv2d(16, 16, **kwargs).eval()
    deform = SplitAttentionConv2d(16, 16, deformable=True, deform_modulated=modulated, **kwargs)
    deform.load_state_dict(plain.state_dict())
    deform.eval()
    x = torch.randn(2, 16, 9, 9)
    out = plain(x)
    offsets = torch.zeros(2, offset_channels(3, dg, modulated), *out.shape[2:])
    if modulated:
        with torch.no_grad():
            deform.conv.weight.mul_(2)  # mask 0.5 * weight 2 = the plain conv
    torch.testing.assert_close(deform(x, offsets), out, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="conv2_offset"):
        deform(x)
    with pytest.raises(ValueError, match="deformable=True"):
        plain(x, offsets)


@pytest.mark.parametrize("stride,avd_first", [(1, False), (2, False), (2, True)])
def test_fresh_deform_block_is_the_plain_block_with_half_mask(stride, avd_first):
    """A new block's zero-initialised conv2_offset gives zero offsets and mask 0.5."""
    torch.manual_seed(0)
    kwargs = dict(bottleneck_channels=16, stride=stride, avd_first=avd_first)
    deform = ResNeStBottleneckBlock(16, 32, deform=True, deform_modulated=True, **kwargs).eval()
    assert not deform.conv2_offset.weight.any() and not deform.conv2_offset.bias.any()
    plain = ResNeStBottleneckBlock(16, 32, **kwargs).eval()
    state = {k: v for k, v in deform.state_dict().items() if "conv2_offset" not in k}
    state["conv2.conv.weight"] = state["conv2.conv.weight"] * 0.5
    plain.load_state_dict(state)
    x = torch.randn(2, 16, 12, 12)
    torch.testing.assert_close(deform(x), plain(x), rtol=1e-5, atol=1e-5)


def test_fork_parameter_layout():
    """Names/shapes of the fork's DeformBottleneckBlock with SplAtConv2d_dcn (radix 2)."""
    block = ResNeStBottleneckBlock(
        256, 512, bottleneck_channels=128, stride=2, deform=True, deform_modulated=True,
        deform_num_groups=2,
    )  # fmt: skip
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    # conv2_offset: Conv2d(C, 27 * dg, 3, groups=dg) with bias; conv2.conv: the grouped 3x3
    # conv of split attention (bias=False), under the same name as in the plain block.
    assert shapes["conv2_offset.weight"] == (54, 64, 3, 3)
    assert shapes["conv2_offset.bias"] == (54,)
    assert shapes["conv2.conv.weight"] == (256, 64, 3, 3)
    assert "conv2.conv.bias" not in shapes
    plain = ResNeStBottleneckBlock(256, 512, bottleneck_channels=128, stride=2)
    extra = set(shapes) - set(plain.state_dict())
    assert extra == {"conv2_offset.weight", "conv2_offset.bias"}
    v1 = ResNeStBottleneckBlock(64, 64, bottleneck_channels=64, deform=True)
    assert tuple(v1.conv2_offset.weight.shape) == (18, 64, 3, 3)


def _dcn_backbone():
    torch.manual_seed(0)
    model = build_resnest(
        depth=14, stem_width=16, out_features=["res2", "res3", "res4", "res5"],
        out_channels=64, deform_on_per_stage=(False, True, True, True), deform_modulated=True,
        deform_num_groups=2,
    )  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ResNeStBottleneckBlock) and m.conv2_offset is not None:
                m.conv2_offset.weight.normal_(std=0.05)  # real offsets, not the zero init
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(std=0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_fast_path_folding_stays_exact_with_dcn():
    model = _dcn_backbone()
    assert model.res2[0].conv2_offset is None and model.res3[0].conv2_offset is not None
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        fast = optimize_for_inference(copy.deepcopy(model))
        got = fast(x.contiguous(memory_format=torch.channels_last))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)


def test_dcn_block_scripts_and_backbone_trains_a_step():
    model = _dcn_backbone()
    block = model.res3[0]
    x = torch.randn(1, block.in_channels, 16, 16)
    scripted = torch.jit.script(block)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), block(x))
    model.train()
    loss = sum(v.mean() for v in model(torch.randn(2, 3, 64, 64)).values())
    loss.backward()
    grad = model.res4[0].conv2_offset.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.usefixtures("toy_set")
def test_tiny_dcn_faster_rcnn_trains_and_evaluates(train_net, tmp_path):
    out = tmp_path / "run"
    # The released recipe with SyncBN (BN on one CPU process), DCNv2 on res3-res5, 2 groups.
    results = train_net.main(train_net_args(DCN_FASTER, *TINY, "OUTPUT_DIR", out))
    assert (out / "model_final.pth").is_file()
    assert {"AP", "AP50"} <= set(results["bbox"])
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert "backbone.bottom_up.res3.0.conv2_offset.weight" in state
    assert "backbone.bottom_up.res2.0.conv2_offset.weight" not in state
    ev = train_net.main(
        train_net_args(
            DCN_FASTER, *TINY, "OUTPUT_DIR", tmp_path / "ev", "MODEL.WEIGHTS",
            os.fspath(out / "model_final.pth"), eval_only=True,
        )
    )  # fmt: skip
    assert {"AP", "AP50"} <= set(ev["bbox"])


FORK_DCN_YAML = """\
_BASE_: "{base}"
MODEL:
  BACKBONE:
    NAME: "build_resnet_fpn_backbone"
  RESNETS:
    DEPTH: 50
    STRIDE_IN_1X1: False
    RADIX: 2
    NORM: "SyncBN"
    DEFORM_ON_PER_STAGE: [False, True, True, True]
    DEFORM_MODULATED: True
    DEFORM_NUM_GROUPS: 2
"""


def test_fork_style_dcn_yaml_builds_deformable_resnest(tmp_path):
    """The fork's way of writing a DCN config (detectron2's builder name + RADIX 2)."""
    from detectron2.modeling import build_model

    from resnest_dense.config import get_resnest_cfg
    from resnest_dense.model_zoo import get_config_file

    yaml = tmp_path / "fork_dcn.yaml"
    yaml.write_text(FORK_DCN_YAML.format(base=get_config_file("Base-RCNN-FPN-ResNeSt.yaml")))
    cfg = get_resnest_cfg(str(yaml), ["MODEL.DEVICE", "meta"])
    assert cfg.MODEL.BACKBONE.NAME == "build_resnest_fpn_backbone"
    with torch.device("meta"):
        bottom_up = build_model(cfg).backbone.bottom_up
    assert [b.conv2.deformable for b in bottom_up.res2] == [False] * 3
    for stage in (bottom_up.res3, bottom_up.res4, bottom_up.res5):
        assert all(b.conv2.deformable and b.conv2_offset.groups == 2 for b in stage)
