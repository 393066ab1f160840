"""Data checks (resnest_dense.data.validation / .polygons) on generated bad inputs.

Every failing case asserts the exception type and that the message names the file / key and the
expected and found values. Where the check replaces a detectron2 behaviour, a test pins that
behaviour first (what the user would get without the check).
"""

import json
import logging
import math
import os
import time
import uuid

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.common import MapDataset
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import SizeMismatchError, read_image
from detectron2.evaluation import COCOEvaluator, SemSegEvaluator
from detectron2.structures import Boxes, Instances, polygons_to_bitmask
from PIL import Image

from resnest_dense import add_resnest_config
from resnest_dense.data.polygons import (
    POLYGON_PROBLEMS,
    filter_coco_ground_truth,
    filter_dataset_dicts,
    polygon_problems,
)
from resnest_dense.data.validation import (
    CheckedMapper,
    CheckedSemSegLoader,
    DataCheckError,
    UnreadableImageTracker,
    check_dataset_source,
    check_datasets,
    check_image_file,
    check_images,
    check_masks,
    check_num_classes,
    check_sem_seg_labels,
    check_sem_seg_tensor,
    explain_size_mismatch,
    load_checked_dataset_dicts,
    validate_coco_json,
)

# --------------------------------------------------------------------------- helpers

SQUARE = [2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]


def _cfg(**opts):
    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list([x for item in opts.items() for x in item])
    return cfg


def _semseg_cfg(num_classes=4, ignore=255):
    return _cfg(
        **{
            "MODEL.META_ARCHITECTURE": "SemanticSegmentor",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES": num_classes,
            "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": ignore,
        }
    )


def _coco_dict(num_images=2, polygons=None, size=(40, 30)):
    """A valid COCO dict: ``num_images`` images, one square per image, categories 1 and 2."""
    w, h = size
    images = [
        {"id": i + 1, "file_name": f"{i:03d}.png", "width": w, "height": h}
        for i in range(num_images)
    ]
    annotations = []
    for i in range(num_images):
        polys = polygons[i] if polygons is not None else [SQUARE]
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1 + i % 2,
                "bbox": [2.0, 2.0, 10.0, 10.0],
                "area": 100.0,
                "iscrowd": 0,
                "segmentation": polys,
            }
        )
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _write_images(root, coco, mode="RGB"):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for img in coco["images"]:
        pixels = rng.integers(0, 256, size=(img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(os.path.join(root, img["file_name"]))


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    return str(path)


@pytest.fixture
def register():
    """Register COCO-format / dict datasets under unique names; removed afterwards."""
    names = []

    def _register_coco(tmp_path, coco, with_images=True):
        name = f"dv_{uuid.uuid4().hex[:8]}"
        root = tmp_path / "images"
        if with_images:
            _write_images(str(root), coco)
        json_file = _write_json(tmp_path / f"{name}.json", coco) if isinstance(coco, dict) else coco
        register_coco_instances(name, {}, json_file, str(root))
        names.append(name)
        return name

    def _register_dicts(dicts, **meta):
        name = f"dv_{uuid.uuid4().hex[:8]}"
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(**meta)
        names.append(name)
        return name

    _register_coco.dicts = _register_dicts
    yield _register_coco
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


# --------------------------------------------------------------------------- a. COCO JSON


@pytest.mark.parametrize(
    "text,found",
    [
        (
            '{"images": [\n  {"id": 1}\n  {"id": 2}\n]}',
            "'Expecting ',' delimiter' at line 3, column 3",
        ),
        ('{"images": [], "annotations": [1, 2', "at line 1, column 36"),  # truncated
        ("   \n", "an empty file"),
    ],
    ids=["missing-comma", "truncated", "empty"],
)
def test_malformed_json_names_file_line_column(tmp_path, text, found):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataCheckError) as info:
        validate_coco_json(str(path), "mine_train")
    msg = str(info.value)
    assert f"Dataset 'mine_train', annotation file {path}" in msg
    assert found in msg and "expected" in msg


def test_detectron2_json_error_names_no_file(tmp_path, register):
    """What the check replaces: detectron2's loader fails in pycocotools' json.load with no
    file name; check_dataset_source names file, line and column first."""
    path = tmp_path / "bad.json"
    path.write_text('{"images": [\n  {"id": 1}\n  {"id": 2}\n]}')
    name = register(tmp_path, str(path), with_images=False)
    with pytest.raises(json.JSONDecodeError) as info:
        DatasetCatalog.get(name)
    assert str(path) not in str(info.value)
    with pytest.raises(DataCheckError, match=rf"{name}.*{path}.*line 3, column 3"):
        check_dataset_source(name)


def test_non_utf8_json(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"categories": [{"id": 1, "name": "caf\xe9"}]}'.encode("latin-1"))
    with pytest.raises(DataCheckError, match=r"latin1.json: expected UTF-8 text; found a byte"):
        validate_coco_json(str(path))


def _drop(key):
    def edit(coco):
        del coco[key]

    return edit


def _set(path, value):
    def edit(coco):
        node = coco
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit,detectron2_error",
    [
        (_drop("categories"), "KeyError: 'categories'"),
        (_set(["categories"], []), "ValueError: min() arg is an empty sequence"),
        (_drop("annotations"), None),  # loads silently: images without objects
    ],
    ids=["no-categories", "empty-categories", "no-annotations"],
)
def test_detectron2_on_incomplete_json(tmp_path, register, edit, detectron2_error):
    """What check_dataset_source replaces (test_coco_structure has its messages)."""
    coco = _coco_dict()
    edit(coco)
    name = register(tmp_path, coco, with_images=False)
    if detectron2_error is None:
        assert [len(d["annotations"]) for d in DatasetCatalog.get(name)] == [0, 0]
    else:
        with pytest.raises(Exception) as info:
            DatasetCatalog.get(name)
        assert f"{type(info.value).__name__}: {info.value}".startswith(detectron2_error)
    with pytest.raises(DataCheckError, match=f"Dataset '{name}', annotation file"):
        check_dataset_source(name)


