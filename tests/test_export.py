"""Whole-model export (tools/deploy/export_model.py, resnest_dense.export): each family of a tiny
model exported to ONNX and TorchScript and run in onnxruntime / TorchScript gives the PyTorch
predictor's outputs on the same images, at two input sizes (dynamic shapes), with no detections,
and in COCO evaluation; bad inputs are refused with a message naming the problem.

The models are fixed-seed random initialisations (ResNeSt-14, narrow heads) with random batch
norm statistics, saved as checkpoints: the batch norms the fast path folds are not identities,
and with the default score threshold every detector returns detections for the comparison. The
mask predictor's weights are scaled up so that mask probabilities are far from the 0.5
threshold, as a trained model's are (a random head sits at 0.5, where rounding decides).
The configs keep their SyncBN norms, so the export's SyncBN -> BN conversion is exercised.
"""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from demo_helpers import write_image
from detection_helpers import CONFIGS, RESNEST_CONFIGS, TINY, load_tool, train_net_args
from resnest_dense import get_resnest_cfg
from resnest_dense.data.toy_sem_seg import register_toy_sem_seg
from resnest_dense.engine import build_predictor, load_config
from resnest_dense.export import (
    ExportedFileError,
    ExportedModel,
    ExportedPredictor,
    check_matches_config,
    exported_format,
    read_metadata,
)
from segmentation_helpers import TOY_YAML

