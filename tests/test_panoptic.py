"""Panoptic FPN end to end on CPU: the generated toy panoptic set, PQ evaluation of model-style
outputs, start-up checks of the stuff labels, and train -> --eval-only -> demo with a tiny
ResNeSt-14 Panoptic FPN."""

import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from detection_helpers import CONFIGS, load_tool, train_net_args
from resnest_dense.data.panoptic_ids import rgb_to_id
from resnest_dense.data.toy_panoptic import register_toy_panoptic, toy_panoptic_metadata
from resnest_dense.engine import load_config
from resnest_dense.engine.panoptic import PanopticQualityEvaluator
from resnest_dense.errors import StartupError

PREFIX = "pantest"
TOY_CONFIG = os.path.join(CONFIGS, "quick_schedules", "toy_panoptic_fpn_S14.yaml")
TINY = [
    "MODEL.RESNETS.STEM_WIDTH", 16, "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, "TEST.DETECTIONS_PER_IMAGE", 10,
    "INPUT.MIN_SIZE_TRAIN", (64, 80), "INPUT.MAX_SIZE_TRAIN", 128,
    "INPUT.MIN_SIZE_TEST", 80, "INPUT.MAX_SIZE_TEST", 128,
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.01, "SOLVER.STEPS", (),
    "SOLVER.WARMUP_ITERS", 0, "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 2,
    "TEST.PRECISE_BN.ENABLED", False, "DATALOADER.NUM_WORKERS", 0,
    "DATASETS.TRAIN", (f"{PREFIX}_train",), "DATASETS.TEST", (f"{PREFIX}_val",),
]  # fmt: skip


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    """``pantest_{train,val}``: 10 + 4 generated panoptic scenes, generated now."""
    root = str(tmp_path_factory.mktemp("data") / "toy_panoptic")
    if f"{PREFIX}_train" not in DatasetCatalog.list():
        register_toy_panoptic(root=root, prefix=PREFIX, num_train=10, num_val=4)
    DatasetCatalog.get(f"{PREFIX}_val")
    return MetadataCatalog.get(f"{PREFIX}_val").panoptic_root.rsplit(os.sep, 1)[0]


def _panoptic_annotations(root, split="val"):
    with open(os.path.join(root, "annotations", f"panoptic_{split}.json")) as f:
        return json.load(f)


def _read_ids(root, split, file_name):
    rgb = cv2.imread(os.path.join(root, f"panoptic_{split}", file_name))[:, :, ::-1]
    return rgb_to_id(rgb)


def test_toy_set_files_agree(toy_root):
    panoptic = _panoptic_annotations(toy_root)
    with open(os.path.join(toy_root, "annotations", "instances_val.json")) as f:
        instances = json.load(f)
    stuff_map = toy_panoptic_metadata()["stuff_dataset_id_to_contiguous_id"]
    is_thing = {c["id"]: c["isthing"] for c in panoptic["categories"]}
    assert sorted(is_thing.values()) == [0, 0, 1, 1, 1]
    seen_void = seen_things = False
    for ann in panoptic["annotations"]:
        ids = _read_ids(toy_root, "val", ann["file_name"])
        stuff = cv2.imread(os.path.join(toy_root, "panoptic_stuff_val", ann["file_name"]), 0)
        segments = {s["id"]: s for s in ann["segments_info"]}
        # Every id in the PNG is listed with its exact area; VOID (0) is unlabelled in stuff.
        labels, counts = np.unique(ids, return_counts=True)
        assert set(labels.tolist()) - {0} == set(segments)
        for label, count in zip(labels.tolist(), counts.tolist()):
            if label == 0:
                assert (stuff[ids == 0] == 255).all()
                seen_void = True
                continue
            s = segments[label]
            assert s["area"] == count
            want = 0 if is_thing[s["category_id"]] else stuff_map[s["category_id"]]
            assert (stuff[ids == label] == want).all()
        # The instance polygons and the panoptic thing segments are the same shapes.
        h, w = ids.shape
        polys = [a for a in instances["annotations"] if a["image_id"] == ann["image_id"]]
        things = [s for s in ann["segments_info"] if is_thing[s["category_id"]]]
        assert len(polys) == len(things)
        for poly, seg in zip(polys, things):
            seen_things = True
            rle = mask_util.merge(mask_util.frPyObjects(poly["segmentation"], h, w))
            mask = mask_util.decode(rle).astype(bool)
            seg_mask = ids == seg["id"]
            assert poly["category_id"] == seg["category_id"]
            assert np.array_equal(mask, seg_mask)
    assert seen_void and seen_things