@pytest.mark.parametrize(
    "edit,expected,found",
    [
        (_drop("categories"), "a non-empty 'categories' list", "no 'categories' (top-level keys"),
        (_set(["categories"], []), "a non-empty 'categories' list", "'categories' = []"),
        (_drop("images"), "a non-empty 'images' list", "no 'images'"),
        (_drop("annotations"), "a non-empty 'annotations' list", "no 'annotations'"),
        (
            _set(["annotations", 0, "category_id"], 7),
            "a consistent COCO instances file",
            "1 x annotation whose category_id is not in 'categories' (first: annotation id 1, "
            "category_id 7)",
        ),
        (
            _set(["annotations", 1, "image_id"], 99),
            "a consistent COCO instances file",
            "annotation whose image_id is not in 'images' (first: annotation id 2, image_id 99)",
        ),
        (
            _set(["annotations", 1, "id"], 1),
            "a consistent COCO instances file",
            "1 x duplicate annotation id (first: annotation id 1)",
        ),
        (
            _set(["annotations", 0, "bbox"], [1, 2, 3]),
            "a consistent COCO instances file",
            "bbox that is not 4 finite numbers",
        ),
        (
            _set(["annotations", 0, "segmentation"], SQUARE),
            "a consistent COCO instances file",
            "annotation id 1: a flat list of numbers",
        ),
        (
            _set(["images", 0, "width"], 0),
            "a consistent COCO instances file",
            "image id 1: width 0, height 30",
        ),
    ],
    ids=[
        "no-categories",
        "empty-categories",
        "no-images",
        "no-annotations",
        "unknown-category",
        "unknown-image",
        "duplicate-ann-id",
        "short-bbox",
        "flat-polygon",
        "zero-width",
    ],
)
def test_coco_structure(tmp_path, edit, expected, found):
    coco = _coco_dict()
    edit(coco)
    path = _write_json(tmp_path / "x.json", coco)
    with pytest.raises(DataCheckError) as info:
        validate_coco_json(path, "mine")
    msg = str(info.value)
    assert f"Dataset 'mine', annotation file {path}: expected {expected}" in msg
    assert found in msg


def test_evaluation_needs_area_and_iscrowd(tmp_path):
    coco = _coco_dict()
    del coco["annotations"][1]["area"]
    path = _write_json(tmp_path / "x.json", coco)
    validate_coco_json(path)  # training does not need it
    with pytest.raises(DataCheckError, match="annotation id 2 lacks area"):
        validate_coco_json(path, for_evaluation=True)


def test_valid_json_passes(tmp_path):
    coco = _coco_dict()
    assert validate_coco_json(_write_json(tmp_path / "x.json", coco)) == coco


# --------------------------------------------------------------------------- b. classes


@pytest.mark.parametrize(
    "arch,key,value",
    [
        ("GeneralizedRCNN", "MODEL.ROI_HEADS.NUM_CLASSES", 80),
        ("GeneralizedRCNN", "MODEL.ROI_HEADS.NUM_CLASSES", 1),
        ("RetinaNet", "MODEL.RETINANET.NUM_CLASSES", 3),
    ],
)
def test_num_classes_vs_thing_classes(tmp_path, register, arch, key, value):
    name = register(tmp_path, _coco_dict())
    dicts = DatasetCatalog.get(name)  # fills thing_classes
    cfg = _cfg(**{"MODEL.META_ARCHITECTURE": arch, key: value})
    with pytest.raises(DataCheckError) as info:
        check_num_classes(cfg, [name], dicts)
    msg = str(info.value)
    assert f"{key} for dataset '{name}': expected 2 classes" in msg
    assert "(cat, dog)" in msg and f"found {key}={value}" in msg
    assert f"Set {key} 2" in msg
    check_num_classes(_cfg(**{"MODEL.META_ARCHITECTURE": arch, key: 2}), [name], dicts)


def test_num_classes_vs_stuff_classes(register):
    name = register.dicts([], stuff_classes=["a", "b", "c"], ignore_label=255)
    with pytest.raises(DataCheckError) as info:
        check_num_classes(_semseg_cfg(num_classes=150), [name])
    msg = str(info.value)
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES for dataset" in msg and "expected 3 classes" in msg
    assert "found MODEL.SEM_SEG_HEAD.NUM_CLASSES=150" in msg
    assert "Set MODEL.SEM_SEG_HEAD.NUM_CLASSES 3" in msg