FAMILIES = {k: os.path.join(CONFIGS, v) for k, v in RESNEST_CONFIGS.items()}
FAMILIES["deeplabv3"] = TOY_YAML
# The ResNet-50 baseline (detectron2's own ResNet), narrowed to test size.
FAMILIES["mask_R50"] = os.path.join(
    CONFIGS, "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_syncbn_1x.yaml"
)
R50_NARROW = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH_PER_GROUP", "8"]
R50_NARROW += ["MODEL.RESNETS.RES2_OUT_CHANNELS", "32", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16"]
# ONNX (tracing) for every family. TorchScript tracing runs the same traced graph as ONNX, so
# it is checked on one detector and DeepLabV3; scripting on every family that scripts
# (detectron2's cascade heads do not), Faster R-CNN standing for the R-CNNs without masks.
EXPORTS = [(family, "onnx", "tracing") for family in FAMILIES]
EXPORTS += [(family, "torchscript", "tracing") for family in ("mask", "deeplabv3")]
EXPORTS += [(family, "torchscript", "scripting") for family in ("faster", "mask", "deeplabv3")]
# Original image sizes: resized by the test resize (short side 80, long side <= 128) to 80x120
# and 102x80, neither the traced 96x128 -> 80x106 size.
IMAGE_SIZES = [(80, 120), (128, 100)]
FAR_SIZES = [(32, 32), (33, 47), (256, 384)]
SEMSEG_PREFIX = "toy_sem_seg_export"
BOX_ATOL, SCORE_ATOL, MASK_IOU, PIXELS_EQUAL = 1e-3, 1e-4, 0.99, 0.999


def _opts(family: str, weights: str = "", *extra) -> list:
    if family == "deeplabv3":
        base = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", 80, "INPUT.MAX_SIZE_TEST", 128]
        base += ["DATASETS.TEST", "()"]
    else:
        base = list(TINY) + (R50_NARROW if family == "mask_R50" else [])
    return [o if isinstance(o, str) else str(o) for o in base] + [
        "MODEL.WEIGHTS",
        weights,
        *extra,
    ]


def _randomize_norms(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def save_test_checkpoint(config: str, opts: list, path) -> str:
    """Save the model of ``config`` + ``opts`` as a checkpoint at ``path``: fixed seed, random
    norm statistics, a confident mask head."""
    torch.manual_seed(0)
    model = _randomize_norms(build_model(get_resnest_cfg(config, opts)))
    mask_head = getattr(getattr(model, "roi_heads", None), "mask_head", None)
    if mask_head is not None:
        # A random mask head predicts probabilities of ~0.5 everywhere, where float
        # rounding flips the 0.5 threshold; a trained one is confident, as these logits.
        mask_head.predictor.weight.data.mul_(30.0)
    torch.save({"model": model.state_dict()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, toy_set):
    """family -> a checkpoint of the tiny model (fixed seed, random norm statistics)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        family: save_test_checkpoint(config, _opts(family), root / f"{family}.pth")
        for family, config in FAMILIES.items()
    }


def _export(tool, family, weights, output, fmt="onnx", method="tracing", *extra, sample=None):
    argv = ["--config-file", FAMILIES[family], "--format", fmt, "--export-method", method]
    argv += ["--output", str(output)] + (["--sample-image", sample] if sample else [])
    return tool.main(argv + _opts(family, weights, *extra))


def _pytorch_predictor(family, weights, *extra):
    cfg = load_config(FAMILIES[family], _opts(family, weights, *extra), purpose="demo")
    cfg.freeze()
    return build_predictor(cfg)


def _images():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, size + (3,), dtype=np.uint8) for size in IMAGE_SIZES]


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-instance IoU of (N, H, W) boolean masks (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def assert_same_predictions(got: dict, want: dict, allow_empty: bool = False) -> None:
    if "sem_seg" in want:
        assert got["sem_seg"].shape == want["sem_seg"].shape
        equal = (got["sem_seg"].argmax(0) == want["sem_seg"].argmax(0)).double().mean()
        assert equal >= PIXELS_EQUAL, equal
        return
    got, want = got["instances"], want["instances"]
    assert got.image_size == want.image_size
    assert len(got) == len(want)
    assert allow_empty or len(want) > 0, "no detections: the comparison would be empty"
    assert set(got.get_fields()) == set(want.get_fields())
    torch.testing.assert_close(got.pred_boxes.tensor, want.pred_boxes.tensor, atol=BOX_ATOL, rtol=0)
    torch.testing.assert_close(got.scores, want.scores, atol=SCORE_ATOL, rtol=0)
    assert torch.equal(got.pred_classes, want.pred_classes)
    if want.has("pred_masks"):
        assert got.pred_masks.shape == want.pred_masks.shape
        assert bool((_mask_iou(got.pred_masks, want.pred_masks) >= MASK_IOU).all())


def assert_matches_pytorch(exported: ExportedPredictor, pytorch) -> None:
    """The exported predictor gives the PyTorch predictor's outputs on the test images (through
    the test resize) and, fed directly, at sizes far from the traced one: tiny, not a multiple
    of the stride, larger than the config's test size."""
    for image in _images():
        assert_same_predictions(exported(image), pytorch(image))
    for h, w in FAR_SIZES:
        inputs = [{"image": torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) * 255}]
        with torch.no_grad():
            assert_same_predictions(exported.model(inputs)[0], pytorch.model(inputs)[0])


@pytest.mark.slow
@pytest.mark.parametrize("family,fmt,method", EXPORTS, ids=["-".join(e) for e in EXPORTS])
def test_exported_model_matches_pytorch(
    family, fmt, method, checkpoints, export_tool, sample_image, tmp_path
):
    output = tmp_path / f"model{'.onnx' if fmt == 'onnx' else '.ts'}"
    assert (
        _export(export_tool, family, checkpoints[family], output, fmt, method, sample=sample_image)
        == 0
    )
    assert exported_format(str(output)) == fmt
    meta = read_metadata(str(output))
    assert meta["fast_inference"] and meta["method"] == method
    # The sample image (96x128 -> 80x107) is neither test size (80x120, 102x80): dynamic shapes.
    assert meta["traced_size"] == [80, 107]
    exported = ExportedPredictor(str(output))
    pytorch = _pytorch_predictor(family, checkpoints[family])
    assert_matches_pytorch(exported, pytorch)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mask", "cascade_mask"])
def test_no_detections(family, checkpoints, export_tool, tmp_path):
    """A graph whose every detection is below the threshold returns empty outputs (zero boxes
    through NMS, ROIAlign and the mask head in onnxruntime), as PyTorch does."""
    extra = ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0")
    output = tmp_path / "model.onnx"
    assert _export(export_tool, family, checkpoints[family], output, "onnx", "tracing", *extra) == 0
    exported = ExportedPredictor(str(output))
    pytorch = _pytorch_predictor(family, checkpoints[family], *extra)
    for image in _images() + [np.zeros((90, 110, 3), np.uint8)]:
        got, want = exported(image), pytorch(image)
        assert len(want["instances"]) == 0
        assert_same_predictions(got, want, allow_empty=True)


@pytest.mark.slow
def test_onnx_coco_evaluation_equals_pytorch(checkpoints, export_tool, train_net, tmp_path):
    """tools/train_net.py --eval-only with the .onnx file as MODEL.WEIGHTS: same detections
    written by the COCO evaluator, same box and mask AP as the PyTorch checkpoint."""
    family, weights = "mask", checkpoints["mask"]
    # Low threshold and many detections: random weights then reach a non-zero AP.
    extra = ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "50")
    onnx_file = tmp_path / "model.onnx"
    assert _export(export_tool, family, weights, onnx_file, "onnx", "tracing", *extra) == 0
    results, detections = {}, {}
    for name, path in (("pytorch", weights), ("onnx", str(onnx_file))):
        out = tmp_path / name
        opts = _opts(family, path, *extra, "OUTPUT_DIR", str(out))
        results[name] = train_net.main(
            train_net_args(RESNEST_CONFIGS[family], *opts, eval_only=True)
        )
        with open(out / "inference" / "coco_instances_results.json") as f:
            detections[name] = json.load(f)
        with open(out / "results.json") as f:
            assert json.load(f)["weights"] == path
    assert len(detections["onnx"]) == len(detections["pytorch"]) > 0
    for got, want in zip(detections["onnx"], detections["pytorch"]):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=BOX_ATOL)
        assert abs(got["score"] - want["score"]) <= SCORE_ATOL
    for task in ("bbox", "segm"):
        ap = results["pytorch"][task]["AP"]
        assert np.isfinite(ap) and ap > 0, (task, ap)
        assert abs(results["onnx"][task]["AP"] - ap) <= 0.1, (task, results)


