"""Export of deformable-conv (DCN) models (resnest_dense.export.deform, docs/deployment.md).

* the op: ``torchvision::deform_conv2d`` has no ONNX mapping at the project's opset 17; mapped to
  ONNX ``DeformConv`` (opset 19) it gives torchvision's outputs in onnxruntime, for DCNv1 and
  DCNv2, offset / conv groups, stride, dilation, offsets reaching outside the image, at two
  input sizes of one graph;
* whole tiny DCN models (the two DCN configs, narrowed like tests/test_export.py's models, with
  non-zero offsets) exported by tools/deploy/export_model.py give the PyTorch predictor's
  outputs with tests/test_export.py's tolerances, at the test sizes and far from the traced
  size: ONNX (opset 19), TorchScript traced and scripted;
* the opset is raised for DCN models only, and an onnxruntime without a DeformConv kernel is
  refused before the model is built, naming the config key and what to do instead.
"""

import functools
import importlib.util
import logging
import os

import numpy as np
import onnx
import pytest
import torch
from detectron2.modeling import build_model

from detection_helpers import CONFIGS, RESNEST_CONFIGS
from resnest_dense import get_resnest_cfg
from resnest_dense.engine import build_predictor, load_config
from resnest_dense.errors import StartupError
from resnest_dense.export import (
    DCN_ONNX_OPSET,
    ONNX_OPSET,
    ExportedPredictor,
    exporter,
    read_metadata,
    uses_deformable_conv,
)
from resnest_dense.export.deform import (
    deform_conv_runtime_problem,
    onnx_opset_for,
    register_deform_conv_symbolic,
)
from resnest_dense.export.files import onnx_bytes_of
from resnest_dense.layers.deform_conv import deform_conv_from_offsets, offset_channels
from resnest_dense.modeling.backbone.resnest import ResNeStBottleneckBlock
from test_export import (
    _opts,
    _randomize_norms,
    _refused,
    assert_matches_pytorch,
)

DCN_CONFIGS = {
    "faster": "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.yaml",
    "cascade_mask": (
        "COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_200_FPN_dcn_syncBN_all_tricks_3x.yaml"
    ),
}
# name -> (config, extra options): DCNv2 and DCNv1 with the configs' 2 deformable groups on
# res3-res5; the cascade mask config (ResNeSt-200 there, 14 here) adds masks and cascade heads.
MODELS = {
    "v2": ("faster", []),
    "v1": ("faster", ["MODEL.RESNETS.DEFORM_MODULATED", "False"]),
    "v2_cascade_mask": ("cascade_mask", []),
}
# ONNX for every model; TorchScript tracing and scripting on DCNv2 (the cascade heads do not
# script: refused for every cascade model, tests/test_export.py).
EXPORTS = [("v2", "onnx", "tracing"), ("v1", "onnx", "tracing")]
EXPORTS += [("v2_cascade_mask", "onnx", "tracing"), ("v2", "torchscript", "tracing")]
EXPORTS += [("v2", "torchscript", "scripting")]
OP_ATOL = 1e-5


# ----------------------------------------------------------------------------- the op


