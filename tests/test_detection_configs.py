"""Every YAML under configs/ loads through train_net's setup and builds; twins; config errors."""

import glob
import os

import pytest
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog

from detection_helpers import CONFIGS, TOY_PREFIX, train_net_args
from resnest_dense.engine import Trainer, load_config, setup
from resnest_dense.layers import SplitAttentionConv2d

ALL_CONFIGS = sorted(
    os.path.relpath(p, CONFIGS)
    for p in glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True)
)
TOY_DATA = [
    "DATASETS.TRAIN", (f"{TOY_PREFIX}_train",), "DATASETS.TEST", (f"{TOY_PREFIX}_val",),
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.RETINANET.NUM_CLASSES", 3,
]  # fmt: skip
# Segmentation and panoptic configs are built without data here (their data checks:
# test_data_validation, test_panoptic).
NO_DATA = ["DATASETS.TRAIN", (), "DATASETS.TEST", ()]


def toy_data(config: str):
    """Overrides that give a config data its start-up checks accept (the toy detection set)."""
    segmentation = ("SemanticSegmentation", "deeplab", "anoptic")
    return NO_DATA if any(k in config for k in segmentation) else TOY_DATA


pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py


def test_all_families_present():
    names = set(ALL_CONFIGS)
    for family in ("faster_rcnn", "faster_cascade_rcnn"):
        for b in ("R_50", "R_101", "ResNeSt_50", "ResNeSt_101", "ResNeSt_200"):
            assert f"COCO-Detection/{family}_{b}_FPN_syncbn_range-scale_1x.yaml" in names
    for family in ("mask_rcnn", "mask_cascade_rcnn"):
        for b in ("R_50", "R_101"):
            assert f"COCO-InstanceSegmentation/{family}_{b}_FPN_syncbn_1x.yaml" in names
        for b in ("ResNeSt_50", "ResNeSt_101", "ResNeSt_200"):
            assert f"COCO-InstanceSegmentation/{family}_{b}_FPN_syncBN_1x.yaml" in names
    for b in ("R_50", "R_101", "ResNeSt_50", "ResNeSt_101"):
        assert f"COCO-Detection/retinanet_{b}_FPN_syncbn_range-scale_1x.yaml" in names


# The 101/200-layer twins build the same code paths as the 50-layer ones: full suite only.
@pytest.mark.parametrize(
    "config",
    [
        pytest.param(c, marks=pytest.mark.slow) if "_101_" in c or "_200_" in c else c
        for c in ALL_CONFIGS
    ],
)
def test_config_loads_through_setup_and_builds(config, train_net, tmp_path):
    args = train_net_args(config, *toy_data(config), "OUTPUT_DIR", tmp_path, "MODEL.DEVICE", "meta")
    cfg = setup(args)
    assert cfg.is_frozen() and os.path.isfile(tmp_path / "config.yaml")
    # Full size on the meta device: every layer is built, no memory is allocated.
    with torch.device("meta"):
        model = Trainer.build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE in ("GeneralizedRCNN", "RetinaNet"):
        assert cfg.INPUT.FORMAT == "RGB" and not cfg.MODEL.RESNETS.STRIDE_IN_1X1
        assert model.backbone.bottom_up.__class__.__name__ == "ResNet"
        if "Cascade" in cfg.MODEL.ROI_HEADS.NAME:
            assert cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
            assert len(model.roi_heads.box_predictor) == 3
        if "_ResNeSt_" in config:
            assert cfg.MODEL.WEIGHTS.startswith("resnest://resnest")
    # Split attention with radix 2 in every bottleneck of a ResNeSt (S) config, none in a ResNet
    # baseline (a plain ResNet's blocks also have a conv2, so the module type is checked).
    bottom_up = getattr(model.backbone, "bottom_up", model.backbone)
    blocks = [b for i in range(2, 6) for b in getattr(bottom_up, f"res{i}")]
    name = os.path.basename(config)
    if "_R_" in name:
        assert not any(isinstance(m, SplitAttentionConv2d) for m in bottom_up.modules()), config
    elif "_ResNeSt_" in name or "_S_" in name or "_S14_" in name:
        assert all(
            isinstance(b.conv2, SplitAttentionConv2d) and b.conv2.radix == 2 for b in blocks
        ), config
    # DCN configs: a deformable split-attention conv in every block of res3-res5 only.
    if "_dcn_" in name:
        assert not any(b.conv2.deformable for b in bottom_up.res2)
        assert all(b.conv2.deformable and b.conv2.deform_modulated for b in blocks[3:])
        assert all(b.conv2_offset.groups == 2 for b in blocks[3:])
    else:
        assert not any(getattr(b, "conv2_offset", None) is not None for b in blocks), config