def test_registered_dicts_hold_instances_and_stuff_labels(toy_root):
    dicts = DatasetCatalog.get(f"{PREFIX}_train")
    assert len(dicts) == 10
    assert all(os.path.isfile(d["sem_seg_file_name"]) for d in dicts)
    assert sum(len(d["annotations"]) for d in dicts) > 0
    meta = MetadataCatalog.get(f"{PREFIX}_train")
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.stuff_classes == ["things", "sky", "ground"]


def _ground_truth_as_prediction(root, ann, drop_first_thing=False):
    """A model-style ``panoptic_seg`` output equal to the ground truth (contiguous ids)."""
    meta = toy_panoptic_metadata()
    ids = _read_ids(root, "val", ann["file_name"])
    infos = []
    dropped = False
    for s in ann["segments_info"]:
        isthing = s["category_id"] in meta["thing_dataset_id_to_contiguous_id"]
        if isthing and drop_first_thing and not dropped:
            ids[ids == s["id"]] = 0
            dropped = True
            continue
        mapping = meta[
            "thing_dataset_id_to_contiguous_id" if isthing else "stuff_dataset_id_to_contiguous_id"
        ]
        infos.append({"id": s["id"], "category_id": mapping[s["category_id"]], "isthing": isthing})
    return torch.as_tensor(ids), infos, dropped


@pytest.mark.parametrize("drop", [False, True])
def test_evaluator_on_ground_truth_predictions(toy_root, drop, tmp_path):
    evaluator = PanopticQualityEvaluator(f"{PREFIX}_val", str(tmp_path))
    evaluator.reset()
    dropped_any = False
    for ann in _panoptic_annotations(toy_root)["annotations"]:
        ids, infos, dropped = _ground_truth_as_prediction(toy_root, ann, drop)
        dropped_any |= dropped
        evaluator.process([{"image_id": ann["image_id"]}], [{"panoptic_seg": (ids, infos)}])
    res = evaluator.evaluate()["panoptic_seg"]
    saved = json.load(open(tmp_path / "panoptic_quality.json"))
    assert saved["num_images"] == 4
    if not drop:
        assert res["PQ"] == res["SQ"] == res["RQ"] == 100.0
        assert res["PQ_th"] == 100.0 and res["PQ_st"] == 100.0
        return
    assert dropped_any
    assert res["PQ_st"] == 100.0 and res["SQ_th"] == 100.0
    assert 0 < res["RQ_th"] < 100.0 and res["PQ_th"] == res["RQ_th"]


def test_evaluator_reads_label_divisor_outputs(toy_root):
    """detectron2's other output convention (Panoptic-DeepLab): no segments_info, ids are
    ``category * label_divisor + instance`` in one contiguous class space, -1 is VOID."""
    source = MetadataCatalog.get(f"{PREFIX}_val")
    name = f"{PREFIX}_val_one_class_space"
    MetadataCatalog.get(name).set(
        panoptic_json=source.panoptic_json,
        panoptic_root=source.panoptic_root,
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2},
        stuff_dataset_id_to_contiguous_id={4: 3, 5: 4},
        label_divisor=1000,
    )
    evaluator = PanopticQualityEvaluator(name)
    evaluator.reset()
    for ann in _panoptic_annotations(toy_root)["annotations"]:
        ids = _read_ids(toy_root, "val", ann["file_name"])
        out = torch.full(ids.shape, -1, dtype=torch.int64)
        for k, s in enumerate(ann["segments_info"]):
            contiguous = s["category_id"] - 1
            instance = k + 1 if s["category_id"] <= 3 else 0
            out[torch.as_tensor(ids == s["id"])] = contiguous * 1000 + instance
        evaluator.process([{"image_id": ann["image_id"]}], [{"panoptic_seg": (out, None)}])
    res = evaluator.evaluate()["panoptic_seg"]
    assert res["PQ"] == 100.0 and res["PQ_th"] == 100.0 and res["PQ_st"] == 100.0


def test_evaluator_needs_panoptic_metadata():
    name = "pantest_no_panoptic_metadata"
    MetadataCatalog.get(name).set(evaluator_type="coco_panoptic_seg")
    with pytest.raises(StartupError, match="panoptic_json, panoptic_root"):
        PanopticQualityEvaluator(name)


