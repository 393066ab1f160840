"""ResNeSt backbones: equality with timm, shapes, freezing, norms, export, errors."""

import copy
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm, ShapeSpec
from detectron2.modeling import build_backbone

from resnest_dense import add_resnest_config, resolve_fork_backbone_name
from resnest_dense.checkpoint import (
    CheckpointMismatchError,
    build_variant_backbone,
    check_state_dict,
    convert_resnest_state_dict,
)
from resnest_dense.modeling.backbone.variants import variant_opts

timm = pytest.importorskip("timm")

TIMM_VARIANTS = [
    "resnest14d",
    "resnest26d",
    "resnest50d",
    pytest.param("resnest101e", marks=pytest.mark.slow),
    pytest.param("resnest200e", marks=pytest.mark.slow),
    pytest.param("resnest269e", marks=pytest.mark.slow),
    pytest.param("resnest50d_1s4x24d", marks=pytest.mark.slow),
    pytest.param("resnest50d_4s2x40d", marks=pytest.mark.slow),
]
FEATURES = ["res2", "res3", "res4", "res5"]


def _randomize_bn(model: torch.nn.Module) -> None:
    """Give every BN non-trivial statistics so eval-mode comparisons exercise them.

    The last BN of each residual branch gets a small scale (as trained ResNets have), so deep
    networks stay well conditioned and float rounding is not amplified across 100+ blocks.
    """
    g = torch.Generator().manual_seed(1)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            last = name.endswith(("bn3", "conv3.norm"))
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_((torch.rand(n, generator=g) + 0.5) * (0.2 if last else 1.0))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _cfg(variant: str = "resnest50d", **overrides):
    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list(variant_opts(variant))
    cfg.MODEL.RESNETS.OUT_FEATURES = FEATURES
    cfg.MODEL.FPN.IN_FEATURES = FEATURES
    cfg.MODEL.BACKBONE.NAME = "build_resnest_backbone"
    cfg.merge_from_list([x for item in overrides.items() for x in item])
    return cfg


@pytest.mark.parametrize("variant", TIMM_VARIANTS)
def test_equals_timm(variant):
    """Converted timm weights give timm's res2..res5 features (eval mode, 1e-4 relative)."""
    reference = timm.create_model(
        variant, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4)
    )
    classifier = timm.create_model(variant, pretrained=False)
    _randomize_bn(classifier)
    reference.load_state_dict(
        {k: v for k, v in classifier.state_dict().items() if not k.startswith("fc.")}
    )
    reference.eval()
    ours = build_variant_backbone(variant, norm="BN").eval()
    converted, dropped = convert_resnest_state_dict(classifier.state_dict())
    assert {"fc.weight", "fc.bias"} <= set(dropped)
    check_state_dict(converted, ours.state_dict())
    ours.load_state_dict(converted, strict=True)

    n_ours = sum(p.numel() for p in ours.parameters())
    n_timm = sum(p.numel() for n, p in classifier.named_parameters() if not n.startswith("fc."))
    assert n_ours == n_timm

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        got = ours(x)
        want = reference(x)
    for name, ref in zip(FEATURES, want):
        assert got[name].shape == ref.shape, name
        err = (got[name] - ref).abs().max() / ref.abs().max().clamp(min=1e-12)
        print(f"{variant} {name}: relative error {err:.2e}")
        assert err < 1e-4, f"{variant} {name}: relative error {err:.2e}"


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("build_resnest_backbone", {}),
        ("build_resnest_backbone", {"MODEL.RESNETS.RES5_DILATION": 2}),
        ("build_resnest_backbone", {"MODEL.RESNETS.DEEP_STEM": False, "MODEL.RESNETS.RADIX": 1}),
        ("build_resnest_fpn_backbone", {}),
        (
            "build_retinanet_resnest_fpn_backbone",
            {"MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5"]},
        ),
    ],
)
@pytest.mark.parametrize(
    "variant", ["resnest14d", pytest.param("resnest50d_4s2x40d", marks=pytest.mark.slow)]
)
def test_output_shape_matches_outputs(name, overrides, variant):
    cfg = _cfg(variant, **overrides)
    cfg.MODEL.BACKBONE.NAME = name
    model = build_backbone(cfg).eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        out = model(x)
    shapes = model.output_shape()
    assert set(out) == set(shapes)
    for key, spec in shapes.items():
        assert out[key].shape[1] == spec.channels, key
        expected = (math.ceil(128 / spec.stride), math.ceil(160 / spec.stride))
        assert tuple(out[key].shape[-2:]) == expected, key
    if name == "build_retinanet_resnest_fpn_backbone":
        assert sorted(out) == ["p3", "p4", "p5", "p6", "p7"]
    if overrides.get("MODEL.RESNETS.RES5_DILATION") == 2:
        assert shapes["res5"].stride == 16


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 5])
def test_freeze_at(freeze_at):
    cfg = _cfg("resnest14d", **{"MODEL.BACKBONE.FREEZE_AT": freeze_at, "MODEL.RESNETS.NORM": "BN"})
    model = build_backbone(cfg)
    parts = ["stem"] + FEATURES
    for idx, part in enumerate(parts):
        module = getattr(model, part)
        frozen = idx < freeze_at
        params = list(module.parameters())
        assert params and all(p.requires_grad != frozen for p in params), part
        has_frozen_bn = any(isinstance(m, FrozenBatchNorm2d) for m in module.modules())
        assert has_frozen_bn == frozen, part


