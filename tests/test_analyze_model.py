"""tools/analyze_model.py and resnest_dense.engine.analysis: counts against references.

References: timm's ``resnest50d`` features (fvcore's own count, the networks being equal number
for number, tests/test_backbone.py), detectron2's own ResNet-50 built from detectron2's config,
``sum(p.numel())`` of the built model, and the YAML / LazyConfig twins against each other.
"""

import json
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_resnet_backbone
from fvcore.nn import FlopCountAnalysis

from resnest_dense.checkpoint import build_variant_backbone
from resnest_dense.engine import count_activations, count_flops, count_parameters, load_config
from resnest_dense.engine.analysis import (
    analysis_model,
    default_size,
    image_input,
    module_flops,
    synthetic_input,
)
from resnest_dense.utils import read_image_bgr
from demo_helpers import write_image
from detection_helpers import CONFIGS, load_tool

TOY = os.path.join(CONFIGS, "quick_schedules", "toy_mask_rcnn_S14_FPN.yaml")
TOY_LAZY = os.path.join(CONFIGS, "lazy", "quick_schedules", "toy_mask_rcnn_S14_FPN.py")
TOY_PANOPTIC = os.path.join(CONFIGS, "quick_schedules", "toy_panoptic_fpn_S14.yaml")
TOY_SEG = os.path.join(CONFIGS, "quick_schedules", "toy_deeplabv3_S14_OS8.yaml")
R50 = os.path.join(CONFIGS, "COCO-Detection", "faster_rcnn_R_50_FPN_syncbn_range-scale_1x.yaml")
ADE_S50 = os.path.join(
    CONFIGS, "ADE20K-SemanticSegmentation", "deeplabv3_S_50_OS8_syncbn_120ep.yaml"
)
ADE_S50_LAZY = os.path.join(
    CONFIGS, "lazy", "ADE20K-SemanticSegmentation", "deeplabv3_S_50_OS8_syncbn_120ep.py"
)


def _fvcore_total(module: torch.nn.Module, x: torch.Tensor) -> int:
    """fvcore's own count (no detectron2 wrapper), the independent reference."""
    analysis = FlopCountAnalysis(module.eval(), x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total()


@pytest.fixture(scope="module")
def analyze_tool():
    return load_tool("analyze_model")


@pytest.mark.slow
def test_resnest50_backbone_equals_timm_at_224():
    """The paper's setting: ResNeSt-50 at 224x224 (5.40 GFLOPs with BN, 5.37 convs alone)."""
    timm = pytest.importorskip("timm")
    ours = build_variant_backbone("resnest50d", norm="BN")
    reference = timm.create_model(
        "resnest50d", pretrained=False, features_only=True, out_indices=(1, 2, 3, 4)
    )
    x = torch.zeros(1, 3, 224, 224)
    got = count_flops(ours, x, warn=False)
    assert got.total == _fvcore_total(reference, x)
    assert 5.39e9 < got.total < 5.41e9
    assert got.by_operator["conv"] > 0.99 * got.total
    classifier = timm.create_model("resnest50d", pretrained=False)
    want = sum(p.numel() for n, p in classifier.named_parameters() if not n.startswith("fc."))
    assert count_parameters(ours)[""] == want


def test_resnest14_backbone_equals_timm_small():
    timm = pytest.importorskip("timm")
    ours = build_variant_backbone("resnest14d", norm="BN")
    reference = timm.create_model(
        "resnest14d", pretrained=False, features_only=True, out_indices=(1, 2, 3, 4)
    )
    x = torch.zeros(1, 3, 64, 96)
    flops = count_flops(ours, x, warn=False)
    assert flops.total == module_flops(ours, 64, 96) == _fvcore_total(reference, x)
    assert set(flops.by_module) == {"stem", "res2", "res3", "res4", "res5"}
    assert sum(flops.by_module.values()) == flops.total


def test_r50_baseline_backbone_equals_detectron2_resnet50():
    """The R50 baseline's bottom-up network is detectron2's ResNet-50 (stride in the 3x3)."""
    bottom_up = build_backbone(load_config(R50, purpose="analyze")).bottom_up
    reference_cfg = get_cfg()
    reference_cfg.MODEL.RESNETS.DEPTH = 50
    reference_cfg.MODEL.RESNETS.NORM = "BN"
    reference_cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    reference_cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    reference = build_resnet_backbone(reference_cfg, ShapeSpec(channels=3))
    got = module_flops(bottom_up, 128, 160)
    assert got == _fvcore_total(reference, torch.zeros(1, 3, 128, 160))
    assert count_parameters(bottom_up)[""] == sum(p.numel() for p in reference.parameters())


def test_activations_are_conv_outputs():
    """fvcore's activations of a backbone: the elements of every conv output."""
    backbone = build_variant_backbone("resnest14d", norm="BN").eval()
    outputs = []
    for m in backbone.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, args, out: outputs.append(out.numel()))
    x = torch.zeros(1, 3, 64, 96)
    with torch.no_grad():
        backbone(x)
    want = sum(outputs)
    outputs.clear()
    assert count_activations(backbone, x) == {"conv": want}