def test_prediction_at_another_resolution_is_named(toy_root):
    evaluator = PanopticQualityEvaluator(f"{PREFIX}_val")
    ann = _panoptic_annotations(toy_root)["annotations"][0]
    ids, infos, _ = _ground_truth_as_prediction(toy_root, ann)
    with pytest.raises(ValueError, match=r"panoptic_val.*000000\.png.*resolution"):
        evaluator.process([{"image_id": ann["image_id"]}], [{"panoptic_seg": (ids[:-1], infos)}])


def test_bad_stuff_label_is_refused_at_start_up(tmp_path):
    root = str(tmp_path / "bad")
    register_toy_panoptic(root=root, prefix="panbad", num_train=2, num_val=2)
    DatasetCatalog.get("panbad_val")  # generate
    label_file = os.path.join(root, "panoptic_stuff_val", "000001.png")
    label = cv2.imread(label_file, 0)
    label[0, 0] = 7  # the stuff head has 3 classes (things, sky, ground)
    cv2.imwrite(label_file, label)
    opts = ["MODEL.WEIGHTS", "", "DATASETS.TRAIN", ("panbad_train",)]
    opts += ["DATASETS.TEST", ("panbad_val",), "MODEL.RESNETS.STEM_WIDTH", 16]
    with pytest.raises(StartupError, match=r"000001\.png") as e:
        load_config(TOY_CONFIG, opts, purpose="train")
    assert "7" in str(e.value)


@pytest.mark.slow
def test_train_eval_demo(toy_root, tmp_path):
    train_net = load_tool("train_net")
    out = tmp_path / "run"
    train_net.main(train_net_args(TOY_CONFIG, *TINY, "OUTPUT_DIR", out, "DATASETS.TEST", ()))
    weights = out / "model_final.pth"
    stored = torch.load(weights, map_location="cpu", weights_only=False)["dataset_metadata"]
    assert stored["thing_classes"] == ["circle", "square", "triangle"]
    assert stored["stuff_classes"] == ["things", "sky", "ground"]

    ev = tmp_path / "eval"
    results = train_net.main(
        train_net_args(
            TOY_CONFIG, *TINY, "OUTPUT_DIR", ev, "MODEL.WEIGHTS", weights, eval_only=True
        )
    )
    assert {"panoptic_seg", "sem_seg", "bbox", "segm"} <= set(results)
    pq = results["panoptic_seg"]
    assert set(pq) == {f"{m}{p}" for m in ("PQ", "SQ", "RQ") for p in ("", "_th", "_st")}
    # Two iterations find the large stuff regions somewhere; the numbers are real counts.
    assert all(0.0 <= v <= 100.0 for v in pq.values() if v == v)
    saved = json.load(open(ev / "inference" / "panoptic_quality.json"))
    assert saved["num_images"] == 4
    assert json.load(open(ev / "results.json"))["results"]["panoptic_seg"] == pq

    demo = load_tool("demo")
    images = [os.path.join(toy_root, "val", f"00000{i}.png") for i in range(2)]
    code = demo.main(
        ["--config-file", TOY_CONFIG, "--input", *images, "--output", str(tmp_path / "demo")]
        + [
            "--confidence-threshold",
            "0.0",
            "--opts",
            *map(str, TINY),
            "MODEL.WEIGHTS",
            str(weights),
        ]
    )
    assert code == 0
    for i in range(2):
        overlay = cv2.imread(str(tmp_path / "demo" / f"00000{i}.png"))
        source = cv2.imread(images[i])
        assert overlay.shape == source.shape and not np.array_equal(overlay, source)