def _paper_recipe_configs():
    """The paper's 1x detection recipe (the panoptic model's is checked in test_panoptic, the
    all-tricks 3x models' in test_all_tricks_3x_recipe, RetinaNet's in test_retinanet_recipe)."""
    return [
        c
        for c in ALL_CONFIGS
        if c.startswith("COCO-")
        and "Panoptic" not in c
        and "_all_tricks_" not in c
        and "retinanet_" not in c
    ]


def _retinanet_configs():
    return [c for c in ALL_CONFIGS if c.startswith("COCO-") and "retinanet_" in c]


def _common_recipe(cfg, config):
    """What the 1x and the all-tricks 3x recipes share."""
    assert cfg.MODEL.RESNETS.NORM == "SyncBN" and cfg.MODEL.FPN.NORM == "SyncBN"
    box = cfg.MODEL.ROI_BOX_HEAD
    assert (box.NUM_CONV, box.NUM_FC, box.FC_DIM) == (4, 1, 1024) and "SyncBN" in box.NORM
    assert cfg.MODEL.PIXEL_MEAN == [123.68, 116.779, 103.939]
    assert cfg.MODEL.PIXEL_STD == [58.393, 57.12, 57.375]
    assert cfg.TEST.PRECISE_BN.ENABLED and cfg.MODEL.RESNETS.DROPBLOCK_PROB == 0
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (16, 0.02)
    assert "OUTPUT_DIR" not in open(os.path.join(CONFIGS, config)).read()


@pytest.mark.parametrize("config", _paper_recipe_configs())
def test_paper_recipe(config):
    cfg = load_config(os.path.join(CONFIGS, config), TOY_DATA)
    _common_recipe(cfg, config)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800)
    assert cfg.INPUT.MAX_SIZE_TRAIN == 1333 and cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice"
    assert not cfg.INPUT.CROP.ENABLED
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (90000, (60000, 80000))
    assert cfg.MODEL.MASK_ON == config.startswith("COCO-InstanceSegmentation")
    assert cfg.MODEL.ROI_HEADS.NAME == (
        "CascadeROIHeads" if "cascade" in config else "StandardROIHeads"
    )
    assert "OUTPUT_DIR" not in open(os.path.join(CONFIGS, config)).read()


@pytest.mark.parametrize("config", [c for c in ALL_CONFIGS if "_all_tricks_3x" in c])
def test_all_tricks_3x_recipe(config):
    """The fork's ResNeSt-200 "all tricks" recipe, element by element."""
    cfg = load_config(os.path.join(CONFIGS, config), TOY_DATA)
    _common_recipe(cfg, config)
    assert cfg.MODEL.MASK_ON and cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads"
    assert cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
    assert cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN == 2000
    assert cfg.MODEL.ROI_MASK_HEAD.NUM_CONV == 8 and "SyncBN" in cfg.MODEL.ROI_MASK_HEAD.NORM
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 864) and cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range"
    assert cfg.INPUT.MAX_SIZE_TRAIN == 1440 and cfg.INPUT.CROP.ENABLED
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (270000, (240000, 255000))
    assert cfg.MODEL.RESNETS.DEPTH == 200
    assert cfg.MODEL.RESNETS.DEFORM_MODULATED == ("_dcn_" in config)


@pytest.mark.parametrize("config", _retinanet_configs())
def test_retinanet_recipe(config):
    """detectron2's RetinaNet 1x recipe with the R-CNN recipe's input, norm and mean/std."""
    cfg = load_config(os.path.join(CONFIGS, config), TOY_DATA)
    rcnn = load_config(
        os.path.join(
            CONFIGS, "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml"
        ),
        TOY_DATA,
    )
    assert cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    for key in (
        "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "MODEL.RESNETS.NORM", "MODEL.RESNETS.STRIDE_IN_1X1",
        "MODEL.FPN.NORM", "INPUT.FORMAT", "INPUT.MIN_SIZE_TRAIN", "INPUT.MIN_SIZE_TRAIN_SAMPLING",
        "INPUT.MAX_SIZE_TRAIN", "INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST",
        "TEST.PRECISE_BN.ENABLED", "MODEL.RESNETS.DROPBLOCK_PROB",
    ):  # fmt: skip
        assert _flatten(cfg)[key] == _flatten(rcnn)[key], key
    # detectron2's Base-RetinaNet.yaml.
    assert cfg.MODEL.RESNETS.OUT_FEATURES == cfg.MODEL.FPN.IN_FEATURES == ["res3", "res4", "res5"]
    sizes = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == sizes
    r = cfg.MODEL.RETINANET
    assert (r.IOU_THRESHOLDS, r.IOU_LABELS, r.SMOOTH_L1_LOSS_BETA) == ([0.4, 0.5], [0, -1, 1], 0.0)
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (16, 0.01)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (90000, (60000, 80000))
    assert "OUTPUT_DIR" not in open(os.path.join(CONFIGS, config)).read()