@pytest.mark.slow
def test_panoptic_fpn_activations_and_flops():
    """Panoptic FPN returns non-tensor outputs (segments info): both counts still trace."""
    model, _ = analysis_model(load_config(TOY_PANOPTIC, purpose="analyze"))
    inputs = [synthetic_input(64, 96)]
    flops = count_flops(model, inputs, warn=False)
    assert {"backbone", "sem_seg_head", "roi_heads"} <= set(flops.by_module)
    assert sum(count_activations(model, inputs).values()) > 0


def test_detector_parameters_are_the_models():
    model, _ = analysis_model(load_config(TOY, purpose="analyze"))
    params = count_parameters(model)
    assert params[""] == sum(p.numel() for p in model.parameters())
    assert sum(v for k, v in params.items() if k) == params[""]
    assert {"backbone", "proposal_generator", "roi_heads"} <= set(params)


@pytest.mark.slow
def test_yaml_and_lazy_twin_give_identical_counts():
    counts = []
    for config in (TOY, TOY_LAZY):
        cfg = load_config(config, purpose="analyze")
        model, notes = analysis_model(cfg)
        counts.append((count_flops(model, [synthetic_input(64, 96)], warn=False), notes))
        counts[-1] += (count_parameters(model),)
    (yaml_flops, yaml_notes, yaml_params), (lazy_flops, lazy_notes, lazy_params) = counts
    assert yaml_flops == lazy_flops
    assert yaml_params == lazy_params
    assert yaml_notes == lazy_notes
    assert "budget (20 per image)" in yaml_notes[-1]
    # Score threshold 0: the mask head runs on the full detection budget of the config.
    assert yaml_flops.boxes["detections"] == 20
    assert yaml_flops.by_module["roi_heads"] > 0


def test_flops_by_module_sum_to_total():
    model, _ = analysis_model(load_config(TOY, purpose="analyze"))
    flops = count_flops(model, [synthetic_input(64, 96)], warn=False)
    assert sum(flops.by_module.values()) == flops.total
    assert flops.by_module["backbone"] == module_flops(model.backbone, 64, 96)
    assert "aten::sum" in flops.skipped  # split attention's radix sum: element-wise, skipped


def test_semantic_segmentor_is_one_pass():
    cfg = load_config(TOY_SEG, ["TEST.SEM_SEG.BASE_SIZE", 112, "TEST.SEM_SEG.CROP_SIZE", 96],
                      purpose="analyze")  # fmt: skip
    assert default_size(cfg)[0] == (96, 96)
    model, notes = analysis_model(cfg)
    assert model.crop_size == 0 and model.scales == (1.0,) and "one pass" in notes[0]
    flops = count_flops(model, [synthetic_input(64, 64)], warn=False)
    assert flops.by_module["backbone"] == module_flops(model.backbone, 64, 64)
    assert flops.total > flops.by_module["backbone"]


