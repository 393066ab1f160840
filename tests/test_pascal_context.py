"""PASCAL Context (59 classes): preparation script, registration, start-up checks, the released
Encoding models' layout, and a toy train + eval on a generated tree in the real layout."""

import importlib.util
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_utils

from resnest_dense.checkpoint import CheckpointMismatchError, check_state_dict
from resnest_dense.checkpoint.encoding import convert_encoding_deeplab_state_dict
from resnest_dense.data.pascal_context import (
    PASCAL_CONTEXT_59,
    PASCAL_CONTEXT_59_CLASSES,
    load_pascal_context_split,
    register_pascal_context,
)
from resnest_dense.engine import load_config
from resnest_dense.engine.checks import check_weights
from resnest_dense.errors import MissingFileError, StartupError
from resnest_dense.model_zoo import conversion, default_registry, get_config_file

from test_model_zoo import TIMM_NAMES, deep_slow, encoding_deeplab_state, official_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INDEX = {cid: i for i, (cid, _) in enumerate(PASCAL_CONTEXT_59)}
CAR, PERSON, SKY, WOOD, AEROPLANE = 59, 284, 360, 458, 2
OUTSIDE = 3  # a Detail category id that is not one of the 59


def _load_script():
    path = os.path.join(REPO, "datasets", "prepare_pascal_context.py")
    spec = importlib.util.spec_from_file_location("prepare_pascal_context", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rle(mask: np.ndarray, compressed: bool = True):
    """A COCO RLE of ``mask`` as trainval_merged.json stores it (string or list counts)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}
    # Uncompressed: run lengths in column-major order, starting with a run of zeros.
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def write_pcontext_tree(root, images, categories=None):
    """``root/VOCdevkit/VOC2010`` with JPEGImages and trainval_merged.json.

    Args:
        images: ``[(stem, phase, (h, w), [(category_id, segmentation), ...]), ...]``.
        categories: the json's ``categories`` (default: the 59 + the outside id).
    """
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {"info": {}, "images": [], "annos_segmentation": [], "parts": []}
    data["categories"] = categories or [
        {"category_id": cid, "name": name, "supercategory": "object", "onlysemantic": 0}
        for cid, name in PASCAL_CONTEXT_59 + ((OUTSIDE, "outside_thing"),)
    ]
    for n, (stem, phase, (h, w), anns) in enumerate(images):
        image_id = 2008000000 + n
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(
            voc / "JPEGImages" / f"{stem}.jpg"
        )
        data["images"].append(
            {"image_id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w,
             "phase": phase}
        )  # fmt: skip
        for cid, seg in anns:
            data["annos_segmentation"].append(
                {"id": len(data["annos_segmentation"]) + 1, "image_id": image_id,
                 "category_id": cid, "segmentation": seg, "iscrowd": 0}
            )  # fmt: skip
    (voc / "trainval_merged.json").write_text(json.dumps(data))
    return voc


def _exact_tree(tmp_path):
    shape = (8, 10)
    car = _box(shape, 0, 4, 0, 10)
    outside = _box(shape, 2, 6, 0, 5)  # drawn after the car: covers part of it
    person = [[6.0, 4.0, 9.0, 4.0, 9.0, 7.0, 6.0, 7.0]]  # polygon
    images = [
        ("2008_000002", "train", shape, [(CAR, _rle(car)), (OUTSIDE, _rle(outside)),
                                         (PERSON, person)]),
        ("2008_000001", "train", (6, 6), [(WOOD, _rle(_box((6, 6), 0, 6, 0, 3), False)),
                                          (AEROPLANE, _rle(_box((6, 6), 0, 6, 3, 6)))]),
        ("2008_000003", "val", (5, 7), [(SKY, _rle(_box((5, 7), 0, 2, 0, 7)))]),
        ("2008_000004", "test", (5, 5), []),
    ]  # fmt: skip
    return write_pcontext_tree(tmp_path, images)


def test_prepare_writes_exact_59_class_labels_and_splits(tmp_path):
    prepare = _load_script()
    voc = _exact_tree(tmp_path)
    assert prepare.main(["--voc2010", str(voc)]) == 0
    labels = voc / "SegmentationClassContext59"
    splits = voc / "ImageSets" / "SegmentationContext"
    # Split files: the json's train / val phases, sorted; the "test" phase is not written.
    assert (splits / "train.txt").read_text() == "2008_000001\n2008_000002\n"
    assert (splits / "val.txt").read_text() == "2008_000003\n"
    assert sorted(os.listdir(labels)) == ["2008_000001.png", "2008_000002.png", "2008_000003.png"]

    expected = np.full((8, 10), 255, np.uint8)  # unlabelled -> ignore
    expected[0:4, :] = INDEX[CAR]  # 13
    expected[2:6, 0:5] = 255  # the later annotation of a category outside the 59 -> ignore
    filled = mask_utils.decode(
        mask_utils.frPyObjects([[6.0, 4.0, 9.0, 4.0, 9.0, 7.0, 6.0, 7.0]], 8, 10)
    )[..., 0].astype(bool)
    expected[filled] = INDEX[PERSON]  # 36
    got = np.asarray(Image.open(labels / "2008_000002.png"))
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    assert INDEX[CAR] == 13 and INDEX[PERSON] == 36 and INDEX[WOOD] == 58 and INDEX[SKY] == 46

    second = np.asarray(Image.open(labels / "2008_000001.png"))
    assert second[:, :3].tolist() == [[58] * 3] * 6 and second[:, 3:].tolist() == [[0] * 3] * 6
    val = np.asarray(Image.open(labels / "2008_000003.png"))
    assert val[:2].tolist() == [[46] * 7] * 2 and (val[2:] == 255).all()

    # Existing labels are kept unless --overwrite.
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(labels / "2008_000001.png")
    assert prepare.main(["--voc2010", str(voc)]) == 0
    assert np.asarray(Image.open(labels / "2008_000001.png")).max() == 0
    assert prepare.main(["--voc2010", str(voc), "--overwrite"]) == 0
    assert np.array_equal(np.asarray(Image.open(labels / "2008_000001.png")), second)


def test_prepare_refuses_other_numbering_and_missing_images(tmp_path, caplog):
    prepare = _load_script()
    wrong = [{"category_id": CAR, "name": "sky"}]
    voc = write_pcontext_tree(tmp_path / "a", [("x", "train", (4, 4), [])], categories=wrong)
    with pytest.raises(ValueError, match="59: 'sky' \\(expected 'car'\\)"):
        prepare.prepare(str(voc), str(voc / "trainval_merged.json"))
    voc = write_pcontext_tree(tmp_path / "b", [("y", "val", (4, 4), [])])
    os.remove(voc / "JPEGImages" / "y.jpg")
    assert prepare.main(["--voc2010", str(voc)]) == 1
    assert "1 images named in" in caplog.text and "y.jpg" in caplog.text
    assert not (voc / "SegmentationClassContext59").exists()
    bad = [("z", "train", (4, 4), [(CAR, _rle(np.ones((5, 4), bool)))])]
    voc = write_pcontext_tree(tmp_path / "c", bad)
    with pytest.raises(ValueError, match="z.jpg: annotation 1: segmentation size \\[5, 4\\]"):
        prepare.prepare(str(voc), str(voc / "trainval_merged.json"))
    assert prepare.main(["--voc2010", str(tmp_path / "nowhere")]) == 1


def test_registration_metadata_and_split_loading(tmp_path):
    voc = _exact_tree(tmp_path)
    assert _load_script().main(["--voc2010", str(voc)]) == 0
    names = register_pascal_context(str(tmp_path), prefix="pytest_pcontext_reg")
    assert names == ["pytest_pcontext_reg_train", "pytest_pcontext_reg_val"]
    dicts = DatasetCatalog.get("pytest_pcontext_reg_train")
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["2008_000001.jpg",
                                                                "2008_000002.jpg"]  # fmt: skip
    assert all(os.path.isfile(d["sem_seg_file_name"]) for d in dicts)
    meta = MetadataCatalog.get("pytest_pcontext_reg_val")
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert meta.stuff_classes == PASCAL_CONTEXT_59_CLASSES and len(meta.stuff_classes) == 59
    # The builtin names exist and are what the configs train and test on.
    cfg = load_config(
        get_config_file("PascalContext-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_80ep.yaml"),
        purpose="demo",
        allow_random_weights=True,
    )
    assert cfg.DATASETS.TRAIN == ("pascal_context_59_train",)
    assert cfg.DATASETS.TEST == ("pascal_context_59_val",) and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert MetadataCatalog.get("pascal_context_59_val").stuff_classes == PASCAL_CONTEXT_59_CLASSES

    os.remove(voc / "SegmentationClassContext59" / "2008_000003.png")
    with pytest.raises(MissingFileError, match="1 of 1 label PNGs are missing: .*2008_000003.png"):
        load_pascal_context_split(meta.split_file, meta.image_root, meta.sem_seg_root)
    with pytest.raises(MissingFileError, match="prepare_pascal_context.py"):
        load_pascal_context_split(str(tmp_path / "none.txt"), meta.image_root, meta.sem_seg_root)


def test_startup_names_the_missing_folders(tmp_path):
    register_pascal_context(str(tmp_path / "empty"), prefix="pytest_pcontext_missing")
    config = get_config_file(
        "PascalContext-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_80ep.yaml"
    )
    opts = ["DATASETS.TRAIN", ("pytest_pcontext_missing_train",),
            "DATASETS.TEST", ("pytest_pcontext_missing_val",), "MODEL.WEIGHTS", ""]  # fmt: skip
    with pytest.raises(MissingFileError) as info:
        load_config(config, [str(o) for o in opts], purpose="train", world_size=1)
    msg = str(info.value)
    for name in ("pytest_pcontext_missing_train", "pytest_pcontext_missing_val"):
        assert f"Dataset {name!r}" in msg
    voc = os.path.join(str(tmp_path / "empty"), "VOCdevkit", "VOC2010")
    for field, path in (
        ("image_root", "JPEGImages"),
        ("sem_seg_root", "SegmentationClassContext59"),
        ("split_file", "ImageSets/SegmentationContext/val.txt"),
    ):
        assert f"{field} {os.path.join(voc, *path.split('/'))!r}" in msg


def test_released_pcontext_weights_fit_segmentation_configs_only():
    seg = load_config(
        get_config_file("PascalContext-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_80ep.yaml"),
        purpose="demo",
        allow_random_weights=True,
    )
    seg.MODEL.WEIGHTS = "resnest://deeplab_resnest50_pcontext"
    assert check_weights(seg, "eval") == []
    det = load_config(
        get_config_file("COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml"),
        purpose="demo",
        allow_random_weights=True,
    )
    det.MODEL.WEIGHTS = "resnest://deeplab_resnest50_pcontext"
    (problem,) = check_weights(det, "eval")
    assert "is a pcontext_segmenter" in str(problem) and "deeplabv3_S_50_OS8_syncbn_80ep" in str(
        problem
    )


PCONTEXT_ENTRIES = [e for e in default_registry().values() if e.kind == "pcontext_segmenter"]


def test_registry_lists_the_four_encoding_pcontext_models():
    by_name = {e.name: e for e in PCONTEXT_ENTRIES}
    assert sorted(by_name) == [f"deeplab_resnest{d}_pcontext" for d in (101, 200, 269, 50)]
    e = by_name["deeplab_resnest269_pcontext"]
    assert e.hash_value == "b661fd26c49656e01e9487cd9245babb12f37449"
    assert e.file == "deeplab_resnest269_pcontext-b661fd26.pth" and e.archive == "zip"
    wasabi = "https://s3.us-west-1.wasabisys.com/encoding/models/"
    assert e.urls == (wasabi + "deeplab_resnest269_pcontext-b661fd26.zip",)
    for entry in PCONTEXT_ENTRIES:
        assert entry.file.startswith(f"{entry.name}-{entry.hash_value[:8]}")
        assert entry.format == "encoding_deeplab" and entry.variant in TIMM_NAMES
        cfg = load_config(get_config_file(entry.config), purpose="demo", allow_random_weights=True)
        assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 59
        assert cfg.MODEL.RESNETS.DEPTH == int(entry.variant[len("resnest") :])


@pytest.mark.parametrize("entry", deep_slow(PCONTEXT_ENTRIES), ids=lambda e: e.name)
def test_encoding_pcontext_layout_converts_to_its_config(entry):
    """A state dict in the exact layout of Encoding's DeepLabV3 (59-class head and aux head)
    converts and matches the model its config builds: no missing, unexpected or reshaped key."""
    timm_name, kwargs = TIMM_NAMES[entry.variant]
    state = encoding_deeplab_state(official_state(timm_name, **kwargs), nclass=59)
    converted, dropped = convert_encoding_deeplab_state_dict(state)
    assert "pretrained.fc.weight" in dropped
    assert converted["sem_seg_head.block.4.weight"].shape[0] == 59
    assert converted["sem_seg_head.auxlayer.conv5.4.bias"].shape == (59,)
    check_state_dict(converted, conversion._config_model_state(entry.config), what=entry.file)
    # The ADE20K (150-class) layout does not fit: the head's class count is checked.
    ade = convert_encoding_deeplab_state_dict(
        encoding_deeplab_state(official_state(timm_name, **kwargs), nclass=150)
    )[0]
    with pytest.raises(CheckpointMismatchError, match="sem_seg_head.block.4"):
        check_state_dict(ade, conversion._config_model_state(entry.config), what=entry.file)


# ------------------------------------------------------------------- toy train + eval


def _random_tree(root, stems_by_phase, size=(72, 88)):
    rng = np.random.default_rng(1)
    used = [CAR, PERSON, SKY, WOOD]
    images = []
    for phase, stems in stems_by_phase.items():
        for stem in stems:
            anns = []
            for cid in used + [OUTSIDE]:
                y, x = rng.integers(0, size[0] - 20), rng.integers(0, size[1] - 20)
                box = _box(size, y, y + int(rng.integers(10, 30)), x, x + int(rng.integers(10, 30)))
                anns.append((cid, _rle(box)))
            images.append((stem, phase, size, anns))
    return write_pcontext_tree(root, images)


@pytest.mark.slow
def test_toy_training_and_evaluation_on_generated_pascal_context(tmp_path):
    from resnest_dense import engine

    voc = _random_tree(
        tmp_path, {"train": [f"2008_00{i:04d}" for i in range(4)], "val": ["2010_000001",
                                                                          "2010_000002"]}
    )  # fmt: skip
    assert _load_script().main(["--voc2010", str(voc)]) == 0
    train, val = register_pascal_context(str(tmp_path), prefix="pytest_pcontext_toy")
    config = get_config_file(
        "PascalContext-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_80ep.yaml"
    )
    opts = [
        "DATASETS.TRAIN", (train,), "DATASETS.TEST", (val,), "MODEL.WEIGHTS", "",
        "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 14, "MODEL.RESNETS.STEM_WIDTH", 16,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.RESNETS.NORM", "BN",
        "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
        "MODEL.SEM_SEG_HEAD.AUX_CONVS_DIM", 16, "INPUT.BASE_SIZE", 80, "INPUT.CROP.SIZE", [64, 64],
        "TEST.SEM_SEG.BASE_SIZE", 0, "TEST.SEM_SEG.CROP_SIZE", 0, "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 1000, "DATALOADER.NUM_WORKERS", 0,
        "TEST.EVAL_PERIOD", 0, "OUTPUT_DIR", str(tmp_path / "out"),
    ]  # fmt: skip
    cfg = load_config(config, [str(o) for o in opts], purpose="train", world_size=1)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 59 and cfg.SOLVER.BASE_LR == 0.001
    cfg.freeze()
    results = engine.train(cfg)["sem_seg"]
    # The evaluator ran over the 59 classes of the metadata, with finite scores.
    assert {f"IoU-{c}" for c in PASCAL_CONTEXT_59_CLASSES} <= set(results)
    assert 0.0 <= results["pACC"] <= 100.0 and np.isfinite(results["mIoU"])
    written = json.load(open(tmp_path / "out" / "results.json"))["results"]["sem_seg"]
    assert written["mIoU"] == pytest.approx(results["mIoU"])


def test_pascal_context_label_out_of_range_is_named_at_startup(tmp_path):
    voc = _exact_tree(tmp_path)
    assert _load_script().main(["--voc2010", str(voc)]) == 0
    Image.fromarray(np.full((5, 7), 59, np.uint8)).save(
        voc / "SegmentationClassContext59" / "2008_000003.png"
    )
    register_pascal_context(str(tmp_path), prefix="pytest_pcontext_bad")
    config = get_config_file(
        "PascalContext-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_80ep.yaml"
    )
    opts = ["DATASETS.TEST", ("pytest_pcontext_bad_val",), "DATASETS.TRAIN",
            ("pytest_pcontext_bad_train",), "MODEL.WEIGHTS", ""]  # fmt: skip
    with pytest.raises(StartupError, match="2008_000003.png.*59"):
        load_config(config, [str(o) for o in opts], purpose="train", world_size=1)


@pytest.mark.parametrize(
    "depth,stem", [(50, 32), (101, 64), (200, 64), (269, 64)], ids=lambda v: str(v)
)
def test_configs_follow_the_encoding_pcontext_recipe(depth, stem):
    name = f"PascalContext-SemanticSegmentation/deeplabv3_S_{depth}_OS8_syncbn_80ep.yaml"
    cfg = load_config(get_config_file(name), purpose="demo", allow_random_weights=True)
    r, head = cfg.MODEL.RESNETS, cfg.MODEL.SEM_SEG_HEAD
    assert (r.DEPTH, r.STEM_WIDTH, r.RADIX, r.AVD, r.AVG_DOWN) == (depth, stem, 2, True, True)
    assert cfg.MODEL.WEIGHTS == f"resnest://resnest{depth}" and r.NORM == "SyncBN"
    assert (head.NUM_CLASSES, head.IGNORE_VALUE, head.AUX_LOSS_WEIGHT) == (59, 255, 0.2)
    assert (cfg.INPUT.BASE_SIZE, cfg.INPUT.CROP.SIZE) == (520, [480, 480])
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.HEAD_LR_MULTIPLIER) == (
        16, 0.001, 10.0
    )  # fmt: skip
    assert cfg.SOLVER.MAX_ITER == 80 * (4998 // 16)
    assert "OUTPUT_DIR" not in open(get_config_file(name)).read()


def test_eval_released_names_the_missing_pcontext_data_and_weights(tmp_path, monkeypatch, caplog):
    from detection_helpers import load_tool

    reproduce = load_tool("reproduce")
    monkeypatch.setenv("RESNEST_DENSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNEST_DENSE_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RESNEST_DENSE_REGISTRY", raising=False)
    caplog.set_level("INFO", logger="reproduce")
    out = tmp_path / "o"
    assert reproduce.main(["--eval-released", "--only", "deeplab_resnest50_pcontext",
                           "--output", str(out)]) == 1  # fmt: skip
    assert not out.exists()
    text = caplog.text
    assert (
        "--config-file configs/PascalContext-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_80ep"
        ".yaml --eval-only --num-gpus 1 MODEL.WEIGHTS resnest://deeplab_resnest50_pcontext"
    ) in text
    assert "deeplab_resnest50_pcontext-08dccbc4.zip" in text
    assert "Dataset 'pascal_context_59_val'" in text and "split_file" in text
    assert "Evaluated 0 of 1" in text
