"""Draw what a model is trained and evaluated on, before spending GPU hours on it.

The library half of ``tools/visualize_data.py`` and ``tools/visualize_json_results.py``
(detectron2's two data-inspection tools), on the set-up path of every tool
(:func:`resnest_dense.engine.load_config`), so custom data registered with
``DATASETS.COCO_FORMAT`` / ``SEM_SEG_FORMAT`` is drawn, and bad data refused, exactly as
training and evaluation see it:

* :func:`training_records`: the training dicts as the trainer loads them (checked, polygon
  filter, empty-image filter), drawn with detectron2's ``Visualizer.draw_dataset_dict``
  (:func:`draw_record`: boxes, masks, keypoints, semantic labels, panoptic segments);
* :func:`training_samples`: the output of the trainer's own train loader (the config's
  augmentations: the YAML mapper of :class:`~resnest_dense.engine.Trainer`, or a LazyConfig's
  ``dataloader.train.mapper``), drawn at the augmented size (:func:`draw_sample`);
* :func:`read_coco_results` / :func:`check_results_match` / :func:`result_instances`: a
  ``coco_instances_results.json`` of ``--eval-only``, checked against the dataset it is drawn
  over (image ids, category ids, image sizes), so the results of another dataset are refused
  rather than drawn wrong or not at all.

Outputs are PNG (lossless: a drawing can be compared with its image pixel by pixel), named by
the demos' rule (:func:`resnest_dense.utils.image_inputs.unique_stems`), and only written into
an output folder that :func:`check_output_dir` accepted: not a file, writable, and not a folder
of the data (a PNG written into an ``image_root`` would become a training image without
annotations, or a ``SEM_SEG_FORMAT`` image without a label, the next time the set is loaded).
"""

import contextlib
import itertools
import json
import logging
import os
from typing import Dict, Iterable, Iterator, List, Mapping, Sequence, Set, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import convert_image_to_rgb, read_image
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from ..data.panoptic_ids import rgb_to_id
from ..errors import MissingFileError, StartupError
from .runs import trainer_class

__all__ = [
    "RESULTS_FILE",
    "check_output_dir",
    "check_results_match",
    "data_folders",
    "draw_predictions",
    "draw_record",
    "draw_sample",
    "read_coco_results",
    "result_instances",
    "training_records",
    "training_samples",
]

logger = logging.getLogger(__name__)

# What detectron2's COCOEvaluator writes into <OUTPUT_DIR>/inference/ during --eval-only.
RESULTS_FILE = "coco_instances_results.json"
# Metadata fields naming the folders of a registered dataset (images, labels, panoptic PNGs).
_FOLDER_FIELDS = ("image_root", "sem_seg_root", "panoptic_root", "image_dir", "gt_dir")
# Dict fields naming the files of one record.
_FILE_FIELDS = ("file_name", "sem_seg_file_name", "pan_seg_file_name")
# How many offending ids a mismatch message lists.
_SHOWN = 5
# Rounding slack (pixels) when a result box is compared with its image's size: detectron2
# clips boxes to the image, and the JSON stores them as float32-rounded XYWH.
_BOX_SLACK = 1.0


# --------------------------------------------------------------------------- output folder


def data_folders(dataset_names: Sequence[str], records: Iterable[Dict] = ()) -> Set[str]:
    """Real paths of the folders holding the files of ``dataset_names``: their metadata folders
    and the folders of the files that ``records`` name."""
    folders = set()
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        folders.update(os.path.realpath(meta.get(f)) for f in _FOLDER_FIELDS if meta.get(f))
    for record in records:
        for field in _FILE_FIELDS:
            if record.get(field):
                folders.add(os.path.dirname(os.path.realpath(record[field])))
    return folders