@pytest.mark.parametrize("norm", ["FrozenBN", "BN", "SyncBN", "naiveSyncBN", "GN"])
def test_norms_train_step(norm):
    cfg = _cfg("resnest14d", **{"MODEL.RESNETS.NORM": norm, "MODEL.BACKBONE.FREEZE_AT": 0})
    model = build_backbone(cfg).train()
    # The configured norm is the one built, in the bottleneck and inside split attention.
    want = {"FrozenBN": FrozenBatchNorm2d, "BN": torch.nn.BatchNorm2d, "GN": torch.nn.GroupNorm,
            "SyncBN": torch.nn.SyncBatchNorm, "naiveSyncBN": NaiveSyncBatchNorm}[norm]  # fmt: skip
    block = model.res3[0]
    assert type(block.conv1.norm) is want and type(block.conv2.bn0) is want
    out = model(torch.randn(2, 3, 64, 64))
    loss = sum(v.float().pow(2).mean() for v in out.values())
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_batch_size_one_training():
    """BN with one image fails with a message that says what to change; FrozenBN works."""
    cfg = _cfg("resnest14d", **{"MODEL.BACKBONE.FREEZE_AT": 0})
    for norm in ["BN", "GN"]:
        cfg.MODEL.RESNETS.NORM = norm
        with pytest.raises(ValueError, match="more than one image per device.*NORM FrozenBN"):
            build_backbone(cfg).train()(torch.randn(1, 3, 64, 64))
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    out = build_backbone(cfg).train()(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 2048, 2, 2)


@pytest.mark.slow
def test_trace_and_onnx_fpn(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    cfg = _cfg("resnest50d", **{"MODEL.BACKBONE.NAME": "build_resnest_fpn_backbone"})
    model = build_backbone(cfg).eval()
    _randomize_bn(model)
    x = torch.randn(1, 3, 128, 128)
    names = sorted(model.output_shape())

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            out = self.m(x)
            return tuple(out[k] for k in names)

    wrapped = Wrapped(model).eval()
    with torch.no_grad():
        want = wrapped(x)
        traced = torch.jit.trace(wrapped, x)
        for a, b in zip(traced(x), want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    path = tmp_path / "resnest50_fpn.onnx"
    torch.onnx.export(
        wrapped, (x,), str(path), input_names=["image"], output_names=names, dynamo=False
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})
    for name, a, b in zip(names, got, want):
        err = abs(torch.from_numpy(a) - b).max() / b.abs().max()
        assert err < 1e-4, f"ONNX {name}: relative error {err:.2e}"


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.RESNETS.DEPTH", 34, "DEPTH=34 is not a ResNeSt depth"),
        ("MODEL.RESNETS.RADIX", 0, "RADIX must be >= 1, got 0"),
        ("MODEL.RESNETS.RES5_DILATION", 4, "RES5_DILATION must be 1 or 2, got 4"),
    ],
)
def test_bad_config_errors(key, value, message):
    cfg = _cfg("resnest14d", **{key: value})
    with pytest.raises(ValueError, match=message):
        build_backbone(cfg)


def test_checkpoint_of_other_architecture_is_rejected():
    torchvision = pytest.importorskip("torchvision")
    sd = torchvision.models.resnet50().state_dict()
    with pytest.raises(CheckpointMismatchError, match="not ResNeSt .*layer1.0.bn2.weight"):
        convert_resnest_state_dict(sd)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    with pytest.raises(CheckpointMismatchError, match="not ResNeSt .*names.*another architecture"):
        convert_resnest_state_dict(vit)


def test_shape_mismatch_is_named():
    sd = timm.create_model("resnest14d").state_dict()
    converted, _ = convert_resnest_state_dict(sd)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"shape mismatches: .*stem.conv1_1.norm.bias: \(32,\) vs expected \(64,\)",
    ):
        check_state_dict(converted, build_variant_backbone("resnest101e").state_dict())


def test_fork_yaml_uses_resnest_builder():
    """A fork-style config (d2 builder name + RADIX 2) builds ResNeSt, not a plain ResNet."""
    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list(["MODEL.RESNETS.RADIX", 2, "MODEL.RESNETS.STRIDE_IN_1X1", False])
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    resolve_fork_backbone_name(cfg)
    assert cfg.MODEL.BACKBONE.NAME == "build_resnest_fpn_backbone"
    plain = copy.deepcopy(cfg)
    plain.MODEL.RESNETS.RADIX = 1
    plain.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    assert resolve_fork_backbone_name(plain).MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone"
    plain.MODEL.RESNETS.AVD = True
    with pytest.raises(ValueError, match="detectron2's ResNet has no deep stem, avd or avg_down"):
        resolve_fork_backbone_name(plain)


def test_add_resnest_config_defaults_and_idempotent():
    cfg = add_resnest_config(get_cfg())
    r = cfg.MODEL.RESNETS
    assert (r.RADIX, r.DEEP_STEM, r.STEM_WIDTH, r.AVD, r.AVD_FIRST, r.AVG_DOWN) == (
        1,
        False,
        0,
        False,
        False,
        False,
    )
    assert (r.BOTTLENECK_WIDTH, r.DROPBLOCK_PROB) == (64, 0.0)
    r.RADIX = 4
    add_resnest_config(cfg)
    assert cfg.MODEL.RESNETS.RADIX == 4


def test_build_from_input_shape_channels():
    cfg = _cfg("resnest14d")
    model = build_backbone(cfg, ShapeSpec(channels=1))
    assert model.stem.conv1_1.weight.shape[1] == 1