def test_ignore_value_vs_ignore_label(register):
    name = register.dicts([], stuff_classes=["a", "b"], ignore_label=0)
    with pytest.raises(DataCheckError, match="expected the dataset's ignore_label 0.*=255"):
        check_num_classes(_semseg_cfg(num_classes=2), [name])


@pytest.mark.parametrize("bad", [2, -1, None], ids=["too-large", "negative", "missing"])
def test_category_ids_out_of_range(register, bad):
    ann = {"bbox": [0, 0, 5, 5], "bbox_mode": 1}
    if bad is not None:
        ann["category_id"] = bad
    dicts = [
        {"file_name": "a.png", "annotations": [{"category_id": 0, "bbox": [0, 0, 5, 5]}]},
        {"file_name": "b.png", "annotations": [{"category_id": 1, "bbox": [0, 0, 5, 5]}, ann]},
    ]
    name = register.dicts(dicts, thing_classes=["x", "y"])
    with pytest.raises(DataCheckError) as info:
        check_num_classes(_cfg(**{"MODEL.ROI_HEADS.NUM_CLASSES": 2}), [name], dicts)
    msg = str(info.value)
    assert "expected category ids in [0, 2)" in msg
    assert f"first: b.png with category_id {bad if bad is not None else 'missing'!r}" in msg


# --------------------------------------------------------------------------- c. masks


@pytest.mark.parametrize("with_masks", [0, 1], ids=["none", "partial"])
def test_mask_rcnn_without_masks(with_masks):
    dicts = [
        {
            "file_name": f"{i}.png",
            "annotations": [
                {
                    "category_id": 0,
                    "bbox": [0, 0, 5, 5],
                    **({"segmentation": [SQUARE]} if i < with_masks else {}),
                }
            ],
        }
        for i in range(3)
    ]
    cfg = _cfg(**{"MODEL.MASK_ON": True})
    with pytest.raises(DataCheckError) as info:
        check_masks(cfg, ["boxes_only"], dicts)
    msg = str(info.value)
    assert "MODEL.MASK_ON=True" in msg and "'boxes_only'" in msg
    if with_masks:
        assert "2 of 3 annotations without 'segmentation'" in msg and "first image: 1.png" in msg
    else:
        assert "none of its 3 annotations has one" in msg and "MODEL.MASK_ON False" in msg
    check_masks(_cfg(**{"MODEL.MASK_ON": False}), ["boxes_only"], dicts)


# --------------------------------------------------------------------------- d. polygons


@pytest.mark.parametrize(
    "polygon,code",
    [
        (SQUARE, 0),
        (np.array(SQUARE), 0),
        ([[2, 2], [12, 2], [12, 12]], 1),
        ([2, 2, 12, 2, 12], 2),
        ([2, 2, 12, 12], 3),
        ([2, 2, "x", 2, 12, 12], 4),
        ([2, 2, math.nan, 2, 12, 12], 5),
        ([2, 2, math.inf, 2, 12, 12], 5),
        ([2, 2, 1e12, 2, 12, 12], 6),
        ([2, 2, 7, 7, 12, 12], 7),
        ([5, 5, 5, 5, 5, 5, 5, 5], 7),
        # Zero only when the last point closes on this polygon's first, not the next one's.
        ([0, 0, 10, 0, 20, 0], 7),
        ([0, 0, 20, 0, 0, 0.5], 0),
    ],
    ids=[
        "ok",
        "ok-array",
        "nested",
        "odd",
        "two-points",
        "string",
        "nan",
        "inf",
        "far",
        "collinear",
        "point",
        "on-axis",
        "sliver",
    ],
)
def test_polygon_problems(polygon, code):
    codes = polygon_problems([SQUARE, polygon, SQUARE], np.array([[40, 30]] * 3))
    assert codes.tolist() == [0, code, 0]


def test_filter_dataset_dicts_copies_and_reports(caplog):
    dicts = [
        {
            "file_name": "a.png",
            "width": 40,
            "height": 30,
            "annotations": [
                {"category_id": 0, "segmentation": [SQUARE, [1, 1, math.nan, 1, 5, 5]]},
                {"category_id": 1, "segmentation": [[2, 2, 7, 7, 12, 12]]},
                {"category_id": 1, "segmentation": {"size": [30, 40], "counts": "x"}},
            ],
        },
        {"file_name": "b.png", "annotations": [{"category_id": 0, "segmentation": [SQUARE]}]},
    ]
    with caplog.at_level(logging.WARNING, logger="resnest_dense.data.polygons"):
        out, report = filter_dataset_dicts(dicts, "dataset 'd'")
    assert [len(r["annotations"]) for r in out] == [2, 1]
    assert out[0]["annotations"][0]["segmentation"] == [SQUARE]
    assert out[0]["annotations"][1]["segmentation"]["counts"] == "x"  # RLE untouched
    assert out[1] is dicts[1]  # unchanged records are not copied
    assert (
        len(dicts[0]["annotations"]) == 3 and len(dicts[0]["annotations"][0]["segmentation"]) == 2
    )
    assert (report.num_polygons, report.removed_polygons, report.removed_instances) == (4, 2, 1)
    assert report.reasons == {"NaN or infinite coordinate": 1, "zero area": 1}
    assert report.first == "a.png (annotation 0, polygon 1): NaN or infinite coordinate"
    assert "removed 2 of 4 polygons" in caplog.text and "First: a.png" in caplog.text
    clean = [dicts[1]]
    assert filter_dataset_dicts(clean)[0] is clean