def _coco_layout(toy_root, root):
    """The toy val split in COCO's panoptic layout (annotations/panoptic_val2017.json ...)."""
    import shutil

    os.makedirs(os.path.join(root, "annotations"))
    shutil.copy(
        os.path.join(toy_root, "annotations", "panoptic_val.json"),
        os.path.join(root, "annotations", "panoptic_val2017.json"),
    )
    shutil.copytree(os.path.join(toy_root, "panoptic_val"), os.path.join(root, "panoptic_val2017"))


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_panoptic_fpn_writes_the_stuff_labels(toy_root, tmp_path, workers, caplog):
    prepare = load_tool("prepare_panoptic_fpn", folder="datasets")
    root = str(tmp_path / "coco")
    _coco_layout(toy_root, root)
    argv = ["--root", root, "--splits", "val2017", "--workers", str(workers)]
    assert prepare.main(argv) == 0
    out = os.path.join(root, "panoptic_stuff_val2017")
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(os.path.join(toy_root, "panoptic_stuff_val")))
    for name in names:
        got = cv2.imread(os.path.join(out, name), cv2.IMREAD_UNCHANGED)
        want = cv2.imread(os.path.join(toy_root, "panoptic_stuff_val", name), cv2.IMREAD_UNCHANGED)
        assert got.dtype == np.uint8 and np.array_equal(got, want), name
    # A second run skips what exists.
    with caplog.at_level("INFO"):
        assert prepare.main(argv) == 0
    assert "wrote 0 stuff label maps" in caplog.text


def test_prepare_panoptic_fpn_names_a_png_json_mismatch(toy_root, tmp_path, caplog):
    prepare = load_tool("prepare_panoptic_fpn", folder="datasets")
    root = str(tmp_path / "coco")
    _coco_layout(toy_root, root)
    path = os.path.join(root, "annotations", "panoptic_val2017.json")
    data = json.load(open(path))
    data["annotations"][1]["segments_info"].pop(0)
    json.dump(data, open(path, "w"))
    assert prepare.main(["--root", root, "--splits", "val2017", "--workers", "1"]) == 1
    assert "000001.png" in caplog.text and "not in the JSON" in caplog.text
    out = os.path.join(root, "panoptic_stuff_val2017")
    assert "000001.png" not in os.listdir(out)
    assert not [f for f in os.listdir(out) if not f.endswith(".png")]  # no partial writes
    assert prepare.main(["--root", str(tmp_path / "nothing"), "--splits", "val2017"]) == 1
    assert "Missing" in caplog.text


@pytest.mark.parametrize(
    "config, weights, message",
    [
        (
            TOY_CONFIG,
            "mask_rcnn_ResNeSt_50_FPN_syncBN_1x",
            "coco_detector but the config builds a PanopticFPN",
        ),
        (
            "COCO-InstanceSegmentation/mask_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml",
            "panoptic_ResNeSt_200_FPN_syncBN_tricks_3x",
            "coco_panoptic but the config builds a GeneralizedRCNN",
        ),
        (TOY_CONFIG, "resnest50", "ImageNet backbone weights only; the panoptic heads"),
    ],
)
def test_released_weights_of_another_task_are_refused(config, weights, message):
    from resnest_dense.config import get_resnest_cfg
    from resnest_dense.engine.checks import check_weights

    path = config if os.path.isabs(config) else os.path.join(CONFIGS, config)
    cfg = get_resnest_cfg(path, ["MODEL.WEIGHTS", f"resnest://{weights}"])
    problems = check_weights(cfg, "eval")
    assert len(problems) == 1 and message in str(problems[0])
    if "ImageNet" in message:  # training from ImageNet weights is fine-tuning: allowed
        assert check_weights(cfg, "train") == []


def test_released_panoptic_config_spells_the_forks_recipe():
    config = "COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x.yaml"
    cfg = load_config(os.path.join(CONFIGS, config), ["DATASETS.TRAIN", (), "DATASETS.TEST", ()])
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN" and cfg.MODEL.MASK_ON
    r = cfg.MODEL.RESNETS
    assert (r.DEPTH, r.RADIX, r.DEEP_STEM, r.STEM_WIDTH, r.AVD, r.AVG_DOWN) == (
        200,
        2,
        True,
        64,
        True,
        True,
    )
    assert r.NORM == cfg.MODEL.FPN.NORM == cfg.MODEL.SEM_SEG_HEAD.NORM == "SyncBN"
    assert cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads"
    assert (
        cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG and cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN == 2000
    )
    assert (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT) == (54, 0.5)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (400, 1000) and cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range"
    assert cfg.INPUT.MAX_SIZE_TRAIN == 1440 and cfg.INPUT.FORMAT == "RGB"
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (270000, (240000, 255000))
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (16, 0.02)
    assert cfg.TEST.PRECISE_BN.ENABLED and cfg.TEST.AUG.ENABLED
    assert cfg.MODEL.WEIGHTS == "resnest://resnest200"