@pytest.mark.slow
def test_onnx_sem_seg_evaluation_equals_pytorch(checkpoints, export_tool, train_net, tmp_path):
    """The same for DeepLabV3: mIoU / pixel accuracy through onnxruntime equal PyTorch's; and
    tools/demo_semseg.py runs the file."""
    register_toy_sem_seg(root=str(tmp_path / "data"), prefix=SEMSEG_PREFIX, num_train=1, num_val=4)
    extra = ("DATASETS.TRAIN", f"('{SEMSEG_PREFIX}_train',)")
    extra += ("DATASETS.TEST", f"('{SEMSEG_PREFIX}_val',)")
    weights, onnx_file = checkpoints["deeplabv3"], tmp_path / "model.onnx"
    assert _export(export_tool, "deeplabv3", weights, onnx_file, "onnx", "tracing", *extra) == 0
    results = {}
    for name, path in (("pytorch", weights), ("onnx", str(onnx_file))):
        opts = _opts("deeplabv3", path, *extra, "OUTPUT_DIR", str(tmp_path / name))
        results[name] = train_net.main(train_net_args(TOY_YAML, *opts, eval_only=True))["sem_seg"]
    assert results["pytorch"]["pACC"] > 0, results
    for metric in ("mIoU", "pACC"):
        assert abs(results["onnx"][metric] - results["pytorch"][metric]) <= 0.1, results
    # tools/demo_semseg.py runs the same file.
    write_image(tmp_path / "in" / "a.png", 70, 90, seed=2)
    argv = ["--config-file", TOY_YAML, "--input", str(tmp_path / "in"), "--output"]
    argv += [str(tmp_path / "demo"), "--opts"] + _opts("deeplabv3", str(onnx_file))
    assert load_tool("demo_semseg").main(argv) == 0
    assert os.path.isfile(tmp_path / "demo" / "a_mask.png")


@pytest.mark.slow
def test_demo_runs_exported_file(checkpoints, export_tool, tmp_path):
    """tools/demo.py with MODEL.WEIGHTS model.onnx draws the exported model's detections."""
    output = tmp_path / "model.onnx"
    assert _export(export_tool, "mask", checkpoints["mask"], output) == 0
    write_image(tmp_path / "in" / "a.png", 80, 120, seed=1)
    argv = ["--config-file", FAMILIES["mask"], "--input", str(tmp_path / "in"), "--output"]
    argv += [str(tmp_path / "out"), "--confidence-threshold", "0.0", "--opts"]
    assert load_tool("demo").main(argv + _opts("mask", str(output))) == 0
    assert os.path.isfile(tmp_path / "out" / "a.png")


# ------------------------------------------------------------------------------ bad inputs