# The bad polygons of the train/eval agreement test, one image each; detectron2's loader itself
# drops the short and odd ones from the training dicts, the evaluator's pycocotools does not.
BAD_POLYGONS = {
    "nan": [[2, 2, math.nan, 2, 12, 12]],
    "zero-area": [[2, 2, 7, 7, 12, 12]],
    "two-points-first": [[2, 2, 12, 12], SQUARE],
    "odd": [[2, 2, 12, 2, 12]],
    "far": [SQUARE, [2, 2, 1e12, 2, 12, 12]],
}


def _gt_by_image(dicts):
    """{file name: sorted [(contiguous class, box, polygons)]} from dataset dicts."""
    return {
        os.path.basename(d["file_name"]): sorted(
            (a["category_id"], a["bbox"], json.dumps(a["segmentation"])) for a in d["annotations"]
        )
        for d in dicts
    }


def _gt_from_coco(coco, id_map):
    files = {img["id"]: img["file_name"] for img in coco["images"]}
    out = {name: [] for name in files.values()}
    for a in coco["annotations"]:
        key = (id_map[a["category_id"]], a["bbox"], json.dumps(a["segmentation"]))
        out[files[a["image_id"]]].append(key)
    return {k: sorted(v) for k, v in out.items()}


def _perfect_outputs(dicts):
    """Model outputs equal to the ground truth (masks rasterised from the polygons)."""
    inputs, outputs = [], []
    for d in dicts:
        h, w = d["height"], d["width"]
        anns = d["annotations"]
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor([[2.0, 2.0, 12.0, 12.0]] * len(anns)).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.long)
        masks = [polygons_to_bitmask(a["segmentation"], h, w) for a in anns]
        inst.pred_masks = torch.as_tensor(np.array(masks, bool).reshape(-1, h, w))
        inputs.append({"image_id": d["image_id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


@pytest.mark.timeout(120)  # NaN polygons hang pycocotools: a regression would time out
def test_train_and_eval_ground_truth_agree(tmp_path, register):
    """Bad polygons: training drops them, evaluation refuses them naming the first; the JSON
    cleaned by the same rule evaluates, equals the training dicts, and perfect predictions
    score 100."""
    polygons = [[SQUARE]] + list(BAD_POLYGONS.values())
    coco = _coco_dict(num_images=len(polygons), polygons=polygons)
    name = register(tmp_path, coco)
    cfg = _cfg(**{"MODEL.MASK_ON": True, "MODEL.ROI_HEADS.NUM_CLASSES": 2})
    train = load_checked_dataset_dicts(cfg, [name], is_train=True, filter_empty=False)
    with pytest.raises(DataCheckError) as info:
        load_checked_dataset_dicts(cfg, [name], is_train=False, filter_empty=False)
    message = str(info.value)
    assert f"{name}.json (dataset {name!r}): expected test ground truth" in message
    assert "5 of 8 polygons it cannot rasterise" in message and "first: " in message

    report = filter_coco_ground_truth(coco, name)
    assert report.removed_polygons == 5 and report.removed_instances == 3
    clean = register(tmp_path / "clean", coco)
    DatasetCatalog.get(clean)  # detectron2's loader sets the category id map
    evaluator = COCOEvaluator(clean, tasks=("bbox", "segm"), distributed=False, output_dir=None)
    id_map = MetadataCatalog.get(clean).thing_dataset_id_to_contiguous_id
    expected = _gt_by_image(train)
    assert _gt_from_coco(coco, id_map) == expected
    # Only the valid polygons are left, on the first, "two-points-first" and "far" images.
    assert sum(len(v) for v in expected.values()) == 3
    assert all(p == json.dumps([SQUARE]) for v in expected.values() for _, _, p in v)
    evaluator.reset()
    evaluator.process(*_perfect_outputs(train))
    results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)


def test_unfiltered_ground_truth_fails_in_pycocotools(tmp_path, register):
    """Why the evaluator's ground truth must be filtered: a first polygon of 4 coordinates,
    dropped from the training dicts by detectron2's loader, is taken for a box by pycocotools."""
    coco = _coco_dict(num_images=2, polygons=[[SQUARE], BAD_POLYGONS["two-points-first"]])
    name = register(tmp_path, coco)
    train = DatasetCatalog.get(name)
    assert train[1]["annotations"][0]["segmentation"] == [SQUARE]
    evaluator = COCOEvaluator(name, tasks=("segm",), distributed=False)
    evaluator.reset()
    evaluator.process(*_perfect_outputs(train))
    with pytest.raises(TypeError, match="bb"):
        evaluator.evaluate()


def test_filter_coco_ground_truth_in_place():
    coco = _coco_dict(num_images=2, polygons=[[SQUARE, [1, 1, 2, 2]], [[1, 1, 2, 2]]])
    report = filter_coco_ground_truth(coco, "gt", image_root="/data")
    assert [a["segmentation"] for a in coco["annotations"]] == [[SQUARE]]
    assert report.first == "/data/000.png (annotation 1, polygon 1): fewer than 3 points"
    assert set(POLYGON_PROBLEMS.values()) >= set(report.reasons)


# --------------------------------------------------------------------------- e. semantic labels


def _sem_seg_set(tmp_path, labels, image_size=None):
    """Image / label file pairs; ``labels``: list of arrays or ready PIL images."""
    dicts = []
    for i, label in enumerate(labels):
        img = tmp_path / f"img{i}.png"
        lab = tmp_path / f"lab{i}.png"
        pil = label if isinstance(label, Image.Image) else Image.fromarray(label)
        w, h = image_size or pil.size
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(img)
        pil.save(lab)
        dicts.append(
            {"file_name": str(img), "sem_seg_file_name": str(lab), "height": h, "width": w}
        )
    return dicts


def _label(values, shape=(8, 10), dtype=np.uint8):
    label = np.zeros(shape, dtype)
    flat = label.reshape(-1)
    flat[: len(values)] = values
    return label


def _palette_label():
    im = Image.fromarray(_label([1, 2, 3])).convert("P")
    im.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * 756)
    return im


@pytest.mark.parametrize(
    "label,found",
    [
        (_label([0, 1, 3, 200, 255]), "found values 200 "),
        (_label([1, 2, 3, 4]), "values 4 "),  # 1-based, K = 4
        (np.zeros((8, 10, 3), np.uint8), "3 channels (PIL mode 'RGB'"),
        (_palette_label(), "PIL mode 'P': the evaluator reads value 1 where the training mapper"),
        (_label([1, 300], dtype=np.uint16), "PIL mode 'I;16': the evaluator reads value 300"),
    ],
    ids=["out-of-range", "one-based", "rgb", "palette", "16-bit"],
)
def test_sem_seg_label_sampler(tmp_path, label, found):
    dicts = _sem_seg_set(tmp_path, [_label([0, 1, 2, 3, 255]), label, _label([0])])
    with pytest.raises(DataCheckError) as info:
        check_sem_seg_labels(dicts, 4, 255, ["seg_train"])
    msg = str(info.value)
    assert f"Label file {dicts[1]['sem_seg_file_name']}" in msg and found in msg
    if "values" in found:
        assert "expected class ids in [0, 4) or the ignore value 255" in msg
        assert "dataset 'seg_train'" in msg
    if found.startswith("values 4"):
        assert "prepare_ade20k_sem_seg.py" in msg
    check_sem_seg_labels(dicts[:1], 4, 255, ["seg_train"])


def test_sem_seg_label_sampler_files_and_sizes(tmp_path):
    dicts = _sem_seg_set(tmp_path, [_label([0]), _label([1])])
    os.remove(dicts[1]["sem_seg_file_name"])
    with pytest.raises(DataCheckError, match=r"1 missing: .*lab1.png"):
        check_sem_seg_labels(dicts, 4, 255, ["s"])
    with pytest.raises(DataCheckError, match="a label file .sem_seg_file_name. for every image"):
        check_sem_seg_labels([{"file_name": "x.png"}], 4, 255, ["s"])
    dicts = _sem_seg_set(tmp_path, [_label([0])], image_size=(12, 8))
    with pytest.raises(DataCheckError, match=r"lab0.png: expected the size of its image .* 12 x 8"):
        check_sem_seg_labels(dicts, 4, 255, ["s"])


def test_sem_seg_sampler_is_deterministic_and_spread(tmp_path):
    labels = [_label([0])] * 40
    labels[-1] = _label([9])  # the last file is always in the sample
    dicts = _sem_seg_set(tmp_path, labels)
    for _ in range(2):
        with pytest.raises(DataCheckError, match="lab39.png"):
            check_sem_seg_labels(dicts, 4, 255, sample=5)


@pytest.mark.parametrize(
    "values,bad", [([0, 3, 255], None), ([0, 4], [4]), ([-1, 2], [-1]), ([254, 7, 0], [7, 254])]
)
def test_sem_seg_tensor(values, bad):
    t = torch.tensor(values).reshape(1, -1)
    if bad is None:
        check_sem_seg_tensor(t, 4, 255, "lab.png")
        return
    with pytest.raises(DataCheckError) as info:
        check_sem_seg_tensor(t, 4, 255, "lab.png", "dataset 'x'")
    assert "Label file lab.png (dataset 'x')" in str(info.value)
    assert f"found values {', '.join(map(str, bad))} " in str(info.value)


def test_checked_mapper_sem_seg(tmp_path):
    dicts = _sem_seg_set(tmp_path, [_label([0, 1, 255]), _label([0, 5])])
    cfg = _semseg_cfg(num_classes=4)
    mapper = CheckedMapper.from_config(
        cfg, DatasetMapper(cfg, is_train=True, augmentations=[]), ["s"]
    )
    assert mapper(dicts[0])["sem_seg"].shape == (8, 10)
    with pytest.raises(
        DataCheckError, match=r"Label file .*lab1.png \(dataset 's'\).*found values 5 "
    ):
        mapper(dicts[1])


def test_checked_sem_seg_loader_in_evaluator(tmp_path, register):
    dicts = _sem_seg_set(tmp_path, [_label([0, 1, 2]), _label([0, 3, 255])])
    name = register.dicts(dicts, stuff_classes=["a", "b", "c"], ignore_label=255)
    pred = {"sem_seg": torch.zeros(3, 8, 10)}

    # An unchecked loader counts the
    # out-of-range 3 as another class: a silent mIoU change.
    def raw_values(filename, dtype=int):  # what an unchecked loader reads (e.g. palette indices)
        with Image.open(filename) as label:
            return np.asarray(label, dtype=dtype)

    plain = SemSegEvaluator(name, distributed=False, sem_seg_loading_fn=raw_values)
    plain.reset()
    plain.process(dicts, [pred, pred])
    assert plain.evaluate()["sem_seg"]["mIoU"] < 100
    loader = CheckedSemSegLoader.for_dataset(name)
    assert (loader.num_classes, loader.ignore_value) == (3, 255)
    checked = SemSegEvaluator(name, distributed=False, sem_seg_loading_fn=loader)
    checked.reset()
    checked.process(dicts[:1], [pred])
    with pytest.raises(DataCheckError) as info:
        checked.process(dicts[1:], [pred])
    msg = str(info.value)
    assert f"Label file {dicts[1]['sem_seg_file_name']} (evaluation of dataset '{name}')" in msg
    assert (
        "expected class ids in [0, 3) or the ignore value 255" in msg and "found values 3 " in msg
    )


# --------------------------------------------------------------------------- f. images


def _high_bit_image(path, mode):
    ramp = np.arange(30 * 40).reshape(30, 40)
    if mode == "I;16":
        Image.fromarray((ramp * 40 + 1000).astype(np.uint16)).save(path)  # PNG
    elif mode == "I;16B":
        arr = (ramp * 40 + 1000).astype(">u2")
        Image.frombytes("I;16B", (40, 30), arr.tobytes()).save(path)  # TIFF
    elif mode == "I":
        Image.fromarray((ramp * 1000 + 300).astype(np.int32)).save(path)
    else:
        Image.fromarray((ramp / ramp.max()).astype(np.float32)).save(path)
    assert Image.open(path).mode == mode


HIGH_BIT = [("I;16", "png", "16-bit integer"), ("I;16B", "tif", "16-bit integer"),
            ("I", "tif", "32-bit integer"), ("F", "tif", "32-bit floating-point")]  # fmt: skip


@pytest.mark.parametrize("mode,ext,depth", HIGH_BIT, ids=[m for m, _, _ in HIGH_BIT])
def test_high_bit_depth_images_refused(tmp_path, mode, ext, depth):
    path = str(tmp_path / f"img.{ext}")
    _high_bit_image(path, mode)
    # The claim the check rests on: detectron2 turns these into (nearly) constant images.
    decoded = read_image(path, format="BGR")
    if mode.startswith("I"):
        assert np.unique(decoded).tolist() == [255]  # every value >= 256: a white image
    else:
        assert len(np.unique(decoded)) <= 2  # floats in [0, 1]: black and a single 1
    with pytest.raises(DataCheckError) as info:
        check_image_file(path)
    msg = str(info.value)
    assert f"Image {path}: expected an 8-bit image" in msg
    assert f"found a {depth} single-channel image (PIL mode {mode!r})" in msg
    assert ">> 8" in msg


def _expected_colour_cases(tmp_path):
    """(file, expected RGB pixels) for 8-bit modes read_image must decode faithfully."""
    cases = {}
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putpixel((1, 0), 1)
    cases["P"] = (p, [[10, 20, 30], [200, 100, 50]])
    la = Image.fromarray(np.array([[[100, 0], [200, 255]]], np.uint8), "LA")
    cases["LA"] = (la, [[100, 100, 100], [200, 200, 200]])
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], np.uint8), "RGBA")
    cases["RGBA"] = (rgba, [[10, 20, 30], [40, 50, 60]])  # colour kept, alpha dropped
    one = Image.new("1", (2, 1))
    one.putpixel((0, 0), 1)
    cases["1"] = (one, [[255, 255, 255], [0, 0, 0]])
    out = []
    for mode, (im, rgb) in cases.items():
        path = str(tmp_path / f"{mode}.png")
        im.save(path)
        out.append((mode, path, np.array([rgb], np.uint8)))
    # 16 bits per channel: PIL keeps the high byte, a correct 8-bit image.
    rgb16 = np.random.default_rng(0).integers(0, 65536, size=(4, 5, 3)).astype(np.uint16)
    path = str(tmp_path / "rgb16.png")
    cv2.imwrite(path, rgb16[:, :, ::-1])
    out.append(("RGB;16", path, (rgb16 >> 8).astype(np.uint8)))
    return out


