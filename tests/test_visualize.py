"""tools/visualize_data.py and tools/visualize_json_results.py: what they draw (ground-truth box
outlines over the raw pixels, the augmented size of the train loader, predictions above the
threshold next to the ground truth), custom COCO-format data, the LazyConfig twin, refusal of
bad inputs and of the results of another dataset."""

import glob
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode

from demo_helpers import write_one_class_coco
from detection_helpers import (
    CONFIGS,
    RESNEST_CONFIGS,
    TINY,
    TOY_PREFIX,
    load_tool,
    train_net_args,
)
from resnest_dense.data.toy_sem_seg import register_toy_sem_seg

CONFIG = os.path.join(CONFIGS, RESNEST_CONFIGS["mask"])
TOY_YAML = os.path.join(CONFIGS, "quick_schedules", "toy_mask_rcnn_S14_FPN.yaml")
TOY_LAZY = os.path.join(CONFIGS, "lazy", "quick_schedules", "toy_mask_rcnn_S14_FPN.py")
SEMSEG_YAML = os.path.join(CONFIGS, "quick_schedules", "toy_deeplabv3_S14_OS8.yaml")
SEMSEG_PREFIX = "vissemseg"
TRAIN, VAL = f"{TOY_PREFIX}_train", f"{TOY_PREFIX}_val"

pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py: dettest_{train,val}, 12 + 4


@pytest.fixture(scope="module")
def visualize_data():
    return load_tool("visualize_data")


@pytest.fixture(scope="module")
def visualize_results():
    return load_tool("visualize_json_results")


@pytest.fixture(scope="module")
def semseg_set(tmp_path_factory):
    if f"{SEMSEG_PREFIX}_train" not in DatasetCatalog.list():
        root = str(tmp_path_factory.mktemp("semseg") / "toy")
        register_toy_sem_seg(root=root, prefix=SEMSEG_PREFIX, num_train=4, num_val=2)


def _pngs(folder) -> list:
    return sorted(glob.glob(os.path.join(str(folder), "*.png")))


def _drawn(path) -> np.ndarray:
    return read_image(path, format="RGB")


def _box_edge_pixels(box, height: int, width: int) -> list:
    """(y, x) of the middle of each side of an XYXY box, inside the image."""
    x0, y0, x1, y1 = box
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    points = [(y0, mx), (y1, mx), (my, x0), (my, x1)]
    return [(min(int(y), height - 1), min(int(x), width - 1)) for y, x in points]


def test_annotation_source_draws_box_outlines_over_the_raw_pixels(visualize_data, tmp_path):
    out = tmp_path / "out"
    argv = ["--source", "annotation", "--config-file", CONFIG, "--output-dir", str(out)]
    assert visualize_data.main(argv + ["--num-images", "10", *map(str, TINY)]) == 0
    records = DatasetCatalog.get(TRAIN)[:10]
    files = _pngs(out)
    assert [os.path.basename(f) for f in files] == [
        os.path.splitext(os.path.basename(r["file_name"]))[0] + ".png" for r in records
    ]
    checked_far = 0
    for record, path in zip(records, files):
        raw, drawn = read_image(record["file_name"], format="RGB"), _drawn(path)
        assert drawn.shape == raw.shape
        changed = np.any(drawn != raw, axis=2)
        boxes = [
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            for a in record["annotations"]
        ]
        if not boxes:  # toy image 9 has no object: nothing is drawn
            assert not changed.any(), path
            continue
        for box in boxes:
            for y, x in _box_edge_pixels(box, *raw.shape[:2]):
                assert changed[y, x], (path, box, (y, x))
        # Labels are drawn from a box's top-left corner to the right and down: above and left
        # of every box (with a margin for the outline and the label's background) nothing is.
        top = int(min(b[1] for b in boxes)) - 4
        left = int(min(b[0] for b in boxes)) - 4
        far = np.zeros_like(changed)
        far[: max(top, 0), :] = True
        far[:, : max(left, 0)] = True
        assert not changed[far].any(), path
        checked_far += int(far.sum())
    assert checked_far > 1000  # the "far" regions were not all empty