def _twins():
    pairs = []
    for config in _paper_recipe_configs() + _retinanet_configs():
        if "_ResNeSt_" in config and "_ResNeSt_200_" not in config and "_dcn_" not in config:
            twin = config.replace("_ResNeSt_", "_R_").replace("_syncBN_", "_syncbn_")
            pairs.append((twin, config))
    return pairs


def _flatten(node, prefix=""):
    out = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, CfgNode) else {prefix + k: v})
    return out


@pytest.mark.parametrize("baseline,resnest", _twins(), ids=lambda p: os.path.basename(p))
def test_baseline_and_resnest_twin_differ_only_in_backbone(baseline, resnest):
    a = _flatten(load_config(os.path.join(CONFIGS, baseline), TOY_DATA))
    b = _flatten(load_config(os.path.join(CONFIGS, resnest), TOY_DATA))
    assert a.keys() == b.keys()
    differing = {k for k in a if a[k] != b[k]}
    assert differing, "the twins are identical"
    allowed = ("MODEL.RESNETS.", "MODEL.BACKBONE.")
    assert all(k.startswith(allowed) or k == "MODEL.WEIGHTS" for k in differing), differing
    prefix = "build_retinanet_" if "retinanet_" in resnest else "build_"
    assert a["MODEL.BACKBONE.NAME"] == prefix + "resnet_fpn_backbone"
    assert b["MODEL.BACKBONE.NAME"] == prefix + "resnest_fpn_backbone"


def test_registry_configs_exist():
    """Every COCO config the weight registry and the paper table name is in configs/."""
    import json

    from resnest_dense.model_zoo import default_registry

    named = {e.config for e in default_registry().values() if e.config}
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, "resnest_dense", "model_zoo", "paper_results.json")) as f:
        named |= {row["config"] for row in json.load(f)["rows"]}
    assert named <= set(ALL_CONFIGS), sorted(named - set(ALL_CONFIGS))


# ------------------------------------------------------------------------------ errors


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    base = os.path.join(CONFIGS, "Base-RCNN-FPN-ResNeSt.yaml")
    bad.write_text(f'_BASE_: "{base}"\nMODEL:\n  RESNETS:\n    RADIXX: 2\n')
    with pytest.raises(KeyError) as e:
        load_config(str(bad), TOY_DATA)
    assert "MODEL.RESNETS.RADIXX" in str(e.value) and str(bad) in str(e.value)


def test_unknown_key_in_options_names_key():
    with pytest.raises(KeyError) as e:
        load_config(os.path.join(CONFIGS, _paper_recipe_configs()[0]), ["SOLVER.NOPE", 1])
    assert "SOLVER.NOPE" in str(e.value) and "command-line" in str(e.value)


def test_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(missing)


def test_unregistered_dataset_lists_registered_names():
    config = os.path.join(CONFIGS, _paper_recipe_configs()[0])
    with pytest.raises(KeyError) as e:
        load_config(config, TOY_DATA + ["DATASETS.TRAIN", ("my_typo_train",)])
    assert "my_typo_train" in str(e.value) and "toy_coco_train" in str(e.value)


def test_missing_builtin_coco_path(tmp_path, monkeypatch):
    """coco_2017_val without COCO on disk: the error names the dataset and the file."""
    monkeypatch.chdir(tmp_path)  # detectron2's builtin roots are relative ("datasets/coco")
    config = os.path.join(CONFIGS, _paper_recipe_configs()[0])
    assert "coco_2017_val" in DatasetCatalog.list()
    with pytest.raises(FileNotFoundError) as e:
        load_config(config, ["DATASETS.TRAIN", ("coco_2017_val",)])
    assert "coco_2017_val" in str(e.value) and "instances_val2017.json" in str(e.value)


def test_missing_coco_format_path(tmp_path):
    config = os.path.join(CONFIGS, _paper_recipe_configs()[0])
    entry = [["mine_train", str(tmp_path / "missing.json"), str(tmp_path)]]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_config(config, ["DATASETS.COCO_FORMAT", entry])