def test_eight_bit_modes_decode_to_their_colours(tmp_path):
    for mode, path, rgb in _expected_colour_cases(tmp_path):
        check_image_file(path)
        decoded = read_image(path, format="BGR")[:, :, ::-1]
        np.testing.assert_array_equal(decoded, rgb, err_msg=mode)
        assert len(np.unique(decoded)) > 1, mode


def test_check_images_sampler(tmp_path, caplog):
    dicts = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((30, 40, 3), i * 50, np.uint8)).save(path)
        dicts.append({"file_name": str(path), "width": 40, "height": 30})
    check_images(dicts, ["d"])
    missing = dict(dicts[0], file_name=str(tmp_path / "gone.png"))
    with pytest.raises(
        DataCheckError, match=r"all 5 image files to exist; found 1 missing: .*gone.png"
    ):
        check_images(dicts + [missing], ["d"])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(open(dicts[0]["file_name"], "rb").read()[:60])
    bad = dicts + [dict(dicts[0], file_name=str(corrupt))]
    with pytest.raises(
        DataCheckError, match=r"1 of 5 sampled images unreadable, first .*corrupt.png"
    ):
        check_images(bad, ["d"])
    with caplog.at_level(logging.WARNING):
        check_images(bad, ["d"], allow_unreadable=True)
    assert "1 of 5 sampled images of dataset 'd' are unreadable" in caplog.text
    all_bad = [dict(d, file_name=str(corrupt)) for d in dicts]
    with pytest.raises(DataCheckError, match="4 of 4 sampled images unreadable"):
        check_images(all_bad, ["d"], allow_unreadable=True)
    high = tmp_path / "high.png"
    _high_bit_image(str(high), "I;16")
    with pytest.raises(DataCheckError, match="PIL mode 'I;16'"):
        check_images(dicts + [dict(dicts[0], file_name=str(high))], ["d"])