def check_output_dir(output_dir: str, option: str, folders: Iterable[str] = ()) -> None:
    """Refuse an output folder that cannot or must not be written into (before any drawing).

    Args:
        output_dir: the tool's output folder (created later if missing).
        option: its command-line option, for the message (``"--output-dir"``).
        folders: data folders it must not be (:func:`data_folders`).

    Raises:
        StartupError: ``output_dir`` is a file, lies under a file, is not writable, or is one of
            ``folders``.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise StartupError(f"{option} {output_dir!r} is a file, not a folder. Name a folder.")
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StartupError(
            f"{option} {output_dir!r} cannot be created: {existing!r} is a file. Name a folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StartupError(
            f"{option} {output_dir!r}: {existing!r} is not writable (permissions). Name a "
            "folder you can write to."
        )
    if os.path.realpath(output_dir) in set(folders):
        raise StartupError(
            f"{option} {output_dir!r} is a folder of the dataset's images or labels: the drawings "
            "would be mixed into the data (and read as images the next time it is loaded). "
            "Name another folder."
        )


# --------------------------------------------------------------------------- training data


def _count(num_images: int, available: int) -> int:
    """``num_images``, or ``available`` when it is 0 (every image)."""
    return available if num_images == 0 else num_images


def training_records(cfg, num_images: int) -> List[Dict]:
    """The first ``num_images`` (0: all) training dicts, loaded as the trainer loads them.

    Raises:
        DataCheckError, StartupError: the data do not fit the config (the checks of training).
    """
    records = trainer_class(cfg).train_dataset_dicts(cfg)
    return records[: _count(num_images, len(records))]


def training_samples(cfg, num_images: int) -> Iterator[Dict]:
    """The first ``num_images`` mapped samples of the trainer's train loader, in training order
    (``SEED`` fixes it); the loader is the one training builds, with its augmentations."""
    if num_images < 1:
        raise StartupError(
            f"--num-images {num_images}: the training data loader is an endless stream; give a "
            "number of images >= 1."
        )
    loader = trainer_class(cfg).build_train_loader(cfg)
    samples = (sample for batch in loader for sample in batch)
    return itertools.islice(samples, num_images)


def training_metadata(cfg):
    """The metadata the training data are drawn with (class names, colours)."""
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0])


# --------------------------------------------------------------------------- drawing


@contextlib.contextmanager
def _fixed_colours() -> Iterator[None]:
    """detectron2's ``Visualizer`` picks instance colours from numpy's global RNG: seed it for
    each drawing (state restored), so the same data draw the same PNG in every run and config
    (e.g. a LazyConfig and its YAML twin)."""
    state = np.random.get_state()
    np.random.seed(0)
    try:
        yield
    finally:
        np.random.set_state(state)


def draw_record(record: Dict, metadata) -> np.ndarray:
    """A dataset dict drawn over its image (detectron2's ``draw_dataset_dict``), (H, W, 3) RGB.

    A panoptic PNG is decoded here (``pan_seg``), so detectron2's optional ``panopticapi`` is
    not needed.
    """
    image = read_image(record["file_name"], format="RGB")
    if "pan_seg_file_name" in record and "pan_seg" not in record:
        record = dict(
            record, pan_seg=rgb_to_id(np.asarray(Image.open(record["pan_seg_file_name"])))
        )
    with _fixed_colours():
        return Visualizer(image, metadata).draw_dataset_dict(record).get_image()


def draw_sample(sample: Dict, metadata, image_format: str) -> np.ndarray:
    """A mapped training sample drawn at its augmented size, (H, W, 3) RGB.

    Args:
        sample: a dict of the train loader's batch: ``image`` (C, H, W) in ``image_format``,
            optional ``instances`` (``gt_boxes``, ``gt_classes``, ``gt_masks``,
            ``gt_keypoints``) and ``sem_seg`` (H, W).
        metadata: ``thing_classes`` / ``stuff_classes`` (and colours) for the labels.
        image_format: ``INPUT.FORMAT`` (a LazyConfig's ``dataloader.train.mapper.image_format``).
    """
    image = convert_image_to_rgb(sample["image"].permute(1, 2, 0).cpu().numpy(), image_format)
    with _fixed_colours():
        return _draw_sample(image, sample, metadata)


def _draw_sample(image: np.ndarray, sample: Dict, metadata) -> np.ndarray:
    visualizer = Visualizer(image, metadata)
    drawn = visualizer.output
    instances = sample.get("instances")
    if instances is not None and len(instances):
        fields = instances.get_fields()
        names = metadata.get("thing_classes")
        classes = fields["gt_classes"].tolist()
        drawn = visualizer.overlay_instances(
            labels=[names[c] if names else str(c) for c in classes],
            boxes=fields.get("gt_boxes"),
            masks=fields.get("gt_masks"),
            keypoints=fields.get("gt_keypoints"),
        )
    if sample.get("sem_seg") is not None:
        # Padding (the ignore value) is not a class: draw_sem_seg skips labels past the classes.
        drawn = visualizer.draw_sem_seg(sample["sem_seg"].cpu(), area_threshold=0, alpha=0.5)
    return drawn.get_image()


# --------------------------------------------------------------------------- results JSON


def _results_error(path: str, expected: str, found: str, fix: str) -> StartupError:
    return StartupError(f"Results file {path!r}: expected {expected}; found {found}. {fix}")


def read_coco_results(path: str) -> List[Dict]:
    """Read a ``coco_instances_results.json`` (a list of ``{image_id, category_id, bbox, score}``
    with optional RLE ``segmentation``).

    Raises:
        MissingFileError: no such file.
        StartupError: not JSON (line and column named), not a list of such entries.
    """
    if not os.path.isfile(path):
        raise MissingFileError(
            f"Results file {path!r} does not exist. Write it with tools/train_net.py --eval-only "
            f"(it lands in <OUTPUT_DIR>/inference/{RESULTS_FILE}), or name it with --input."
        )
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except json.JSONDecodeError as e:
        raise _results_error(
            path, "valid JSON", f"{e.msg!r} at line {e.lineno}, column {e.colno}", "Fix the file."
        ) from e
    fix = f"Pass the {RESULTS_FILE} that --eval-only writes."
    if not isinstance(results, list):
        raise _results_error(
            path, "a list of COCO results (detectron2's format)", type(results).__name__, fix
        )
    keys = ("image_id", "category_id", "bbox", "score")
    for index, entry in enumerate(results):
        missing = [k for k in keys if not isinstance(entry, Mapping) or k not in entry]
        bad_box = not missing and (
            not isinstance(entry["bbox"], list)
            or len(entry["bbox"]) != 4
            or not all(isinstance(v, (int, float)) for v in entry["bbox"])
        )
        if missing or bad_box:
            what = f"no {', '.join(missing)}" if missing else f"bbox {entry['bbox']!r}"
            raise _results_error(
                path,
                f"entries with {', '.join(keys)} (bbox as [x, y, w, h])",
                f"entry {index}: {what}",
                fix,
            )
    return results


def _category_map(metadata) -> Dict[int, int]:
    """Dataset category id -> contiguous class index, as detectron2's COCOEvaluator maps back."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    if mapping:
        return {int(k): int(v) for k, v in mapping.items()}
    # Without the mapping the evaluator writes the contiguous ids themselves.
    return {i: i for i in range(len(metadata.get("thing_classes", ())))}


def _listed(values: Iterable) -> str:
    values = sorted(values)
    more = f", ... ({len(values)} in total)" if len(values) > _SHOWN else ""
    return ", ".join(str(v) for v in values[:_SHOWN]) + more


def check_results_match(
    path: str, results: Sequence[Dict], dataset_name: str, records: Sequence[Dict]
) -> Dict[int, int]:
    """The results in ``path`` belong to ``dataset_name``: every image id is one of its images,
    every category id one of its categories, and every box (and mask) fits its image's size.

    Returns:
        Dataset category id -> contiguous class index (for :func:`result_instances`).

    Raises:
        StartupError: naming the file, the dataset and the first mismatching ids.
    """
    metadata = MetadataCatalog.get(dataset_name)
    if not metadata.get("thing_classes"):
        raise StartupError(
            f"DATASETS.TEST[0] {dataset_name!r} has no thing_classes: {RESULTS_FILE} holds "
            "instance detections, drawn over a detection (COCO-format) dataset. Use the config's "
            "detection test set."
        )
    fix = (
        f"Pass the {RESULTS_FILE} of an --eval-only run on {dataset_name!r} (DATASETS.TEST[0] "
        "of this config), or the config whose DATASETS.TEST the file was written for."
    )
    sizes = {r["image_id"]: (r["height"], r["width"]) for r in records if "image_id" in r}
    unknown = {e["image_id"] for e in results} - set(sizes)
    if unknown:
        raise _results_error(
            path,
            f"image ids of dataset {dataset_name!r} ({len(sizes)} images, ids "
            f"{_listed(sizes)})",
            f"{len(unknown)} image id(s) it does not have: {_listed(unknown)}",
            fix,
        )
    category_map = _category_map(metadata)
    unknown = {e["category_id"] for e in results} - set(category_map)
    if unknown:
        raise _results_error(
            path,
            f"category ids of dataset {dataset_name!r} ({_listed(category_map)}: its original "
            "ids, as COCOEvaluator writes them)",
            f"category id(s) {_listed(unknown)}",
            fix,
        )
    for index, entry in enumerate(results):
        height, width = sizes[entry["image_id"]]
        x, y, w, h = entry["bbox"]
        rle_size = (entry.get("segmentation") or {}).get("size")
        outside = (
            min(x, y) < -_BOX_SLACK or x + w > width + _BOX_SLACK or y + h > height + _BOX_SLACK
        )
        if outside or (rle_size is not None and tuple(rle_size) != (height, width)):
            what = f"mask size {rle_size}" if not outside else f"bbox {entry['bbox']}"
            raise _results_error(
                path,
                f"predictions inside their images (detectron2 clips them): image id "
                f"{entry['image_id']} of {dataset_name!r} is {width}x{height}",
                f"entry {index} with {what}: the ids match but the images do not",
                fix,
            )
    return category_map


def result_instances(
    entries: Sequence[Dict],
    image_size: Tuple[int, int],
    category_map: Dict[int, int],
    threshold: float,
) -> Instances:
    """The results of one image with ``score >= threshold`` as detectron2 ``Instances``
    (``pred_boxes`` XYXY, ``scores``, contiguous ``pred_classes``, ``pred_masks`` if the
    results hold RLE masks)."""
    kept = [e for e in entries if e["score"] >= threshold]
    instances = Instances(image_size)
    boxes = np.asarray([e["bbox"] for e in kept], dtype=np.float64).reshape(-1, 4)
    instances.pred_boxes = Boxes(
        torch.as_tensor(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))
    )
    instances.scores = torch.tensor([float(e["score"]) for e in kept])
    instances.pred_classes = torch.tensor(
        [category_map[e["category_id"]] for e in kept], dtype=torch.int64
    )
    if kept and all("segmentation" in e for e in kept):
        rles = [dict(e["segmentation"]) for e in kept]
        for rle in rles:
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        instances.pred_masks = torch.as_tensor(mask_util.decode(rles).transpose(2, 0, 1) > 0)
    return instances


def draw_predictions(record: Dict, instances: Instances, metadata) -> np.ndarray:
    """Predictions (left) next to the ground truth (right) of one test image, (H, 2W, 3) RGB."""
    image = read_image(record["file_name"], format="RGB")
    with _fixed_colours():
        predicted = Visualizer(image, metadata).draw_instance_predictions(instances).get_image()
    with _fixed_colours():
        truth = Visualizer(image, metadata).draw_dataset_dict(record).get_image()
    return np.concatenate([predicted, truth], axis=1)