def test_dataloader_source_has_the_augmented_size(visualize_data, tmp_path):
    out = tmp_path / "out"
    argv = ["--source", "dataloader", "--config-file", CONFIG, "--output-dir", str(out)]
    assert visualize_data.main(argv + ["--num-images", "4", *map(str, TINY)]) == 0
    files = _pngs(out)
    assert len(files) == 4
    by_stem = {
        os.path.splitext(os.path.basename(r["file_name"]))[0]: r for r in DatasetCatalog.get(TRAIN)
    }
    resized = 0
    for path in files:
        record = by_stem[os.path.basename(path)[:-4].split("-")[0]]
        h, w = _drawn(path).shape[:2]
        # TINY: INPUT.MIN_SIZE_TRAIN (64, 80), MAX_SIZE_TRAIN 128 (ResizeShortestEdge).
        assert min(h, w) in (64, 80) or max(h, w) == 128, (path, h, w)
        resized += (h, w) != (record["height"], record["width"])
    assert resized  # the loader's images, not the raw ones


def test_dataloader_source_segmentation_crop_and_repeated_images(
    visualize_data, semseg_set, tmp_path
):
    """The segmentation recipe crops INPUT.CROP.SIZE (96 x 96) from 64-128 px images; an image
    drawn twice (6 samples of 4 images) gets the demos' ``x-2`` name."""
    out = tmp_path / "out"
    opts = [
        "DATASETS.TRAIN", f"('{SEMSEG_PREFIX}_train',)", "DATASETS.TEST", f"('{SEMSEG_PREFIX}_val',)",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SEED", "1",
    ]  # fmt: skip
    argv = ["--source", "dataloader", "--config-file", SEMSEG_YAML, "--output-dir", str(out)]
    assert visualize_data.main(argv + ["--num-images", "6"] + opts) == 0
    files = _pngs(out)
    assert len(files) == 6
    assert any("-2" in os.path.basename(f) for f in files)
    for path in files:
        assert _drawn(path).shape[:2] == (96, 96), path
    raw_sizes = {
        read_image(r["file_name"]).shape[:2] for r in DatasetCatalog.get(f"{SEMSEG_PREFIX}_train")
    }
    assert (96, 96) not in raw_sizes


def test_lazy_twin_draws_the_same_annotations(visualize_data, tmp_path):
    names = {"yaml": TOY_YAML, "lazy": TOY_LAZY}
    opts = {
        "yaml": ["DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", f"('{VAL}',)"],
        "lazy": [f"dataloader.train.dataset.names={TRAIN}", f"dataloader.test.dataset.names={VAL}"],
    }
    for kind, config in names.items():
        argv = ["--source", "annotation", "--config-file", config]
        argv += ["--output-dir", str(tmp_path / kind), "--num-images", "3"]
        assert visualize_data.main(argv + opts[kind]) == 0
    yaml_files, lazy_files = _pngs(tmp_path / "yaml"), _pngs(tmp_path / "lazy")
    assert len(yaml_files) == 3
    assert [os.path.basename(f) for f in yaml_files] == [os.path.basename(f) for f in lazy_files]
    for a, b in zip(yaml_files, lazy_files):
        np.testing.assert_array_equal(_drawn(a), _drawn(b))


def _custom_opts(json_file, image_root, num_classes=1):
    return [
        *map(str, TINY),
        "DATASETS.COCO_FORMAT", f"[['widgets', '{json_file}', '{image_root}']]",
        "DATASETS.TRAIN", "('widgets',)", "DATASETS.TEST", "()",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes),
    ]  # fmt: skip


def test_custom_coco_format_data(visualize_data, tmp_path, capsys):
    json_file, image_root = write_one_class_coco(tmp_path / "data", "widget")
    argv = ["--source", "annotation", "--config-file", CONFIG, "--num-images", "0"]
    out = tmp_path / "out"
    assert (
        visualize_data.main(argv + ["--output-dir", str(out)] + _custom_opts(json_file, image_root))
        == 0
    )
    assert len(_pngs(out)) == 4  # the whole set (0 = all)
    # The data must fit the config, as for training: the class count is checked.
    bad = tmp_path / "bad"
    assert (
        visualize_data.main(
            argv + ["--output-dir", str(bad)] + _custom_opts(json_file, image_root, 3)
        )
        == 2
    )
    assert "Set MODEL.ROI_HEADS.NUM_CLASSES 1" in capsys.readouterr().err
    assert not bad.exists()


def _file(tmp_path):
    (tmp_path / "f").write_text("x")
    return str(tmp_path / "f")