def test_checked_mapper_refuses_16_bit(tmp_path):
    path = str(tmp_path / "high.png")
    _high_bit_image(path, "I;16")
    cfg = _cfg()
    mapper = CheckedMapper.from_config(cfg, DatasetMapper(cfg, is_train=False))
    with pytest.raises(DataCheckError, match=f"Image {path}: expected an 8-bit image"):
        mapper({"file_name": path, "width": 40, "height": 30, "image_id": 1})
    with pytest.raises(FileNotFoundError):  # unreadable stays an OSError (skippable)
        mapper({"file_name": str(tmp_path / "gone.png"), "image_id": 2})


# --------------------------------------------------------------------------- g. EXIF


def _exif_jpeg(path, orientation, size=(40, 20)):
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path, exif=exif)
    return str(path)


@pytest.mark.parametrize(
    "orientation,given,found",
    [
        (6, (40, 20), "20 x 40 after its EXIF orientation 6"),
        (8, (40, 20), "EXIF orientation is the cause"),
        (6, (50, 50), "20 x 40 when decoded (EXIF orientation 6); stored 40 x 20: neither matches"),
        (1, (41, 20), "40 x 20 when decoded; stored 40 x 20: neither matches"),
    ],
    ids=["rot270", "rot90", "other-size", "no-exif"],
)
def test_size_mismatch_explained(tmp_path, orientation, given, found):
    path = _exif_jpeg(tmp_path / "photo.jpg", orientation)
    d = {"file_name": path, "width": given[0], "height": given[1], "image_id": 1}
    cfg = _cfg()
    with pytest.raises(SizeMismatchError):  # what detectron2 says on its own
        DatasetMapper(cfg, is_train=False)(d)
    with pytest.raises(DataCheckError) as info:
        CheckedMapper(DatasetMapper(cfg, is_train=False))(d)
    msg = str(info.value)
    assert f"Image {path}: expected width x height {given[0]} x {given[1]}" in msg
    assert found in msg
    assert isinstance(info.value.__cause__, SizeMismatchError)
    # The start-up sampler finds the same and says the same.
    with pytest.raises(DataCheckError) as startup:
        check_images([d], ["photos"])
    assert str(startup.value) == msg == str(explain_size_mismatch(d))


