"""The generated toy COCO set, COCO-format registration and COCO evaluation on it."""

import json
import math
import multiprocessing
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from resnest_dense.data import toy_coco
from resnest_dense.engine import build_coco_evaluator, coco_eval_backend
from resnest_dense.data import register_coco_format_datasets


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            path = os.path.join(dirpath, n)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def test_generation_is_deterministic_and_valid_coco(tmp_path):
    a = toy_coco.generate_toy_coco(str(tmp_path / "a"), num_train=12, num_val=3)
    b = toy_coco.generate_toy_coco(str(tmp_path / "b"), num_train=12, num_val=3)
    assert _files(a) == _files(b)
    coco = json.load(open(os.path.join(a, "annotations", "instances_train.json")))
    assert len(coco["images"]) == 12 and [c["name"] for c in coco["categories"]] == [
        "circle",
        "square",
        "triangle",
    ]
    with_objects = {ann["image_id"] for ann in coco["annotations"]}
    assert 10 not in with_objects and len(with_objects) == 11  # image 10 (index 9) is empty
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and ann["area"] > 0 and len(ann["segmentation"][0]) >= 6
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]  # no temporary directories left


def _generate(root):
    toy_coco.generate_toy_coco(root, num_train=30, num_val=4)


def test_concurrent_generation_is_safe(tmp_path):
    root = str(tmp_path / "toy")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_generate, args=(root,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert os.listdir(tmp_path) == ["toy"]
    assert len(os.listdir(os.path.join(root, "train"))) == 30


def test_cli_refuses_existing_output(tmp_path):
    with pytest.raises(SystemExit):
        toy_coco.main(["--out", str(tmp_path)])
    toy_coco.main(["--out", str(tmp_path / "new"), "--num-train", "2", "--num-val", "1"])
    assert os.path.isfile(tmp_path / "new" / "annotations" / "instances_val.json")


def test_registered_names_generate_lazily_under_detectron2_datasets(tmp_path, monkeypatch):
    names = toy_coco.register_toy_coco(prefix="lazytoy", num_train=4, num_val=2)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert not (tmp_path / "toy_coco").exists()  # registering wrote nothing
    dicts = DatasetCatalog.get(names[1])
    assert len(dicts) == 2 and (tmp_path / "toy_coco" / "val").is_dir()
    meta = MetadataCatalog.get(names[1])
    assert meta.evaluator_type == "coco" and meta.json_file.startswith(str(tmp_path))
    # detectron2 maps the json's category ids 1..3 to contiguous 0..2.
    ids = {a["category_id"] for d in DatasetCatalog.get(names[0]) for a in d["annotations"]}
    assert ids <= {0, 1, 2}


def test_package_import_registers_the_toy_and_ade20k_names():
    import resnest_dense.data  # noqa: F401

    for name in ("toy_coco_train", "toy_coco_val", "toy_sem_seg_train", "ade20k_sem_seg_val"):
        assert name in DatasetCatalog.list()


def test_coco_format_registration(tmp_path):
    root = toy_coco.generate_toy_coco(str(tmp_path / "toy"), num_train=3, num_val=2)
    json_file = os.path.join(root, "annotations", "instances_val.json")
    entry = [["myshapes_val", json_file, os.path.join(root, "val")]]
    assert register_coco_format_datasets(entry) == ["myshapes_val"]
    assert register_coco_format_datasets(entry) == ["myshapes_val"]  # same files: harmless
    assert len(DatasetCatalog.get("myshapes_val")) == 2
    assert MetadataCatalog.get("myshapes_val").evaluator_type == "coco"
    with pytest.raises(ValueError, match="already registered"):
        register_coco_format_datasets([["myshapes_val", json_file, root]])
    with pytest.raises(ValueError, match="name, json_file, image_root"):
        register_coco_format_datasets([["only_a_name"]])


def test_evaluator_with_no_predictions_returns_a_dict(tmp_path):
    root = toy_coco.generate_toy_coco(str(tmp_path / "toy"), num_train=1, num_val=2)
    toy_coco.register_toy_coco(root=root, prefix="evaltoy", num_train=1, num_val=2)
    dicts = DatasetCatalog.get("evaltoy_val")
    evaluator = build_coco_evaluator("evaltoy_val", str(tmp_path / "eval"), tasks=["bbox", "segm"])
    evaluator.reset()
    import torch
    from detectron2.structures import Boxes, Instances

    for d in dicts:
        empty = Instances((d["height"], d["width"]))
        empty.pred_boxes = Boxes(torch.zeros(0, 4))
        empty.scores = torch.zeros(0)
        empty.pred_classes = torch.zeros(0, dtype=torch.long)
        empty.pred_masks = torch.zeros(0, d["height"], d["width"], dtype=torch.bool)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": empty}])
    results = evaluator.evaluate()
    assert set(results) == {"bbox", "segm"} and "AP" in results["bbox"]
    # No prediction at all: every metric is NaN (not 0, which would read as "evaluated, missed").
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75"} <= set(results[task])
        assert all(math.isnan(v) for v in results[task].values()), results[task]
    assert coco_eval_backend() == "pycocotools"  # detectron2's _C does not load on 3.11