class _DeformConv(torch.nn.Module):
    """One deformable conv with offsets (and mask logits) as a graph input."""

    def __init__(self, groups, stride, dilation, modulated, cin=4, cout=6):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.weight = torch.nn.Parameter(torch.randn(cout, cin // groups, 3, 3, generator=g))
        self.bias = torch.nn.Parameter(torch.randn(cout, generator=g))
        self.stride, self.dilation, self.modulated = (stride,) * 2, (dilation,) * 2, modulated

    def forward(self, x, offset_mask):
        return deform_conv_from_offsets(
            x, offset_mask, self.weight, self.bias, self.stride, self.dilation, self.dilation,
            self.modulated,
        )  # fmt: skip


def _onnx_session(module, inputs, names, opset):
    import onnxruntime as ort

    dynamic = {n: {2: f"{n}_h", 3: f"{n}_w"} for n in names}
    data = onnx_bytes_of(
        lambda f: torch.onnx.export(
            module, inputs, f, input_names=list(names), dynamic_axes=dynamic,
            opset_version=opset, dynamo=False,
        )
    )  # fmt: skip
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]), onnx.load_from_string(
        data
    )


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_deform_conv_has_no_onnx_mapping_at_the_project_opset():
    """Why DCN models need their own opset: neither torch nor torchvision maps the op below
    ONNX's DeformConv (opset 19), so the project's opset-17 export fails on it."""
    assert ONNX_OPSET < DCN_ONNX_OPSET == 19
    register_deform_conv_symbolic()  # registered for >= 19 only: 17 must still fail
    module = _DeformConv(1, 1, 1, True).eval()
    inputs = (torch.randn(1, 4, 6, 6), torch.randn(1, offset_channels(3, 1, True), 6, 6))
    with pytest.raises(Exception, match="deform_conv2d"):
        _onnx_session(module, inputs, ("x", "offset_mask"), ONNX_OPSET)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(
    "modulated,dg,groups,stride,dilation",
    [(True, 2, 1, 1, 1), (False, 2, 1, 1, 1), (True, 1, 2, 2, 1), (True, 2, 2, 1, 2)],
)
def test_deform_conv_onnx_matches_torchvision(modulated, dg, groups, stride, dilation):
    module = _DeformConv(groups, stride, dilation, modulated).eval()
    register_deform_conv_symbolic()
    sizes = [(9, 11), (14, 7)]  # the traced size and another one: dynamic H, W

    def inputs(h, w, seed):
        g = torch.Generator().manual_seed(seed)
        out = ((h - 1) // stride + 1, (w - 1) // stride + 1)
        # Offsets of a few pixels, fractional, many samples outside the image (zero there).
        offsets = 2.0 * torch.randn(1, offset_channels(3, dg, modulated), *out, generator=g)
        return torch.randn(1, 4, h, w, generator=g), offsets

    session, model = _onnx_session(module, inputs(*sizes[0], 0), ("x", "offset_mask"), 19)
    (node,) = [n for n in model.graph.node if n.op_type == "DeformConv"]
    assert len(node.input) == (5 if modulated else 4)  # DCNv1: no mask input
    for seed, (h, w) in enumerate(sizes):
        x, offsets = inputs(h, w, seed)
        with torch.no_grad():
            want = module(x, offsets)
        (got,) = session.run(None, {"x": x.numpy(), "offset_mask": offsets.numpy()})
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=OP_ATOL, rtol=0)
    # The offsets matter: with them zeroed the output differs (a swapped (dy, dx) layout or a
    # dropped mask would fail the comparison above).
    with torch.no_grad():
        assert (module(x, torch.zeros_like(offsets)) - want).abs().max() > 100 * OP_ATOL


def test_installed_onnxruntime_runs_deform_conv():
    assert deform_conv_runtime_problem() is None
    problem = deform_conv_runtime_problem("NoSuchDeformConv")
    assert "NoSuchDeformConv" in problem and "onnxruntime" in problem


def test_opset_raised_for_dcn_models_only():
    plain = get_resnest_cfg(os.path.join(CONFIGS, RESNEST_CONFIGS["faster"]))
    dcn = get_resnest_cfg(os.path.join(CONFIGS, DCN_CONFIGS["faster"]))
    assert not uses_deformable_conv(plain) and uses_deformable_conv(dcn)
    assert onnx_opset_for(plain, ONNX_OPSET) == ONNX_OPSET == 17
    assert onnx_opset_for(dcn, ONNX_OPSET) == DCN_ONNX_OPSET


# ----------------------------------------------------------------------------- whole models


def _config(name):
    return os.path.join(CONFIGS, DCN_CONFIGS[MODELS[name][0]])


def _model_opts(name, weights=""):
    return _opts("dcn", weights, *MODELS[name][1])