def test_exif_rotation_matching_size_passes(tmp_path):
    path = _exif_jpeg(tmp_path / "photo.jpg", 6)
    d = {"file_name": path, "width": 20, "height": 40, "image_id": 1}  # the rotated size
    check_images([d])
    cfg = _cfg()
    mapper = CheckedMapper(DatasetMapper(cfg, is_train=False, augmentations=[]))
    assert mapper(d)["image"].shape[1:] == (40, 20)


# --------------------------------------------------------------------------- h. unreadable


def _skipping_mapper(tracker):
    """A corrupt-image-skipping mapper wired as the trainer's SafeMapper should be."""

    def mapper(d):
        try:
            with Image.open(d["file_name"]) as im:
                im.load()
            return d
        except OSError as e:
            if tracker is not None:
                tracker.record_failure(d["file_name"], e)
            return None

    return mapper


def _files(tmp_path, good):
    dicts = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        if i < good:
            Image.new("RGB", (4, 4)).save(path)
        else:
            path.write_bytes(b"not an image")
        dicts.append({"file_name": str(path)})
    return dicts


def test_all_images_unreadable(tmp_path):
    dicts = _files(tmp_path, good=0)
    # detectron2 alone: MapDataset retries until its pool is empty, then a sampling error.
    with pytest.raises(ValueError, match="Sample larger than population"):
        MapDataset(dicts, _skipping_mapper(None))[0]
    tracker = UnreadableImageTracker(dicts, ["broken_train"])
    with pytest.raises(DataCheckError) as info:
        MapDataset(dicts, _skipping_mapper(tracker))[0]
    msg = str(info.value)
    assert "Every image of dataset 'broken_train' is unreadable" in msg
    assert f"3 of 3 failed (first: {dicts[0]['file_name']}: cannot identify image file" in msg