ANNOTATION = ["--source", "annotation"]

# (--output-dir made under tmp_path, tool options, config options, message)
BAD_DATA_INPUTS = {
    "unregistered-dataset": (
        lambda t: str(t / "o"),
        ANNOTATION,
        ["DATASETS.TRAIN", "('nope_train',)"],
        "'nope_train' is not registered",
    ),
    "output-is-a-file": (_file, ANNOTATION, [], "is a file, not a folder"),
    "output-under-a-file": (
        lambda t: os.path.join(_file(t), "o"),
        ANNOTATION,
        [],
        "cannot be created",
    ),
    "output-is-the-image-folder": (
        lambda t: os.path.dirname(DatasetCatalog.get(TRAIN)[0]["file_name"]),
        ANNOTATION,
        [],
        "folder of the dataset's images or labels",
    ),
    "endless-loader": (
        lambda t: str(t / "o"),
        ["--source", "dataloader", "--num-images", "0"],
        [],
        "endless stream",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA_INPUTS))
def test_visualize_data_refuses_bad_inputs(visualize_data, tmp_path, capsys, case):
    make_output, tool_options, opts, message = BAD_DATA_INPUTS[case]
    output = make_output(tmp_path)
    before = sorted(os.listdir(output)) if os.path.isdir(output) else None
    argv = tool_options + ["--config-file", CONFIG, "--output-dir", output]
    assert visualize_data.main(argv + [*map(str, TINY)] + opts) == 2
    assert message in capsys.readouterr().err
    # Nothing written: no new file in an existing folder, no folder created.
    assert (sorted(os.listdir(output)) if os.path.isdir(output) else None) == before


# --------------------------------------------------------------------------- results JSON


def _results(dataset: str, low_score_image: int) -> list:
    """COCO results from the ground truth of ``dataset`` (original category ids, RLE masks):
    score 0.9, except on image id ``low_score_image`` (0.3)."""
    with open(MetadataCatalog.get(dataset).json_file) as f:
        coco = json.load(f)
    sizes = {i["id"]: (i["height"], i["width"]) for i in coco["images"]}
    results = []
    for a in coco["annotations"]:
        h, w = sizes[a["image_id"]]
        rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))
        rle["counts"] = rle["counts"].decode("ascii")
        score = 0.3 if a["image_id"] == low_score_image else 0.9
        results.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": a["bbox"],
                "score": score,
                "segmentation": rle,
            }
        )
    return results


def _write_json(path, obj) -> str:
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def _results_argv(results_file, output, *extra):
    return [
        "--config-file",
        CONFIG,
        "--input",
        str(results_file),
        "--output",
        str(output),
        *extra,
        *map(str, TINY),
    ]


def test_results_drawn_next_to_the_ground_truth(visualize_results, tmp_path):
    records = DatasetCatalog.get(VAL)
    low = records[1]["image_id"]
    path = _write_json(tmp_path / "results.json", _results(VAL, low))
    out = tmp_path / "out"
    assert visualize_results.main(_results_argv(path, out, "--conf-threshold", "0.5")) == 0
    files = _pngs(out)
    assert len(files) == len(records) == 4
    for record, path in zip(records, files):
        raw, drawn = read_image(record["file_name"], format="RGB"), _drawn(path)
        h, w = raw.shape[:2]
        assert drawn.shape == (h, 2 * w, 3)
        predicted, truth = drawn[:, :w], drawn[:, w:]
        assert np.any(truth != raw) == bool(record["annotations"])
        if record["image_id"] == low:  # every prediction below --conf-threshold: none drawn
            np.testing.assert_array_equal(predicted, raw)
            continue
        changed = np.any(predicted != raw, axis=2)
        for a in record["annotations"]:
            box = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            for y, x in _box_edge_pixels(box, h, w):
                assert changed[y, x], (path, box)


def _shift_category(results):
    return [dict(r, category_id=r["category_id"] + 10) for r in results]


