"""Your own semantic-segmentation data from the command line (``DATASETS.SEM_SEG_FORMAT``):
registration and metadata, a 2-iteration train + evaluation through tools/train_net.py, and the
start-up errors of bad folders, class files and labels."""

import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from resnest_dense.data.sem_seg_format import register_sem_seg_format_datasets
from resnest_dense.data.validation import DataCheckError
from resnest_dense.engine.class_names import CHECKPOINT_KEY
from resnest_dense.engine.entry import load_config
from resnest_dense.errors import MissingFileError, StartupError

from detection_helpers import train_net_args
from segmentation_helpers import TOY_YAML

CLASSES = ["background", "bar", "blob"]
# Plain BN (one CPU process), 3 classes, tiny batches; the data set names come per test.
OPTS = [
    "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(CLASSES), "SOLVER.IMS_PER_BATCH", 2,
    "DATALOADER.NUM_WORKERS", 0, "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 100,
]  # fmt: skip


def _write_set(root, stems=("a", "b", "c"), size=(72, 88), classes=CLASSES, ignore=255, ext="jpg"):
    """``root/images/<stem>.<ext>`` + ``root/labels/<stem>.png`` (values 0..2 and ``ignore``)
    and ``root/labels/classes.json``; returns ``(image_root, label_root)``."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    h, w = size
    for i, stem in enumerate(stems):
        (images / stem).parent.mkdir(parents=True, exist_ok=True)
        (labels / stem).parent.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        label = np.zeros((h, w), np.uint8)
        label[10 : 30 + i, 5:40] = 1
        label[40:60, 50 : 70 + i] = 2
        label[0, :] = ignore
        cv2.imwrite(str(images / f"{stem}.{ext}"), image)
        cv2.imwrite(str(labels / f"{stem}.png"), label)
    (labels / "classes.json").write_text(json.dumps({"classes": classes, "ignore_value": ignore}))
    return str(images), str(labels)


def _name(tmp_path, suffix=""):
    # DatasetCatalog is global to the test process: one name per test.
    return f"semsegfmt_{tmp_path.name}{suffix}"


def test_registration_and_metadata(tmp_path):
    image_root, label_root = _write_set(tmp_path, stems=("a", "b", "sub/c"))
    colours = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    meta_file = os.path.join(label_root, "classes.json")
    with open(meta_file, "w") as f:
        json.dump({"classes": CLASSES, "ignore_value": 200, "colors": colours}, f)
    name = _name(tmp_path)
    entry = [name, image_root, label_root]
    assert register_sem_seg_format_datasets([entry]) == [name]
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "sem_seg"
    assert meta.stuff_classes == CLASSES and meta.ignore_label == 200
    assert meta.stuff_colors == [tuple(c) for c in colours]
    assert (meta.image_root, meta.sem_seg_root) == (image_root, label_root)
    dicts = DatasetCatalog.get(name)
    pairs = [(d["file_name"], d["sem_seg_file_name"]) for d in dicts]
    pairs = [(os.path.relpath(i, image_root), os.path.relpath(g, label_root)) for i, g in pairs]
    assert pairs == [("a.jpg", "a.png"), ("b.jpg", "b.png"), ("sub/c.jpg", "sub/c.png")]
    # Registering the same entry again (e.g. in every worker) is harmless; other files are not.
    assert register_sem_seg_format_datasets([entry]) == [name]
    other, _ = _write_set(tmp_path / "other")
    with pytest.raises(StartupError, match="already registered"):
        register_sem_seg_format_datasets([[name, other, label_root]])


def test_train_net_trains_and_evaluates(train_net, tmp_path):
    # About 4 s on one idle core: not marked slow.
    train, val = _name(tmp_path, "_train"), _name(tmp_path, "_val")
    entries = [
        [train, *_write_set(tmp_path / "train", stems=("t0", "t1", "t2", "t3"))],
        [val, *_write_set(tmp_path / "val", stems=("v0", "v1"), size=(64, 80), ext="png")],
    ]
    colours = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    with open(os.path.join(entries[0][2], "classes.json"), "w") as f:
        json.dump({"classes": CLASSES, "colors": colours}, f)
    out = tmp_path / "run"
    args = train_net_args(
        TOY_YAML, *OPTS, "DATASETS.SEM_SEG_FORMAT", entries, "DATASETS.TRAIN", (train,),
        "DATASETS.TEST", (val,), "OUTPUT_DIR", out,
    )  # fmt: skip
    train_net.main(args)
    # The demo's legend source: the training set's names and colours in the checkpoint.
    stored = torch.load(out / "model_final.pth", weights_only=False)[CHECKPOINT_KEY]
    assert stored["stuff_classes"] == CLASSES
    assert [list(c) for c in stored["stuff_colors"]] == colours
    saved = json.load(open(out / "results.json"))
    miou = saved["per_dataset"][val]["sem_seg"]["mIoU"]
    assert 0.0 <= miou <= 100.0


def _bad_set(tmp_path, problem):
    """A set with one problem; returns ``(entry, text the error must contain)``."""
    image_root, label_root = _write_set(tmp_path / "data")
    labels = tmp_path / "data" / "labels"
    if problem == "missing image folder":
        return [_name(tmp_path), image_root + "_nope", label_root], image_root + "_nope"
    if problem == "missing classes.json":
        os.remove(labels / "classes.json")
        return [_name(tmp_path), image_root, label_root], "classes.json"
    if problem == "malformed classes.json":
        (labels / "classes.json").write_text('{"classes": ["a", "b",]}')
        return [_name(tmp_path), image_root, label_root], "not valid JSON (line 1"
    if problem == "ignore value is a class":
        (labels / "classes.json").write_text(json.dumps({"classes": CLASSES, "ignore_value": 1}))
        return [_name(tmp_path), image_root, label_root], "'ignore_value' 1 is the index of class"
    if problem == "ignore value above 255":
        (labels / "classes.json").write_text(json.dumps({"classes": CLASSES, "ignore_value": 256}))
        return [
            _name(tmp_path),
            image_root,
            label_root,
        ], "'ignore_value' to be an integer in 0..255"
    if problem == "image without label":
        os.remove(labels / "b.png")
        return [_name(tmp_path), image_root, label_root], "b.jpg"
    if problem == "label without image":
        os.remove(os.path.join(image_root, "c.jpg"))
        return [_name(tmp_path), image_root, label_root], "c.png"
    if problem == "label value out of range":
        label = cv2.imread(str(labels / "b.png"), cv2.IMREAD_UNCHANGED)
        label[20, 20] = 7
        cv2.imwrite(str(labels / "b.png"), label)
        return [_name(tmp_path), image_root, label_root], "b.png"
    if problem == "label size differs":
        cv2.imwrite(str(labels / "c.png"), np.zeros((50, 50), np.uint8))
        return [_name(tmp_path), image_root, label_root], "c.png"
    raise AssertionError(problem)


@pytest.mark.parametrize(
    "problem, error",
    [
        ("missing image folder", MissingFileError),
        ("missing classes.json", MissingFileError),
        ("malformed classes.json", StartupError),
        ("ignore value is a class", StartupError),
        ("ignore value above 255", StartupError),
        ("image without label", StartupError),
        ("label without image", StartupError),
        ("label value out of range", DataCheckError),
        ("label size differs", DataCheckError),
    ],
)
def test_bad_input_is_named_at_startup(tmp_path, problem, error):
    """Start-up (load_config, which checks the DATASETS.TEST sets) names the entry / file."""
    entry, expected = _bad_set(tmp_path, problem)
    opts = OPTS + ["DATASETS.SEM_SEG_FORMAT", [entry], "DATASETS.TRAIN", (entry[0],)]
    opts += ["DATASETS.TEST", (entry[0],)]
    with pytest.raises(error) as e:
        load_config(TOY_YAML, [str(o) for o in opts])
    assert expected in str(e.value)


def test_bad_training_label_stops_before_training(train_net, tmp_path):
    """The training set (not in DATASETS.TEST) is checked when its loader is built."""
    entry, expected = _bad_set(tmp_path, "label value out of range")
    out = tmp_path / "run"
    args = train_net_args(
        TOY_YAML, *OPTS, "DATASETS.SEM_SEG_FORMAT", [entry], "DATASETS.TRAIN", (entry[0],),
        "DATASETS.TEST", (), "OUTPUT_DIR", out,
    )  # fmt: skip
    with pytest.raises(DataCheckError) as e:
        train_net.main(args)
    assert expected in str(e.value) and "7" in str(e.value)
    assert not (out / "model_final.pth").exists()


def test_num_classes_must_match_classes_json(tmp_path):
    image_root, label_root = _write_set(tmp_path)
    name = _name(tmp_path)
    opts = OPTS + ["DATASETS.SEM_SEG_FORMAT", [[name, image_root, label_root]]]
    opts += ["DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,)]
    opts += ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5]
    with pytest.raises(DataCheckError, match="MODEL.SEM_SEG_HEAD.NUM_CLASSES 3"):
        load_config(TOY_YAML, [str(o) for o in opts])


def test_demo_skips_missing_folders(tmp_path, caplog):
    name = _name(tmp_path)
    entry = [name, str(tmp_path / "no_images"), str(tmp_path / "no_labels")]
    with caplog.at_level(logging.WARNING):
        assert register_sem_seg_format_datasets([entry], missing_ok=True) == []
    assert name not in DatasetCatalog.list() and "no_images" in caplog.text
    with pytest.raises(MissingFileError, match="no_labels"):
        register_sem_seg_format_datasets([entry])


def test_entry_must_be_a_triple():
    with pytest.raises(StartupError, match=r"\[name, image_root, label_root\]"):
        register_sem_seg_format_datasets([["only_a_name", "images"]])
