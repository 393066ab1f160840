"""``torch.jit.script`` of split attention, the ResNeSt block and a whole backbone: scripted
outputs equal eager ones (eval mode, float32), and SyncBN fails with an error that names the fix.

Scripting detectron2's ``ResNet`` needs ``detectron2.export`` imported: its import patches
``ResNet.__prepare_scriptable__`` (stages as an ``nn.ModuleList``), as detectron2's own
``scripting_with_instances`` relies on.
"""

import detectron2.export  # noqa: F401  (registers the ResNet/FPN scripting patches)
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone

import resnest_dense
from resnest_dense.layers import SplitAttentionConv2d
from resnest_dense.modeling.backbone.resnest import ResNeStBottleneckBlock
from resnest_dense.modeling.backbone.variants import variant_opts
from resnest_dense.utils import optimize_for_inference

FEATURES = ["res2", "res3", "res4", "res5"]
ATOL = 1e-5


def _randomize_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics and affine terms, so eval-mode outputs depend on them."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def _to_memory_format(x: torch.Tensor, module: torch.nn.Module, channels_last: bool):
    if channels_last:
        module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _backbone(norm: str, **opts):
    keys = ["MODEL.RESNETS.NORM", norm, "MODEL.RESNETS.OUT_FEATURES", FEATURES]
    keys += ["MODEL.BACKBONE.NAME", "build_resnest_backbone"]
    keys += [x for item in opts.items() for x in item]
    cfg = resnest_dense.get_resnest_cfg(opts=variant_opts("resnest14d") + keys)
    return _randomize_norms(build_backbone(cfg)).eval()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cardinality", [1, 2])
@pytest.mark.parametrize("radix", [1, 2, 4])
def test_split_attention_scripted_equals_eager(radix, cardinality, channels_last):
    layer = SplitAttentionConv2d(8, 16, radix=radix, cardinality=cardinality)
    layer = _randomize_norms(layer).eval()
    x = _to_memory_format(torch.randn(2, 8, 12, 10), layer, channels_last)
    scripted = torch.jit.script(layer)
    with torch.no_grad():
        want, got = layer(x), scripted(x)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # The NHWC fast path keeps the output channels_last when scripted too.
    fmt = torch.channels_last if channels_last and radix > 1 else torch.contiguous_format
    assert got.is_contiguous(memory_format=fmt) == want.is_contiguous(memory_format=fmt)


# Without avd the split-attention conv itself has stride 2; with it, a pool before or after does.
@pytest.mark.parametrize(
    "avd,avd_first,avg_down", [(False, False, False), (True, False, True), (True, True, True)]
)
def test_block_scripted_equals_eager(avd, avd_first, avg_down):
    block = ResNeStBottleneckBlock(
        16, 32, bottleneck_channels=8, stride=2, radix=2, num_groups=2, avd=avd,
        avd_first=avd_first, avg_down=avg_down,
    )  # fmt: skip
    block = _randomize_norms(block).eval()
    x = torch.randn(2, 16, 12, 12)
    scripted = torch.jit.script(block)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), block(x), rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "norm,channels_last,grad_checkpoint",
    [("FrozenBN", False, True), ("BN", True, False)],
)
def test_resnest14_backbone_scripted_equals_eager(norm, channels_last, grad_checkpoint):
    model = _backbone(norm, **{"MODEL.RESNETS.GRAD_CHECKPOINT": grad_checkpoint})
    x = _to_memory_format(torch.randn(2, 3, 64, 64), model, channels_last)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        want, got = model(x), scripted(x)
    assert sorted(got) == FEATURES
    for name in FEATURES:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=ATOL, msg=name)
    # Scripting works on a copy: the eager model keeps its stage attributes and names.
    assert "res2.0.conv2.fc1.weight" in model.state_dict()


def test_fast_inference_backbone_scripts():
    """The BN-folded, channels_last fast path (TEST.FAST_INFERENCE) scripts to the same outputs."""
    model = optimize_for_inference(_backbone("BN"))
    x = torch.randn(2, 3, 64, 64)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        want, got = model(x), scripted(x)
    for name in FEATURES:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=ATOL, msg=name)


def test_scripted_block_refuses_to_checkpoint_in_training():
    block = ResNeStBottleneckBlock(8, 8, bottleneck_channels=8, grad_checkpoint=True)
    scripted = torch.jit.script(block).train()
    with pytest.raises(Exception, match="_checkpointed_forward"):
        scripted(torch.randn(2, 8, 8, 8, requires_grad=True))


@pytest.mark.parametrize("norm", ["SyncBN", "naiveSyncBN"])
def test_syncbn_scripting_error_names_the_fix(norm):
    layer = SplitAttentionConv2d(8, 16, norm=norm).eval()
    with pytest.raises(RuntimeError) as err:
        torch.jit.script(layer)
    message = str(err.value)
    for hint in ("torch.jit.script", "convert_frozen_batchnorm", "MODEL.RESNETS.NORM BN"):
        assert hint in message, f"{hint!r} missing from: {message}"


def test_syncbn_backbone_scripts_after_the_suggested_conversion():
    model = _backbone("SyncBN")
    with pytest.raises(RuntimeError, match="convert_frozen_batchnorm"):
        torch.jit.script(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(model)
        got = torch.jit.script(frozen)(x)
    for name in FEATURES:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=ATOL, msg=name)