# Results of another dataset / not results: (make the results, message).
BAD_RESULTS = {
    "another-dataset": (lambda: _results(TRAIN, 0), "image id(s) it does not have"),
    "same-ids-other-images": (
        # dettest_train's images 1-4 have the ids of dettest_val's, not their sizes.
        lambda: [r for r in _results(TRAIN, 0) if r["image_id"] <= 4],
        "the ids match but the images do not",
    ),
    "unknown-category": (lambda: _shift_category(_results(VAL, 0)), "category id(s) 11"),
    "not-a-list": (lambda: {"annotations": []}, "expected a list of COCO results"),
    "not-results": (
        lambda: [{"image_id": 1, "category_id": 1, "bbox": "0 0 4 4", "score": 1.0}],
        "entry 0: bbox '0 0 4 4'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_results_of_another_dataset_are_refused(visualize_results, tmp_path, capsys, case):
    make, message = BAD_RESULTS[case]
    path = _write_json(tmp_path / "results.json", make())
    out = tmp_path / "out"
    assert visualize_results.main(_results_argv(path, out)) == 2
    err = capsys.readouterr().err
    assert message in err and path in err
    assert not out.exists()


def test_results_file_missing_or_not_json(visualize_results, tmp_path, capsys):
    out = tmp_path / "out"
    assert visualize_results.main(_results_argv(tmp_path / "nope.json", out)) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text('[{"image_id": 1,\n')
    assert visualize_results.main(_results_argv(tmp_path / "broken.json", out)) == 2
    assert "at line 2" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_results_of_an_eval_only_run(train_net, visualize_results, tmp_path):
    """The file ``--eval-only`` writes (random weights: any detections) is accepted as the
    default ``--input`` and drawn for every test image."""
    run = tmp_path / "run"
    opts = [*TINY, "OUTPUT_DIR", str(run), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    train_net.main(train_net_args(CONFIG, *opts, eval_only=True, allow_random=True))
    results_file = run / "inference" / "coco_instances_results.json"
    with open(results_file) as f:
        assert json.load(f), "no detection to draw: raise TEST.DETECTIONS_PER_IMAGE"
    out = tmp_path / "out"
    argv = [
        "--config-file",
        CONFIG,
        "--output",
        str(out),
        "--conf-threshold",
        "0",
        "--num-images",
        "0",
    ]
    assert visualize_results.main(argv + [*map(str, opts)]) == 0
    records, files = DatasetCatalog.get(VAL), _pngs(out)
    assert len(files) == len(records)
    drawn = [_drawn(f) for f in files]
    raw = [read_image(r["file_name"], format="RGB") for r in records]
    assert any(np.any(d[:, : r.shape[1]] != r) for d, r in zip(drawn, raw))  # predictions drawn


def test_panoptic_png_records_are_drawn_without_panopticapi(tmp_path):
    """detectron2's COCO panoptic dicts (``pan_seg_file_name`` + ``segments_info``) need its
    optional ``panopticapi`` in ``draw_dataset_dict``; the PNG is decoded by the project."""
    from detectron2.data import Metadata

    from resnest_dense.data.panoptic_ids import rgb_to_id
    from resnest_dense.data.toy_coco import TOY_CLASSES
    from resnest_dense.data.toy_panoptic import TOY_STUFF_CLASSES, generate_toy_panoptic
    from resnest_dense.engine.visualize import draw_record

    root = generate_toy_panoptic(str(tmp_path / "pan"), num_train=1, num_val=1, seed=0)
    with open(os.path.join(root, "annotations", "panoptic_val.json")) as f:
        annotation = json.load(f)["annotations"][0]
    # What detectron2's load_coco_panoptic_json makes of it (which expects .jpg images):
    # dataset ids 1-3 things, 4-5 stuff -> contiguous 0..4.
    names = list(TOY_CLASSES) + list(TOY_STUFF_CLASSES)
    record = {
        "file_name": os.path.join(root, "val", annotation["file_name"]),
        "pan_seg_file_name": os.path.join(root, "panoptic_val", annotation["file_name"]),
        "segments_info": [
            dict(s, category_id=s["category_id"] - 1, isthing=s["category_id"] <= len(TOY_CLASSES))
            for s in annotation["segments_info"]
        ],
    }
    metadata = Metadata(name="pan").set(thing_classes=names, stuff_classes=names)
    drawn = draw_record(record, metadata)
    raw = read_image(record["file_name"], format="RGB")
    segments = rgb_to_id(read_image(record["pan_seg_file_name"], format="RGB"))
    changed = np.any(drawn != raw, axis=2)
    assert changed[segments > 0].mean() > 0.9  # every segment is filled