@pytest.fixture
def plain_onnx(tmp_path):
    """An ONNX file of a single conv, exported by torch directly (no resnest_dense metadata)."""
    path = str(tmp_path / "plain.onnx")
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8),), path, dynamo=False)
    return path


def _refused(capsys, tool, argv, *words):
    assert tool.main(argv) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_onnx_scripting_refused_before_any_work(export_tool, capsys, tmp_path):
    # The config file does not exist and is never read: the request is checked first.
    argv = ["--config-file", "missing.yaml", "--format", "onnx", "--export-method", "scripting"]
    _refused(capsys, export_tool, argv + ["--output", str(tmp_path / "m")], "not supported")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "config,opts,words",
    [
        ("missing.yaml", [], ["missing.yaml", "does not exist"]),
        (FAMILIES["mask"], ["MODEL.WEIGHTS", "nope.pth"], ["nope.pth", "no such file"]),
        (FAMILIES["mask"], ["MODEL.WEIGHTS", ""], ["MODEL.WEIGHTS is empty"]),
    ],
    ids=["missing-config", "missing-weights", "empty-weights"],
)
def test_export_bad_config_or_weights(export_tool, capsys, tmp_path, toy_set, config, opts, words):
    argv = ["--config-file", config, "--output", str(tmp_path / "m.onnx")]
    _refused(capsys, export_tool, argv + _opts("mask") + opts, *words)
    assert not os.path.exists(tmp_path / "m.onnx")


def test_export_cascade_scripting_refused(export_tool, capsys, tmp_path, toy_set):
    argv = ["--config-file", FAMILIES["cascade"], "--format", "torchscript"]
    argv += ["--export-method", "scripting", "--output", str(tmp_path / "m.ts")]
    # A valid checkpoint is not needed: the model is refused before it is built.
    weights = str(tmp_path / "w.pth")
    torch.save({"model": {}}, weights)
    _refused(capsys, export_tool, argv + _opts("cascade", weights), "CascadeROIHeads", "tracing")


def test_export_sliding_window_semseg_refused(export_tool, capsys, tmp_path):
    weights = str(tmp_path / "w.pth")
    torch.save({"model": {}}, weights)
    argv = ["--config-file", TOY_YAML, "--output", str(tmp_path / "m.onnx")]
    opts = _opts("deeplabv3", weights, "TEST.SEM_SEG.CROP_SIZE", "64")
    _refused(capsys, export_tool, argv + opts, "TEST.SEM_SEG.CROP_SIZE=64", "CROP_SIZE 0")


def test_onnx_file_as_checkpoint_refused(
    export_tool, train_net, capsys, tmp_path, toy_set, plain_onnx
):
    """An .onnx file where a PyTorch checkpoint is needed: export and training say so."""
    argv = ["--config-file", FAMILIES["mask"], "--output", str(tmp_path / "m.onnx")]
    _refused(capsys, export_tool, argv + _opts("mask", plain_onnx), "exported onnx model", ".pth")
    with pytest.raises(ExportedFileError, match="not be trained from|trained from"):
        train_net.main(train_net_args(RESNEST_CONFIGS["mask"], *_opts("mask", plain_onnx)))


def test_checkpoint_as_exported_file_refused(tmp_path, plain_onnx):
    """A .pth (or foreign .onnx) where an exported model is needed names what it is."""
    ckpt = str(tmp_path / "model_final.pth")
    torch.save({"model": {"w": torch.zeros(1)}}, ckpt)
    assert exported_format(ckpt) is None
    with pytest.raises(ExportedFileError, match="PyTorch checkpoint"):
        ExportedModel(ckpt)
    with pytest.raises(ExportedFileError, match="without resnest_dense metadata"):
        ExportedModel(plain_onnx)
    with pytest.raises(FileNotFoundError, match="no such file"):
        ExportedModel(str(tmp_path / "nope.onnx"))


def test_exported_file_must_match_config():
    cfg = get_resnest_cfg(TOY_YAML)
    meta = {"family": "detection", "num_classes": 3, "meta_architecture": "GeneralizedRCNN"}
    meta["input"] = {"min_size_test": 800, "max_size_test": 1333}
    with pytest.raises(ExportedFileError, match="MultiScaleSemanticSegmentor"):
        check_matches_config(meta, cfg, "x.onnx")