@pytest.fixture(scope="module")
def dcn_checkpoints(tmp_path_factory, toy_set):
    """name -> checkpoint of the tiny DCN model: random norms (as tests/test_export.py) and
    offset convs drawn so that offsets are ~0.3-3 px (a new model's are zero: the regular
    grid, which would not test the sampling)."""
    root = tmp_path_factory.mktemp("dcn_checkpoints")
    paths = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = _randomize_norms(build_model(get_resnest_cfg(_config(name), _model_opts(name))))
        with torch.no_grad():
            offset_convs = [
                m.conv2_offset
                for m in model.modules()
                if isinstance(m, ResNeStBottleneckBlock) and m.conv2_offset is not None
            ]
            assert len(offset_convs) == 3  # res3-res5, one block each at depth 14
            for conv in offset_convs:
                conv.weight.normal_(std=0.05)
            mask_head = getattr(model.roi_heads, "mask_head", None)
            if mask_head is not None:
                mask_head.predictor.weight.mul_(30.0)  # confident masks (tests/test_export.py)
        paths[name] = str(root / f"{name}.pth")
        torch.save({"model": model.state_dict()}, paths[name])
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("name,fmt,method", EXPORTS, ids=["-".join(e) for e in EXPORTS])
def test_dcn_export_matches_pytorch(
    name, fmt, method, dcn_checkpoints, export_tool, sample_image, tmp_path
):
    weights = dcn_checkpoints[name]
    output = tmp_path / ("model.onnx" if fmt == "onnx" else "model.ts")
    argv = ["--config-file", _config(name), "--format", fmt, "--export-method", method]
    argv += ["--output", str(output), "--sample-image", sample_image]
    assert export_tool.main(argv + _model_opts(name, weights)) == 0
    meta = read_metadata(str(output))
    assert meta["fast_inference"] and meta["traced_size"] == [80, 107]
    if fmt == "onnx":
        model = onnx.load(str(output))
        assert meta["onnx_opset"] == DCN_ONNX_OPSET
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [19]
        assert sum(n.op_type == "DeformConv" for n in model.graph.node) == 3
    exported = ExportedPredictor(str(output))
    cfg = load_config(_config(name), _model_opts(name, weights), purpose="demo")
    cfg.freeze()
    pytorch = build_predictor(cfg)
    assert_matches_pytorch(exported, pytorch)


def test_dcn_onnx_refused_without_runtime_kernel(
    export_tool, capsys, monkeypatch, tmp_path, toy_set
):
    """An onnxruntime without DeformConv (e.g. the releases before 2026) fails the real probe
    (here: an op name no onnxruntime has); the tool refuses before building the model (the
    checkpoint is empty, which a built model would reject with another message)."""
    monkeypatch.setattr(
        exporter,
        "deform_conv_runtime_problem",
        functools.partial(deform_conv_runtime_problem, "NoSuchDeformConv"),
    )
    weights = str(tmp_path / "w.pth")
    torch.save({"model": {}}, weights)
    argv = ["--config-file", _config("v2"), "--format", "onnx", "--output"]
    argv += [str(tmp_path / "m.onnx")] + _model_opts("v2", weights)
    _refused(
        capsys,
        export_tool,
        argv,
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE=[False, True, True, True]",
        "DeformConv (opset 19)",
        "NoSuchDeformConv",
        "--format torchscript",
    )
    assert not os.path.exists(tmp_path / "m.onnx")


def test_dcn_runtime_check_applies_to_onnx_of_dcn_models_only(monkeypatch, caplog):
    """The kernel check refuses ONNX of a DCN config only; without onnxruntime it warns (the
    file may be meant for another runtime) instead of refusing."""
    plain = get_resnest_cfg(os.path.join(CONFIGS, RESNEST_CONFIGS["faster"]))
    dcn = get_resnest_cfg(_config("v2"))
    monkeypatch.setattr(exporter, "deform_conv_runtime_problem", lambda: "no kernel here")
    with pytest.raises(StartupError, match="DEFORM_ON_PER_STAGE.*no kernel here"):
        exporter.check_exportable(dcn, "tracing", "onnx")
    exporter.check_exportable(dcn, "tracing", "torchscript")
    exporter.check_exportable(dcn, "scripting", "torchscript")
    exporter.check_exportable(plain, "tracing", "onnx")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        exporter.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a),
    )
    with caplog.at_level(logging.WARNING, logger="resnest_dense.export.exporter"):
        exporter.check_exportable(dcn, "tracing", "onnx")
    assert "onnxruntime is not installed" in caplog.text