def test_syncbn_configs_need_no_data_and_run_as_bn(tmp_path, monkeypatch):
    """COCO / ADE20K SyncBN configs on one CPU process, without any dataset on disk."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    cfg = load_config(ADE_S50, purpose="analyze")
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.SEM_SEG_HEAD.NORM) == ("BN", "BN")
    assert default_size(cfg)[0] == (480, 480)
    cfg = load_config(R50, purpose="analyze")
    assert cfg.MODEL.RESNETS.NORM == "BN" and cfg.MODEL.DEVICE == "cpu"
    assert default_size(cfg)[0] == (800, 1333)


def test_image_input_uses_the_test_resize(tmp_path):
    cfg = load_config(TOY, purpose="analyze")  # MIN_SIZE_TEST 160, MAX_SIZE_TEST 320
    path = write_image(tmp_path / "a.png", 96, 128)
    x = image_input(cfg, read_image_bgr(path))
    assert tuple(x["image"].shape) == (3, 160, 213) and (x["height"], x["width"]) == (96, 128)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--size", "0", "64"], "--size takes two integers"),
        (["--size", "16", "64"], "at least 32"),
        (["--input", "missing.png"], "missing.png"),
        (["--size", "64", "64", "--input", "a.png"], "exclude each other"),
        (["--config-file", TOY, "MODEL.NO_SUCH_KEY", "1"], "NO_SUCH_KEY"),
    ],
)
def test_bad_inputs_fail_before_work(analyze_tool, argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "a.png")
    monkeypatch.setattr(analyze_tool, "analysis_model", pytest.fail)  # no model is built
    assert analyze_tool.main(["--tasks", "flop", "--config-file", TOY] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Refusing to analyze") and message in err, err


def test_unknown_task_is_refused(analyze_tool, capsys):
    with pytest.raises(SystemExit) as e:
        analyze_tool.main(["--config-file", TOY, "--tasks", "flop", "speed"])
    assert e.value.code == 2
    assert "invalid choice: 'speed'" in capsys.readouterr().err


@pytest.mark.slow
def test_tool_end_to_end(analyze_tool, tmp_path):
    out = tmp_path / "toy.json"
    argv = ["--config-file", TOY_LAZY, "--tasks", "flop", "activation", "parameter", "structure",
            "--size", "64", "96", "--output", str(out)]  # fmt: skip
    assert analyze_tool.main(argv) == 0
    result = json.loads(out.read_text())
    model, _ = analysis_model(load_config(TOY, purpose="analyze"))
    want = count_flops(model, [synthetic_input(64, 96)], warn=False)
    assert result["flop"]["gflops_mean"] == pytest.approx(want.total / 1e9, rel=1e-12)
    assert result["flop"]["boxes_per_image"] == [want.boxes]
    assert result["parameter"]["total"] == sum(p.numel() for p in model.parameters())
    assert result["activation"]["mactivations_mean"] > 0
    assert result["inputs"] == [{"source": "synthetic 64x96 (--size)", "size": [64, 96]}]
    assert "one multiply-add = 1 flop" in result["convention"]
    # Real images: each at the config's test size, counts averaged.
    images = [write_image(tmp_path / f"{i}.png", 96, 128 + 32 * i, seed=i) for i in range(2)]
    argv = ["--config-file", TOY, "--tasks", "flop", "--input", *images, "--output", str(out)]
    assert analyze_tool.main(argv) == 0
    result = json.loads(out.read_text())
    assert [i["size"] for i in result["inputs"]] == [[160, 213], [160, 267]]
    per_image = result["flop"]["gflops_per_image"]
    assert per_image[1] > per_image[0]
    assert result["flop"]["gflops_mean"] == pytest.approx(sum(per_image) / 2)


@pytest.mark.parametrize("config", [ADE_S50, ADE_S50_LAZY], ids=["yaml", "lazy"])
def test_segmentor_is_analysed_in_one_pass_from_yaml_and_lazy_config(config):
    """The ADE20K recipe tests at base size 520 with 480 sliding windows: the analysed model of
    either config kind runs one pass on the whole input instead."""
    model, notes = analysis_model(load_config(config, purpose="analyze"))
    assert (model.scales, model.flip, model.base_size, model.crop_size) == ((1.0,), False, 0, 0)
    assert "one pass on the whole input" in notes[-1]
