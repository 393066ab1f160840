"""Export of RetinaNet (ResNeSt-14 toy schedule, narrowed like tests/test_export.py's models) by
tools/deploy/export_model.py: ONNX (tracing), TorchScript traced and scripted each give the
PyTorch predictor's outputs with tests/test_export.py's tolerances, at the test sizes, far from
the traced size and with no detections; the exported file is evaluated and drawn by the
project's tools and keeps RetinaNet's own score threshold.

The model is a fixed-seed random initialisation with random batch-norm statistics (the folded
norms are not identities). Its head convs are re-drawn with He initialisation and the
classification bias raised from the focal-loss prior: detectron2's initialisation (std 0.01, prior
0.01) scores every anchor ~0.01 for class 0 alone, below the 0.05 threshold, and the comparison
would be empty; this one returns 20-40 detections of all three classes per test image, as a
trained model does.
"""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from demo_helpers import write_image
from detection_helpers import load_tool, train_net_args
from resnest_dense import get_resnest_cfg
from resnest_dense.engine import build_predictor, load_config
from resnest_dense.errors import StartupError
from resnest_dense.export import ExportedPredictor, check_exportable, exported_format, read_metadata
from resnest_dense.export.exporter import tie_order_warning
from test_export import (
    BOX_ATOL,
    SCORE_ATOL,
    _images,
    _randomize_norms,
    assert_matches_pytorch,
    assert_same_predictions,
)
from test_retinanet import TINY_RETINANET, TOY

EXPORTS = [("onnx", "tracing"), ("torchscript", "tracing"), ("torchscript", "scripting")]

pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py


def _opts(weights: str, *extra) -> list:
    opts = TINY_RETINANET + ["TEST.DETECTIONS_PER_IMAGE", 50, "MODEL.WEIGHTS", weights, *extra]
    return [str(o) for o in opts]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, toy_set):
    torch.manual_seed(0)
    model = _randomize_norms(build_model(get_resnest_cfg(TOY, _opts(""))))
    for m in model.head.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    model.head.cls_score.bias.data.fill_(-3.0)
    path = str(tmp_path_factory.mktemp("checkpoints") / "retinanet.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


def _export(tool, weights, output, fmt="onnx", method="tracing", *extra, sample=None):
    argv = ["--config-file", TOY, "--format", fmt, "--export-method", method]
    argv += ["--output", str(output)] + (["--sample-image", sample] if sample else [])
    return tool.main(argv + _opts(weights, *extra))


def _pytorch_predictor(weights, *extra):
    cfg = load_config(TOY, _opts(weights, *extra), purpose="demo")
    cfg.freeze()
    return build_predictor(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,method", EXPORTS, ids=["-".join(e) for e in EXPORTS])
def test_exported_retinanet_matches_pytorch(
    fmt, method, checkpoint, export_tool, sample_image, tmp_path
):
    output = tmp_path / f"model{'.onnx' if fmt == 'onnx' else '.ts'}"
    assert _export(export_tool, checkpoint, output, fmt, method, sample=sample_image) == 0
    assert exported_format(str(output)) == fmt
    meta = read_metadata(str(output))
    assert meta["meta_architecture"] == "RetinaNet" and meta["num_classes"] == 3
    assert meta["fast_inference"] and meta["method"] == method
    assert meta["score_thresh_key"] == "MODEL.RETINANET.SCORE_THRESH_TEST"
    assert meta["traced_size"] == [80, 107]
    assert set(meta["outputs"]) == {"pred_boxes", "pred_classes", "scores"}
    exported = ExportedPredictor(str(output))
    pytorch = _pytorch_predictor(checkpoint)
    assert_matches_pytorch(exported, pytorch)


@pytest.mark.slow
def test_no_detections(checkpoint, export_tool, tmp_path):
    """Every anchor below the threshold: zero candidates through the traced top-k and NMS in
    onnxruntime give empty outputs, as PyTorch does."""
    extra = ("MODEL.RETINANET.SCORE_THRESH_TEST", "1.0")
    output = tmp_path / "model.onnx"
    assert _export(export_tool, checkpoint, output, "onnx", "tracing", *extra) == 0
    exported = ExportedPredictor(str(output))
    pytorch = _pytorch_predictor(checkpoint, *extra)
    for image in _images():
        got, want = exported(image), pytorch(image)
        assert len(want["instances"]) == 0
        assert_same_predictions(got, want, allow_empty=True)


@pytest.mark.slow
def test_onnx_evaluation_demo_and_score_threshold(checkpoint, export_tool, train_net, tmp_path):
    """tools/train_net.py --eval-only on the .onnx file gives the PyTorch checkpoint's COCO
    detections and box AP; tools/demo.py draws the file; a higher
    MODEL.RETINANET.SCORE_THRESH_TEST given with the file drops the detections below it."""
    onnx_file = tmp_path / "model.onnx"
    assert _export(export_tool, checkpoint, onnx_file) == 0
    results, detections = {}, {}
    for name, path in (("pytorch", checkpoint), ("onnx", str(onnx_file))):
        out = tmp_path / name
        opts = _opts(path, "OUTPUT_DIR", str(out))
        results[name] = train_net.main(train_net_args(TOY, *opts, eval_only=True))
        with open(out / "inference" / "coco_instances_results.json") as f:
            detections[name] = json.load(f)
    assert len(detections["onnx"]) == len(detections["pytorch"]) > 0
    for got, want in zip(detections["onnx"], detections["pytorch"]):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=BOX_ATOL)
        assert abs(got["score"] - want["score"]) <= SCORE_ATOL
    ap = results["pytorch"]["bbox"]["AP"]
    assert np.isfinite(ap) and abs(results["onnx"]["bbox"]["AP"] - ap) <= 0.1, results

    write_image(tmp_path / "in" / "a.png", 80, 120, seed=1)
    argv = ["--config-file", TOY, "--input", str(tmp_path / "in"), "--output"]
    argv += [str(tmp_path / "demo"), "--opts"] + _opts(str(onnx_file))
    assert load_tool("demo").main(argv) == 0
    assert os.path.isfile(tmp_path / "demo" / "a.png")

    image = _images()[0]
    everything = ExportedPredictor(str(onnx_file))(image)["instances"]
    cut = float(everything.scores.median())
    cfg = load_config(
        TOY, _opts(str(onnx_file), "MODEL.RETINANET.SCORE_THRESH_TEST", cut), purpose="demo"
    )
    kept = build_predictor(cfg)(image)["instances"]
    assert 0 < len(kept) < len(everything) and bool((kept.scores >= cut).all())


@pytest.mark.parametrize("fmt,method", EXPORTS, ids=["-".join(e) for e in EXPORTS])
def test_check_exportable_accepts_retinanet(fmt, method):
    cfg = get_resnest_cfg(TOY, _opts(""))
    check_exportable(cfg, method, fmt)  # no StartupError
    # ONNX only: a warning that exactly tied scores may be ordered differently than in PyTorch.
    warning = tie_order_warning(cfg, fmt)
    assert (warning is not None and "equal candidate scores" in warning) == (fmt == "onnx")
    cfg.MODEL.META_ARCHITECTURE = "ProposalNetwork"
    with pytest.raises(StartupError, match="META_ARCHITECTURE=ProposalNetwork.*RetinaNet"):
        check_exportable(cfg, method, fmt)