def test_all_unreadable_in_a_loader_worker(tmp_path):
    """The error crosses the data-loader process boundary with its type and message."""
    dicts = _files(tmp_path, good=0)
    tracker = UnreadableImageTracker(dicts, ["broken_train"])
    loader = torch.utils.data.DataLoader(
        MapDataset(dicts, _skipping_mapper(tracker)), batch_size=None, num_workers=1
    )
    with pytest.raises(DataCheckError, match="Every image of dataset 'broken_train'"):
        next(iter(loader))


def test_some_images_unreadable_are_skipped(tmp_path):
    dicts = _files(tmp_path, good=1)
    tracker = UnreadableImageTracker(dicts, ["partly_broken"])
    dataset = MapDataset(dicts, _skipping_mapper(tracker))
    assert all(dataset[i]["file_name"] == dicts[0]["file_name"] for i in range(3))
    assert len(tracker.failed) == 2


# --------------------------------------------------------------------------- one call


def test_check_datasets_and_loader_one_call(tmp_path, register):
    coco = _coco_dict(num_images=3, polygons=[[SQUARE], [SQUARE], BAD_POLYGONS["nan"]])
    name = register(tmp_path, coco)
    cfg = _cfg(**{"MODEL.MASK_ON": True, "MODEL.ROI_HEADS.NUM_CLASSES": 2})
    with pytest.raises(DataCheckError, match="1 of 3 polygons it cannot rasterise"):
        check_datasets(cfg, [name], is_train=False)  # as a test set: refused
    check_datasets(cfg, [name], is_train=True)
    dicts = load_checked_dataset_dicts(cfg, [name], is_train=True)
    assert len(dicts) == 2  # the image whose only instance had a NaN polygon is filtered
    with pytest.raises(DataCheckError, match="MODEL.ROI_HEADS.NUM_CLASSES for dataset"):
        check_datasets(_cfg(), [name], is_train=True)  # default NUM_CLASSES 80
    os.remove(os.path.join(MetadataCatalog.get(name).image_root, "001.png"))
    with pytest.raises(DataCheckError, match="001.png"):
        load_checked_dataset_dicts(cfg, [name], is_train=True)


# --------------------------------------------------------------------------- performance


def _coco_sized_json(path, num_images=5000, per_image=20):
    """100k annotations with small 4-6 point polygons; the images need not exist."""
    rng = np.random.default_rng(0)
    images = [
        {"id": i + 1, "file_name": f"{i:06d}.jpg", "width": 640, "height": 480}
        for i in range(num_images)
    ]
    annotations = []
    for i in range(num_images):
        for _ in range(per_image):
            x, y = rng.uniform(10, 600), rng.uniform(10, 440)
            k = int(rng.integers(4, 7))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            poly = np.stack([x + 8 * np.cos(angles), y + 8 * np.sin(angles)], 1).round(2)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, 81)),
                    "bbox": [x - 8, y - 8, 16.0, 16.0],
                    "area": 100.0,
                    "iscrowd": 0,
                    "segmentation": [poly.reshape(-1).tolist()],
                }
            )
    categories = [{"id": i, "name": f"c{i}"} for i in range(1, 81)]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


@pytest.mark.slow
def test_checks_on_coco_sized_json_under_5s(tmp_path, register, caplog):
    """The checks a run adds at start-up on a COCO-sized set (5,000 images, 100,000 polygons):
    the test-set checks of --eval-only / training start-up and the training-set checks of the
    train loader, each measured through its real entry point, minus detectron2's own loading."""
    path = str(tmp_path / "instances.json")
    _coco_sized_json(path)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (640, 480)).save(images / "source.jpg")
    for i in range(5000):  # every entry exists and decodes (hard links of one image)
        os.link(images / "source.jpg", images / f"{i:06d}.jpg")
    name = register(tmp_path, path, with_images=False)
    cfg = _cfg(**{"MODEL.MASK_ON": True, "MODEL.ROI_HEADS.NUM_CLASSES": 80})
    timings = {}
    t = time.perf_counter()
    DatasetCatalog.get(name)
    load = time.perf_counter() - t
    timings["detectron2 load_coco_json (not a check)"] = load
    t = time.perf_counter()
    check_datasets(cfg, [name], is_train=False)
    timings["test-set start-up checks"] = time.perf_counter() - t - load
    t = time.perf_counter()
    dicts = load_checked_dataset_dicts(cfg, [name], is_train=True)
    timings["training-set checks"] = time.perf_counter() - t - load
    assert len(dicts) == 5000
    logging.getLogger(__name__).warning(
        "start-up data checks on 100k annotations: %s",
        ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()),
    )
    assert timings["test-set start-up checks"] < 5.0, timings
    assert timings["training-set checks"] < 5.0, timings
