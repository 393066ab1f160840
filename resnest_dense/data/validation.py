"""Data checks: the data must fit the model, and images must decode to what the files hold.

Each failure raises one :class:`DataCheckError` (a ``ValueError``) whose message names the
dataset and file (and the line of a JSON file), what was expected, what was found and how to fix
it. The checks, grouped by where they run:

Start-up (before the first iteration or the first evaluated image):

* :func:`validate_coco_json` / :func:`check_dataset_source`: a COCO-format JSON parses (else
  file, line and column), has ``images`` / ``annotations`` / ``categories``, and its references
  (image ids, category ids, boxes, polygon nesting) are consistent, before detectron2's loader
  hands the file to pycocotools (whose errors name neither file nor line).
* :func:`check_num_classes`: ``NUM_CLASSES`` of the model's heads equals the dataset's number of
  classes (``thing_classes`` / ``stuff_classes``), category ids lie in ``[0, NUM_CLASSES)``, and
  the segmentation ``IGNORE_VALUE`` equals the dataset's ``ignore_label``.
* :func:`check_masks`: a Mask R-CNN config (``MODEL.MASK_ON``) gets instance masks.
* :func:`resnest_dense.data.polygons.filter_dataset_dicts` (training dicts) and
  :func:`filter_evaluator_ground_truth` (COCO evaluation ground truth): one policy for polygons
  pycocotools cannot rasterise.
* :func:`check_images`: every image exists; a sample decodes, is 8-bit, and has the size the
  annotations give (with EXIF orientation applied, as ``read_image`` does).
* :func:`check_sem_seg_labels`: a sample of label files holds only ``[0, NUM_CLASSES)`` and the
  ignore value, and training and evaluation read the same values from them.
* :func:`check_dataset_dicts`, :func:`load_checked_dataset_dicts`, :func:`check_datasets`: all
  of the above in one call.

Per sample (cheap, every image): :class:`CheckedMapper` (bit depth from the image header, EXIF
explanation of ``SizeMismatchError``, label values of the mapped ``sem_seg``),
:class:`CheckedSemSegLoader` (the evaluator's label reader), :class:`UnreadableImageTracker`
("every image is unreadable" instead of detectron2's retry loop) and :func:`check_image_file`
(demos).
"""

import contextlib
import io
import json
import logging
import math
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import (
    filter_images_with_only_crowd_annotations,
    get_detection_dataset_dicts,
)
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.utils.file_io import PathManager
from PIL import Image

from .polygons import PolygonFilterReport, filter_coco_ground_truth, filter_dataset_dicts

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "CheckedMapper",
    "CheckedSemSegLoader",
    "DataCheckError",
    "UnreadableImageTracker",
    "check_dataset_dicts",
    "check_dataset_source",
    "check_datasets",
    "check_image_file",
    "check_images",
    "check_masks",
    "check_num_classes",
    "check_sem_seg_labels",
    "check_sem_seg_tensor",
    "explain_size_mismatch",
    "filter_evaluator_ground_truth",
    "load_checked_dataset_dicts",
    "model_class_keys",
    "read_sem_seg_label",
    "sem_seg_label_range",
    "validate_coco_json",
]

logger = logging.getLogger(__name__)

# Files decoded by the start-up samplers (images, label maps): enough to catch a dataset-wide
# format problem, a fraction of a second on COCO-sized images.
DEFAULT_SAMPLE_SIZE = 32
_EXIF_ORIENTATION = 274
# EXIF orientations that swap width and height (transpose, rotate 90 / 270, transverse).
_SWAPS_AXES = {5, 6, 7, 8}
_SEM_SEG_ARCHS = ("SemanticSegmentor", "MultiScaleSemanticSegmentor")
_THING_KEYS = {
    "GeneralizedRCNN": "MODEL.ROI_HEADS.NUM_CLASSES",
    "PanopticFPN": "MODEL.ROI_HEADS.NUM_CLASSES",
    "RetinaNet": "MODEL.RETINANET.NUM_CLASSES",
}


class DataCheckError(ValueError):
    """A dataset does not fit the model, or a file does not hold what it should."""


def _error(subject: str, expected: str, found: str, fix: str) -> DataCheckError:
    return DataCheckError(f"{subject}: expected {expected}; found {found}. {fix}")


def _names(dataset_names: Iterable[str]) -> str:
    names = [repr(n) for n in dataset_names]
    if not names:
        return "the dataset"
    return ("dataset " if len(names) == 1 else "datasets ") + ", ".join(names)


def _cfg_get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _sample_indices(n: int, k: int) -> List[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included: deterministic and
    covering every part of the dataset (files are often ordered by source or date)."""
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def _shorten(values: Sequence, limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in list(values)[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


# --------------------------------------------------------------------------- COCO JSON


class _Problems:
    """Counts each kind of problem and keeps its first example."""

    def __init__(self):
        self.counts: Dict[str, int] = {}
        self.first: Dict[str, str] = {}

    def add(self, kind: str, example: str) -> None:
        if kind not in self.counts:
            self.counts[kind] = 0
            self.first[kind] = example
        self.counts[kind] += 1

    def lines(self) -> List[str]:
        return [f"{n} x {kind} (first: {self.first[kind]})" for kind, n in self.counts.items()]


def _json_subject(json_file: str, dataset_name: Optional[str]) -> str:
    prefix = f"Dataset {dataset_name!r}, annotation file" if dataset_name else "Annotation file"
    return f"{prefix} {json_file}"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_categories(categories: List, problems: _Problems) -> set:
    ids = set()
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            problems.add("category without an integer 'id'", f"categories[{i}] = {cat!r:.80}")
            continue
        if not isinstance(cat.get("name"), str):
            problems.add("category without a 'name' string", f"category id {cat['id']}")
        if cat["id"] in ids:
            problems.add("duplicate category id", f"id {cat['id']}")
        ids.add(cat["id"])
    return ids


def _check_images(images: List, problems: _Problems) -> set:
    ids = set()
    for i, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img:
            problems.add("image entry without 'id'", f"images[{i}] = {img!r:.80}")
            continue
        missing = [k for k in ("file_name", "width", "height") if k not in img]
        if missing:
            problems.add(
                "image entry without 'file_name' / 'width' / 'height'",
                f"image id {img['id']} lacks {', '.join(missing)}",
            )
        elif not (
            _is_number(img["width"])
            and _is_number(img["height"])
            and min(img["width"], img["height"]) > 0
        ):
            problems.add(
                "image size that is not a positive number",
                f"image id {img['id']}: width {img['width']!r}, height {img['height']!r}",
            )
        if img["id"] in ids:
            problems.add("duplicate image id", f"id {img['id']!r}")
        ids.add(img["id"])
    return ids


def _segmentation_problem(segm) -> Optional[str]:
    """None if ``segm`` has the COCO structure (polygons or RLE), else what is wrong."""
    if isinstance(segm, dict):
        return None if "counts" in segm and "size" in segm else "an RLE dict without counts/size"
    if not isinstance(segm, list):
        return f"a {type(segm).__name__}"
    if segm and not isinstance(segm[0], list):
        return "a flat list of numbers (one polygon not wrapped in a list of polygons)"
    return None


def _bad_boxes(boxes: List) -> List[int]:
    """Indices of boxes that are not 4 finite numbers with w, h >= 0 (one NumPy pass when the
    boxes are well-formed, as they are in a usable file)."""
    try:
        arr = np.array(boxes, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[1] == 4:
            ok = np.isfinite(arr).all(axis=1) & (arr[:, 2] >= 0) & (arr[:, 3] >= 0)
            return np.flatnonzero(~ok).tolist()
    except (TypeError, ValueError):
        pass
    bad = []
    for i, box in enumerate(boxes):
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(_is_number(v) and math.isfinite(v) for v in box)
            and box[2] >= 0
            and box[3] >= 0
        ):
            bad.append(i)
    return bad


def _check_annotations(
    annotations: List,
    image_ids: set,
    category_ids: set,
    for_evaluation: bool,
    problems: _Problems,
) -> None:
    order = ["id", "image_id", "category_id", "bbox"]
    if for_evaluation:
        # COCOeval reads both from every ground-truth annotation (KeyError otherwise).
        order += ["area", "iscrowd"]
    required = set(order)

    def name(i: int) -> str:
        return f"annotation id {annotations[i].get('id', f'[{i}]')}"

    anns = []
    for i, ann in enumerate(annotations):
        if isinstance(ann, dict):
            anns.append(i)
        else:
            problems.add("annotation that is not a JSON object", f"annotations[{i}]")
    seen = set()
    with_box = []
    for i in anns:
        ann = annotations[i]
        if not ann.keys() >= required:
            missing = ", ".join(k for k in order if k not in ann)
            problems.add(f"annotation without {' / '.join(order)}", f"{name(i)} lacks {missing}")
        ann_id = ann.get("id")
        if ann_id in seen:
            problems.add("duplicate annotation id", name(i))
        seen.add(ann_id)
        if ann.get("image_id", image_ids) not in image_ids:
            problems.add(
                "annotation whose image_id is not in 'images'",
                f"{name(i)}, image_id {ann['image_id']!r}",
            )
        if ann.get("category_id", category_ids) not in category_ids:
            problems.add(
                "annotation whose category_id is not in 'categories'",
                f"{name(i)}, category_id {ann['category_id']!r}",
            )
        if "bbox" in ann:
            with_box.append(i)
        segm = ann.get("segmentation")
        if segm is not None and not (
            isinstance(segm, list) and (not segm or isinstance(segm[0], list))
        ):
            problem = _segmentation_problem(segm)
            if problem:
                problems.add(
                    "segmentation that is neither a list of polygons [[x1, y1, ...], ...] nor RLE",
                    f"{name(i)}: {problem}",
                )
    for k in _bad_boxes([annotations[i]["bbox"] for i in with_box]):
        i = with_box[k]
        problems.add(
            "bbox that is not 4 finite numbers [x, y, w >= 0, h >= 0]",
            f"{name(i)}: {annotations[i]['bbox']!r:.80}",
        )


_COCO_FIX = (
    "A COCO instances file is {'images': [{'id', 'file_name', 'width', 'height'}, ...], "
    "'annotations': [{'id', 'image_id', 'category_id', 'bbox': [x, y, w, h], 'area', 'iscrowd', "
    "'segmentation'}, ...], 'categories': [{'id', 'name'}, ...]} (docs/detection.md)."
)


def validate_coco_json(
    json_file: str, dataset_name: Optional[str] = None, *, for_evaluation: bool = False
) -> Dict:
    """Parse a COCO-format annotation file and check its structure.

    Args:
        json_file: path (or detectron2 ``PathManager`` URL) of the file.
        dataset_name: named in messages.
        for_evaluation: also require ``area`` and ``iscrowd`` on every annotation (COCOeval reads
            them from the ground truth).

    Returns:
        The parsed file.

    Raises:
        DataCheckError: missing or unreadable file, invalid JSON (with line and column), missing
            or empty ``images`` / ``annotations`` / ``categories``, or inconsistent entries (each
            kind counted, with its first example).
    """
    subject = _json_subject(json_file, dataset_name)
    local = PathManager.get_local_path(json_file)
    if not os.path.isfile(local):
        raise _error(
            subject,
            "a COCO-format JSON file",
            "no such file",
            "Put the file there (datasets/README.md; builtin dataset names look under "
            f"$DETECTRON2_DATASETS, now {os.getenv('DETECTRON2_DATASETS', 'datasets')!r}) or "
            "correct the path in DATASETS.COCO_FORMAT.",
        )
    with open(local, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _error(
            subject,
            "UTF-8 text",
            f"a byte that is not UTF-8 at offset {e.start} ({raw[e.start:e.start + 1]!r})",
            "Re-save the file as UTF-8 (JSON files must be UTF-8).",
        ) from None
    if not text.strip():
        raise _error(subject, "a JSON object", "an empty file", "Regenerate or re-download it.")
    try:
        coco = json.loads(text)
    except json.JSONDecodeError as e:
        near = text[max(0, e.pos - 30) : e.pos + 30].replace("\n", "\\n")
        raise _error(
            subject,
            "valid JSON",
            f"'{e.msg}' at line {e.lineno}, column {e.colno} (near {near!r})",
            "Fix the file at that position or regenerate it; an error at the very end usually "
            "means a truncated file (interrupted download or write).",
        ) from None
    if not isinstance(coco, dict):
        raise _error(
            subject,
            "a JSON object with 'images', 'annotations' and 'categories'",
            f"a JSON {type(coco).__name__}",
            _COCO_FIX,
        )
    for key in ("images", "annotations", "categories"):
        value = coco.get(key)
        if not isinstance(value, list) or not value:
            found = (
                f"no {key!r} (top-level keys: {', '.join(map(repr, coco)) or 'none'})"
                if key not in coco
                else f"{key!r} = {value!r:.60}"
            )
            raise _error(subject, f"a non-empty {key!r} list", found, _COCO_FIX)
    problems = _Problems()
    category_ids = _check_categories(coco["categories"], problems)
    image_ids = _check_images(coco["images"], problems)
    _check_annotations(coco["annotations"], image_ids, category_ids, for_evaluation, problems)
    if problems.counts:
        raise DataCheckError(
            f"{subject}: expected a consistent COCO instances file; found:\n  - "
            + "\n  - ".join(problems.lines())
            + f"\nFix these entries. {_COCO_FIX}"
        )
    return coco


def check_dataset_source(dataset_name: str, *, for_evaluation: bool = False) -> None:
    """Validate a registered dataset's COCO ``json_file`` (metadata) before it is loaded.

    Datasets without a ``json_file`` (semantic segmentation, dicts from code) pass; so does a
    generated toy set whose file is written on first load.

    Raises:
        DataCheckError: see :func:`validate_coco_json`.
    """
    meta = MetadataCatalog.get(dataset_name)
    json_file = meta.get("json_file")
    if json_file is None:
        return
    if meta.get("toy_coco_generate_kwargs") and not PathManager.exists(json_file):
        return
    validate_coco_json(json_file, dataset_name, for_evaluation=for_evaluation)


# --------------------------------------------------------------------------- classes and masks


def model_class_keys(cfg) -> List[Tuple[str, str]]:
    """``(config key, metadata attribute)`` pairs whose lengths must agree for ``cfg``'s model,
    e.g. ``[("MODEL.ROI_HEADS.NUM_CLASSES", "thing_classes")]``; empty for class-agnostic or
    unknown meta-architectures."""
    arch = cfg.MODEL.META_ARCHITECTURE
    keys = []
    if arch in _THING_KEYS:
        keys.append((_THING_KEYS[arch], "thing_classes"))
    if arch in _SEM_SEG_ARCHS or arch == "PanopticFPN":
        keys.append(("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff_classes"))
    return keys


def sem_seg_label_range(cfg) -> Optional[Tuple[int, int]]:
    """``(NUM_CLASSES, IGNORE_VALUE)`` of a semantic-segmentation config, else None."""
    if cfg.MODEL.META_ARCHITECTURE not in _SEM_SEG_ARCHS:
        return None
    return int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES), int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)


def _category_ids(dataset_dicts: Sequence[Dict]) -> Tuple[np.ndarray, np.ndarray]:
    """Category id of every annotation (-1 where missing) and the index of its record."""
    counts = [len(d.get("annotations", ())) for d in dataset_dicts]
    owners = np.repeat(np.arange(len(dataset_dicts)), counts)
    values = [a.get("category_id", -1) for d in dataset_dicts for a in d.get("annotations", ())]
    try:
        ids = np.fromiter(values, np.int64, len(values))
        # Floats like 1.5 would be truncated by fromiter: compare with the originals.
        if any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) for v in values):
            raise TypeError
    except (TypeError, ValueError):
        ids = np.array([v if isinstance(v, (int, np.integer)) else -1 for v in values], np.int64)
    return ids, owners


def check_num_classes(
    cfg, dataset_names: Sequence[str], dataset_dicts: Optional[Sequence[Dict]] = None
) -> None:
    """The model's ``NUM_CLASSES`` keys equal the datasets' class counts (too few and too many
    are both refused), and every annotation's ``category_id`` is in ``[0, NUM_CLASSES)``.

    Class lists come from the metadata (``thing_classes`` / ``stuff_classes``), which
    detectron2's COCO loader fills when the dataset is loaded: call this after loading.

    Args:
        cfg: the config.
        dataset_names: datasets of ``dataset_dicts``.
        dataset_dicts: their loaded dicts (for the category id check), or None.

    Raises:
        DataCheckError: naming key, dataset, both counts and the fix.
    """
    for key, attr in model_class_keys(cfg):
        expected = int(_cfg_get(cfg, key))
        for name in dataset_names:
            classes = MetadataCatalog.get(name).get(attr)
            if classes is None:
                logger.warning(
                    "Dataset %r has no %s in its metadata: %s=%d cannot be checked against it.",
                    name,
                    attr,
                    key,
                    expected,
                )
                continue
            if len(classes) == expected:
                continue
            if expected > len(classes):
                effect = (
                    f"the model would have {expected - len(classes)} output classes that never "
                    "occur in the data (their scores still take part in every prediction)"
                )
            else:
                missing = (
                    f"class {expected}"
                    if len(classes) == expected + 1
                    else f"classes {expected}..{len(classes) - 1}"
                )
                effect = (
                    f"{missing} would have no output (detectron2 reads class id {expected} as "
                    "background and larger ids break the loss)"
                )
            raise _error(
                f"{key} for {_names([name])}",
                f"{len(classes)} classes, as the dataset's {attr} has " f"({_shorten(classes, 5)})",
                f"{key}={expected}: {effect}",
                f"Set {key} {len(classes)} (e.g. on the command line: {key} {len(classes)}).",
            )
        if attr == "thing_classes" and dataset_dicts:
            _check_category_range(dataset_dicts, key, expected, dataset_names)
    sem = sem_seg_label_range(cfg)
    if sem is not None:
        for name in dataset_names:
            ignore = MetadataCatalog.get(name).get("ignore_label")
            if ignore is not None and int(ignore) != sem[1]:
                raise _error(
                    f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE for {_names([name])}",
                    f"the dataset's ignore_label {ignore} (what its evaluator ignores)",
                    f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE={sem[1]}: training would learn from "
                    f"pixels labelled {ignore} and ignore pixels labelled {sem[1]}",
                    f"Set MODEL.SEM_SEG_HEAD.IGNORE_VALUE {ignore}.",
                )


def _check_category_range(
    dataset_dicts: Sequence[Dict], key: str, num_classes: int, dataset_names: Sequence[str]
) -> None:
    ids, owners = _category_ids(dataset_dicts)
    bad = np.flatnonzero((ids < 0) | (ids >= num_classes))
    if not len(bad):
        return
    record = int(owners[bad[0]])
    first = dataset_dicts[record]
    position = int(bad[0] - np.searchsorted(owners, record))
    first_id = first["annotations"][position].get("category_id", "missing")
    raise _error(
        f"Annotations of {_names(dataset_names)}",
        f"category ids in [0, {num_classes}) ({key}={num_classes}; detectron2 maps the JSON's "
        "category ids to 0..N-1 when the dataset is registered with its name)",
        f"{len(bad)} annotation(s) outside it, values {_shorten(np.unique(ids[bad]).tolist())}; "
        f"first: {first.get('file_name')} with category_id {first_id!r}",
        "Register the dataset so the loader maps ids (register_coco_instances / "
        "DATASETS.COCO_FORMAT), or give the dicts contiguous ids 0..N-1 and set "
        f"{key} to the number of classes.",
    )


def check_masks(cfg, dataset_names: Sequence[str], dataset_dicts: Sequence[Dict]) -> None:
    """A config with ``MODEL.MASK_ON`` needs an instance mask on every non-crowd annotation.

    Raises:
        DataCheckError: no annotation has a mask (the mask head would have nothing to learn or
            evaluate), or only some have (detectron2 fails with a KeyError / AttributeError in the
            middle of training, at the first image where masks are missing).
    """
    if not cfg.MODEL.MASK_ON:
        return
    total = with_mask = 0
    first_without = None
    for record in dataset_dicts:
        for ann in record.get("annotations", ()):
            if ann.get("iscrowd", 0):
                continue
            total += 1
            if ann.get("segmentation"):
                with_mask += 1
            elif first_without is None:
                first_without = record.get("file_name")
    if total == 0 or with_mask == total:
        return
    fix = (
        "Use a dataset with instance masks ('segmentation' polygons or RLE), or a box-only "
        "config (configs/COCO-Detection/, or MODEL.MASK_ON False)."
    )
    if with_mask == 0:
        raise _error(
            f"MODEL.MASK_ON=True (a Mask R-CNN config) on {_names(dataset_names)}",
            "instance masks ('segmentation') in the annotations",
            f"none of its {total} annotations has one",
            fix,
        )
    raise _error(
        f"MODEL.MASK_ON=True on {_names(dataset_names)}",
        "a mask on every non-crowd annotation",
        f"{total - with_mask} of {total} annotations without 'segmentation' (or with no valid "
        f"polygon); first image: {first_without}",
        "Add the missing masks, remove those annotations, or " + fix[0].lower() + fix[1:],
    )


# --------------------------------------------------------------------------- evaluation GT


def filter_evaluator_ground_truth(evaluator) -> PolygonFilterReport:
    """Apply the training polygon policy to a ``COCOEvaluator``'s ground truth.

    ``COCOEvaluator`` parses the dataset's ``json_file`` with pycocotools (or converts the
    dataset dicts when there is none) into ``evaluator._coco_api``; this removes from it exactly
    the polygons :func:`resnest_dense.data.polygons.filter_dataset_dicts` removes from the
    training dicts and rebuilds the index. Works for subclasses (``FasterCOCOEvaluator``).

    Args:
        evaluator: a detectron2 ``COCOEvaluator`` (0.6 - 0.7 keep the ground truth in
            ``_coco_api``).

    Returns:
        The report (logged when something was removed).
    """
    coco_api = getattr(evaluator, "_coco_api", None)
    if coco_api is None or not isinstance(getattr(coco_api, "dataset", None), dict):
        raise TypeError(
            f"filter_evaluator_ground_truth needs a detectron2 COCOEvaluator (ground truth in "
            f"._coco_api); got {type(evaluator).__name__}"
        )
    meta = getattr(evaluator, "_metadata", None)
    name = getattr(meta, "name", "ground truth")
    image_root = meta.get("image_root", "") if meta is not None else ""
    report = filter_coco_ground_truth(coco_api.dataset, f"dataset {name!r}", image_root)
    if report.removed_polygons:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index"
            coco_api.createIndex()
    return report


# --------------------------------------------------------------------------- images

_ACCEPTED_MODES = "1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr"


def _bit_depth_problem(mode: str) -> Optional[str]:
    if mode == "F":
        return "32-bit floating-point"
    if mode.startswith("I;16"):
        return "16-bit integer"
    if mode.startswith("I"):
        return "32-bit integer"
    return None


def _refuse_bit_depth(file_name: str, mode: str) -> None:
    depth = _bit_depth_problem(mode)
    if depth is None:
        return
    raise _error(
        f"Image {file_name}",
        f"an 8-bit image (PIL modes {_ACCEPTED_MODES})",
        f"a {depth} single-channel image (PIL mode {mode!r})",
        "detectron2 reads images with PIL convert('RGB'), which clips every value above 255 to "
        "255 instead of scaling (a 16-bit photo becomes a white image). Convert the files to "
        "8 bits, scaled to the range your data use, e.g. for full-range 16-bit data "
        "Image.fromarray((np.asarray(im) >> 8).astype(np.uint8)).",
    )


def check_image_file(file_name: str) -> None:
    """Refuse an image detectron2 would not decode to what it holds (reads the header only).

    Use before ``read_image`` in a mapper or a demo.

    Raises:
        DataCheckError: 16-bit, 32-bit integer or float image.
        OSError: missing or unreadable file (PIL's error, so corrupt-image skipping sees it).
    """
    with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
        _refuse_bit_depth(file_name, im.mode)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # detectron2 ignores broken EXIF blocks the same way
        return 1


def _geometry(im: Image.Image) -> Tuple[Tuple[int, int], Tuple[int, int], int]:
    """Stored ``(w, h)``, ``(w, h)`` after EXIF orientation (what ``read_image`` returns) and the
    orientation tag."""
    orientation = _orientation(im)
    stored = tuple(im.size)
    decoded = stored[::-1] if orientation in _SWAPS_AXES else stored
    return stored, decoded, orientation


def _size_mismatch(
    file_name: str, expected: Tuple[int, int], stored, decoded, orientation: int
) -> DataCheckError:
    subject = f"Image {file_name}"
    given = f"width x height {expected[0]} x {expected[1]} as the annotations give"
    if orientation in _SWAPS_AXES and tuple(expected) == tuple(stored):
        return _error(
            subject,
            given,
            f"{decoded[0]} x {decoded[1]} after its EXIF orientation {orientation} (rotated / "
            f"transposed), which detectron2's read_image applies; the stored pixels are "
            f"{stored[0]} x {stored[1]}, the size in the annotations: EXIF orientation is the "
            "cause",
            "If the annotations were drawn on the stored (un-rotated) pixels, remove the EXIF "
            "orientation tag from the images; if they were drawn on the rotated view, save the "
            "images rotated (PIL ImageOps.exif_transpose) and write their rotated size in the "
            "annotations.",
        )
    exif = f" (EXIF orientation {orientation})" if orientation != 1 else ""
    return _error(
        subject,
        given,
        f"{decoded[0]} x {decoded[1]} when decoded{exif}; stored {stored[0]} x {stored[1]}: "
        "neither matches, so EXIF orientation is not the cause",
        "The file was resized or replaced after annotation, or the entry belongs to another "
        "image: correct width/height (and the annotations) or restore the original file.",
    )


def explain_size_mismatch(
    dataset_dict: Dict, cause: Optional[BaseException] = None
) -> DataCheckError:
    """Turn detectron2's ``SizeMismatchError`` into a message that says whether EXIF orientation
    is the cause. Returns the error (``raise explain_size_mismatch(d, e) from e``).

    Args:
        dataset_dict: the dict the mapper got (``file_name``, ``width``, ``height``).
        cause: the original error, quoted if the file cannot be re-opened.
    """
    file_name = dataset_dict.get("file_name", "?")
    expected = (dataset_dict.get("width"), dataset_dict.get("height"))
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
            stored, decoded, orientation = _geometry(im)
    except OSError as e:
        return DataCheckError(f"Image {file_name}: {cause}; re-opening it failed: {e}")
    return _size_mismatch(file_name, expected, stored, decoded, orientation)


def _is_local(path: str) -> bool:
    return "://" not in path


def _missing_files(paths: Sequence[str]) -> List[str]:
    # One stat per file; PathManager only for URLs (it costs ~10x a local stat).
    return [p for p in paths if not (os.path.isfile(p) if _is_local(p) else PathManager.exists(p))]


def check_images(
    dataset_dicts: Sequence[Dict],
    dataset_names: Sequence[str] = (),
    *,
    sample: int = DEFAULT_SAMPLE_SIZE,
    allow_unreadable: bool = False,
) -> None:
    """Every image exists (a ``stat`` each); ``sample`` of them, spread over the dataset,
    decode, are 8-bit and have the width/height of their dicts after EXIF orientation.

    Args:
        dataset_dicts: loaded dicts (``file_name``, optional ``width`` / ``height``).
        dataset_names: for messages.
        sample: how many images to decode.
        allow_unreadable: log sampled images that fail to decode instead of raising (training
            with ``DATALOADER.SKIP_CORRUPT_IMAGES``).

    Raises:
        DataCheckError: missing files (count and first ones), an unreadable sampled image, a
            16/32-bit or float image, a size mismatch (explained).
    """
    paths = [d["file_name"] for d in dataset_dicts]
    missing = _missing_files(paths)
    if missing:
        raise _error(
            f"Images of {_names(dataset_names)}",
            f"all {len(paths)} image files to exist",
            f"{len(missing)} missing: {_shorten(missing, 5)}",
            "Check image_root / $DETECTRON2_DATASETS (datasets/README.md) and the file_name "
            "entries of the annotations.",
        )
    unreadable = []
    for i in _sample_indices(len(paths), sample):
        d, path = dataset_dicts[i], paths[i]
        try:
            with PathManager.open(path, "rb") as f, Image.open(f) as im:
                _refuse_bit_depth(path, im.mode)
                stored, decoded, orientation = _geometry(im)
                im.load()
        except DataCheckError:
            raise
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for corrupt files
            unreadable.append(f"{path}: {e}")
            continue
        expected = (d.get("width"), d.get("height"))
        if None not in expected and tuple(expected) != tuple(decoded):
            raise _size_mismatch(path, expected, stored, decoded, orientation)
    if unreadable and not allow_unreadable:
        raise _error(
            f"Images of {_names(dataset_names)}",
            "images PIL can decode",
            f"{len(unreadable)} of {len(_sample_indices(len(paths), sample))} sampled images "
            f"unreadable, first {unreadable[0]}",
            "Fix or remove these files (and their annotations). Training can skip unreadable "
            "images with DATALOADER.SKIP_CORRUPT_IMAGES True; evaluation cannot.",
        )
    if unreadable:
        logger.warning(
            "%d sampled image(s) of %s are unreadable and will be skipped; first: %s",
            len(unreadable),
            _names(dataset_names),
            unreadable[0],
        )


# --------------------------------------------------------------------------- semantic labels


def _label_values(label: np.ndarray) -> np.ndarray:
    if label.dtype == np.uint8:  # bincount beats a sort for the usual 8-bit label maps
        return np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    return np.unique(label)


def _label_range_error(
    file_name: str, bad: Sequence[int], num_classes: int, ignore_value: int, where: str
) -> DataCheckError:
    bad = [int(v) for v in bad]
    hint = ""
    if num_classes in bad and 0 < min(bad):
        hint = (
            " If the labels are 1..N with 0 = ignore (the raw ADE20K layout), shift them to "
            f"0..N-1 with {ignore_value} = ignore (datasets/prepare_ade20k_sem_seg.py)."
        )
    return _error(
        f"Label file {file_name} ({where})",
        f"class ids in [0, {num_classes}) or the ignore value {ignore_value} "
        f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES {num_classes}, IGNORE_VALUE {ignore_value})",
        f"values {_shorten(bad)} (training would index past the classifier; evaluation would "
        "count them as other classes and change mIoU)",
        "Map the labels to 0..N-1 and the ignore value, or set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
        "to the dataset's number of classes (its stuff_classes)." + hint,
    )


def read_sem_seg_label(file_name: str) -> np.ndarray:
    """A label map as detectron2's ``SemSegEvaluator`` reads it (``np.asarray(Image.open)``),
    refused when detectron2's training mapper (``read_image(..., "L")``) reads other values.

    Returns:
        ``(H, W)`` array of the file's dtype.

    Raises:
        DataCheckError: more than one channel (colour-coded labels), a palette / 16-bit / 1-bit
            file whose values change under ``convert("L")``, or an EXIF orientation (training
            rotates the label map, the evaluator does not).
    """
    with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
        im.load()
        label = np.asarray(im)
        mode = im.mode
        orientation = _orientation(im)
        train_view = label if mode == "L" else np.asarray(im.convert("L"))
    fix = "Save label maps as single-channel 8-bit PNGs (PIL mode 'L') holding class ids."
    if label.ndim != 2:
        raise _error(
            f"Label file {file_name}",
            "one class id per pixel (a single-channel image)",
            f"{label.shape[2]} channels (PIL mode {mode!r}; colour-coded labels?)",
            fix + " Map each colour to its class id first.",
        )
    if train_view is not label and not np.array_equal(train_view, label):
        diff = np.flatnonzero(train_view.ravel() != label.ravel())[0]
        raise _error(
            f"Label file {file_name}",
            "a label map that training and evaluation read alike",
            f"PIL mode {mode!r}: the evaluator reads value {label.ravel()[diff]} where the "
            f"training mapper (convert('L')) reads {train_view.ravel()[diff]}",
            fix
            + (
                " For a palette PNG whose indices are the class ids: "
                "Image.fromarray(np.asarray(Image.open(f))).save(f) keeps the indices."
                if mode == "P"
                else ""
            ),
        )
    if orientation != 1:
        raise _error(
            f"Label file {file_name}",
            "no EXIF orientation on a label map",
            f"orientation {orientation}: training (read_image) rotates it, the evaluator does not",
            "Remove the EXIF tag (or save the label map rotated).",
        )
    return label


def check_sem_seg_tensor(
    sem_seg, num_classes: int, ignore_value: int, file_name: str, where: str = "training sample"
) -> None:
    """Vectorised range check of one label map (the mapper's ``dataset_dict["sem_seg"]``).

    Args:
        sem_seg: ``(H, W)`` integer tensor or array.
        num_classes, ignore_value: allowed values are ``[0, num_classes)`` and ``ignore_value``.
        file_name: the label (or image) file, for the message.
        where: e.g. the dataset name, for the message.

    Raises:
        DataCheckError: naming the file and the bad values.
    """
    t = torch.as_tensor(sem_seg)
    bad = (t < 0) | ((t >= num_classes) & (t != ignore_value))
    if bool(bad.any()):
        raise _label_range_error(
            file_name, torch.unique(t[bad]).tolist(), num_classes, ignore_value, where
        )


class CheckedSemSegLoader:
    """``sem_seg_loading_fn`` for detectron2's ``SemSegEvaluator`` that checks every label map.

    Args:
        num_classes, ignore_value: what the evaluator assumes (``len(stuff_classes)`` and
            ``ignore_label`` of the metadata; see :meth:`for_dataset`).
        dataset_name: for messages.
    """

    def __init__(self, num_classes: int, ignore_value: int, dataset_name: str = ""):
        self.num_classes = int(num_classes)
        self.ignore_value = int(ignore_value)
        self.dataset_name = dataset_name

    @classmethod
    def for_dataset(cls, dataset_name: str) -> "CheckedSemSegLoader":
        """The range ``SemSegEvaluator(dataset_name)`` uses (from the metadata)."""
        meta = MetadataCatalog.get(dataset_name)
        return cls(len(meta.stuff_classes), meta.ignore_label, dataset_name)

    def __call__(self, filename: str, dtype=int) -> np.ndarray:
        label = read_sem_seg_label(filename)
        values = _label_values(label)
        bad = values[(values < 0) | ((values >= self.num_classes) & (values != self.ignore_value))]
        if len(bad):
            where = (
                f"evaluation of {_names([self.dataset_name])}"
                if self.dataset_name
                else "evaluation"
            )
            raise _label_range_error(filename, bad, self.num_classes, self.ignore_value, where)
        return label.astype(dtype)


def check_sem_seg_labels(
    dataset_dicts: Sequence[Dict],
    num_classes: int,
    ignore_value: int,
    dataset_names: Sequence[str] = (),
    *,
    sample: int = DEFAULT_SAMPLE_SIZE,
) -> None:
    """Every record has a label file that exists; ``sample`` of them (spread over the dataset)
    hold only ``[0, num_classes) ∪ {ignore_value}``, are read alike by training and evaluation
    (:func:`read_sem_seg_label`) and have their image's size.

    Raises:
        DataCheckError: naming the first bad file and its bad values.
    """
    where = _names(dataset_names)
    labels = [d.get("sem_seg_file_name") for d in dataset_dicts]
    without = [d.get("file_name") for d, lab in zip(dataset_dicts, labels) if not lab]
    if without:
        raise _error(
            f"Semantic-segmentation {where}",
            "a label file (sem_seg_file_name) for every image",
            f"{len(without)} of {len(labels)} images without one, first {without[0]}",
            "Register image + label folders with detectron2's load_sem_seg (labels matched by "
            "file name), or use a detection config for a detection dataset.",
        )
    missing = _missing_files(labels)
    if missing:
        raise _error(
            f"Label files of {where}",
            f"all {len(labels)} label files to exist",
            f"{len(missing)} missing: {_shorten(missing, 5)}",
            "Check sem_seg_root / $DETECTRON2_DATASETS (datasets/README.md).",
        )
    for i in _sample_indices(len(labels), sample):
        try:
            label = read_sem_seg_label(labels[i])
        except (OSError, SyntaxError) as e:
            raise _error(
                f"Label file {labels[i]} of {where}",
                "a PNG label map PIL can decode",
                f"{type(e).__name__}: {e}",
                "Fix or regenerate the file.",
            ) from e
        values = _label_values(label)
        bad = values[(values < 0) | ((values >= num_classes) & (values != ignore_value))]
        if len(bad):
            raise _label_range_error(labels[i], bad, num_classes, ignore_value, where)
        image = dataset_dicts[i]["file_name"]
        with PathManager.open(image, "rb") as f, Image.open(f) as im:
            _, decoded, orientation = _geometry(im)
        if decoded != label.shape[::-1]:
            raise _error(
                f"Label file {labels[i]}",
                f"the size of its image {image}, {decoded[0]} x {decoded[1]} as read_image "
                f"returns it (EXIF orientation {orientation})",
                f"{label.shape[1]} x {label.shape[0]}",
                "Pair each image with its own label map, at the same size (and rotation).",
            )


# --------------------------------------------------------------------------- per-sample


class UnreadableImageTracker:
    """Counts distinct unreadable images; raises when every image of the dataset has failed.

    detectron2's ``MapDataset`` answers a mapper's None by drawing another index and forgetting
    the failed one; when every index has failed, ``random.sample`` on the empty pool raises
    "Sample larger than population or is negative", which names no file. A skipping mapper calls
    :meth:`record_failure` with the file and error; the call that makes every distinct file of
    the dataset unreadable raises instead. State is per process (each data-loader worker has its
    copy), which is what ``MapDataset``'s pool is too.

    Args:
        dataset_dicts: the dicts the loader maps.
        dataset_names: for the message.
    """

    def __init__(self, dataset_dicts: Sequence[Dict], dataset_names: Sequence[str] = ()):
        self.total = len({d["file_name"] for d in dataset_dicts})
        self.dataset_names = list(dataset_names)
        self.failed: set = set()
        self.first: Optional[str] = None

    def record_failure(self, file_name: str, error: BaseException) -> None:
        """Note one failure; raises :class:`DataCheckError` once every image has failed."""
        self.failed.add(file_name)
        if self.first is None:
            self.first = f"{file_name}: {error}"
        if self.total and len(self.failed) >= self.total:
            raise _error(
                f"Every image of {_names(self.dataset_names)} is unreadable",
                "at least one readable image",
                f"{len(self.failed)} of {self.total} failed (first: {self.first})",
                "DATALOADER.SKIP_CORRUPT_IMAGES skips single bad files, but nothing is left to "
                "train on: check image_root / $DETECTRON2_DATASETS and the file format.",
            )


class CheckedMapper:
    """Per-sample data checks around a dataset mapper (training or test).

    Before mapping: the image's bit depth from its header (:func:`check_image_file`). A
    ``SizeMismatchError`` from the mapper becomes :func:`explain_size_mismatch`'s error. After
    mapping, for a semantic-segmentation config: the values of ``sem_seg``
    (:func:`check_sem_seg_tensor`), naming the label file. Costs one header read and a few
    element-wise tensor operations per sample.

    Unreadable files still raise PIL's ``OSError``, so a corrupt-image-skipping wrapper outside
    this one sees them; a :class:`DataCheckError` must not be skipped.

    Args:
        mapper: e.g. detectron2's ``DatasetMapper``.
        num_classes, ignore_value: allowed ``sem_seg`` values; ``num_classes=None`` skips.
        dataset_names: for messages.
    """

    def __init__(
        self,
        mapper: Callable[[Dict], Optional[Dict]],
        *,
        num_classes: Optional[int] = None,
        ignore_value: int = 255,
        dataset_names: Sequence[str] = (),
    ):
        self.mapper = mapper
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.where = _names(dataset_names)

    @classmethod
    def from_config(
        cls, cfg, mapper: Callable[[Dict], Optional[Dict]], dataset_names: Sequence[str] = ()
    ) -> "CheckedMapper":
        sem = sem_seg_label_range(cfg)
        num_classes, ignore_value = sem if sem else (None, 255)
        return cls(
            mapper, num_classes=num_classes, ignore_value=ignore_value, dataset_names=dataset_names
        )

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        file_name = dataset_dict.get("file_name")
        if file_name:
            check_image_file(file_name)
        try:
            out = self.mapper(dataset_dict)
        except SizeMismatchError as e:
            raise explain_size_mismatch(dataset_dict, e) from e
        if out is not None and self.num_classes is not None and "sem_seg" in out:
            check_sem_seg_tensor(
                out["sem_seg"],
                self.num_classes,
                self.ignore_value,
                dataset_dict.get("sem_seg_file_name") or file_name,
                self.where,
            )
        return out


# --------------------------------------------------------------------------- one call


def check_dataset_dicts(
    cfg,
    dataset_names: Sequence[str],
    dataset_dicts: List[Dict],
    *,
    is_train: bool,
    sample: int = DEFAULT_SAMPLE_SIZE,
) -> List[Dict]:
    """All start-up checks of loaded dicts; for training, also the polygon filter.

    Args:
        cfg: the config.
        dataset_names: the datasets the dicts come from.
        dataset_dicts: the loaded dicts.
        is_train: training dicts (polygons are filtered, unreadable images may be allowed by
            ``DATALOADER.SKIP_CORRUPT_IMAGES``) or test dicts (the evaluator's ground truth is
            filtered by :func:`filter_evaluator_ground_truth`).
        sample: files decoded by the image and label samplers.

    Returns:
        The dicts, polygon-filtered when ``is_train``.
    """
    names = list(dataset_names)
    if is_train:
        dataset_dicts, _ = filter_dataset_dicts(dataset_dicts, _names(names))
    check_num_classes(cfg, names, dataset_dicts)
    check_masks(cfg, names, dataset_dicts)
    skip = is_train and bool(cfg.DATALOADER.get("SKIP_CORRUPT_IMAGES", False))
    check_images(dataset_dicts, names, sample=sample, allow_unreadable=skip)
    sem = sem_seg_label_range(cfg)
    if sem is not None:
        check_sem_seg_labels(dataset_dicts, *sem, names, sample=sample)
    return dataset_dicts


def load_checked_dataset_dicts(
    cfg, dataset_names: Sequence[str], *, is_train: bool = True, **kwargs
) -> List[Dict]:
    """``get_detection_dataset_dicts`` between the JSON checks and the dict checks.

    A drop-in for ``get_detection_dataset_dicts(names, **kwargs)`` in a ``build_train_loader``
    / ``build_test_loader``.

    Args:
        cfg: the config.
        dataset_names: ``cfg.DATASETS.TRAIN`` or one test dataset.
        is_train: see :func:`check_dataset_dicts`.
        **kwargs: for ``get_detection_dataset_dicts`` (``filter_empty``, ``min_keypoints``,
            ``proposal_files``); images whose every instance the polygon filter removed are
            dropped when ``filter_empty`` (default True, as detectron2's).

    Returns:
        The checked (and, for training, polygon-filtered) dicts.
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    for name in names:
        check_dataset_source(name, for_evaluation=not is_train)
    dicts = get_detection_dataset_dicts(names, **kwargs)
    checked = check_dataset_dicts(cfg, names, dicts, is_train=is_train)
    if is_train and kwargs.get("filter_empty", True) and checked is not dicts:
        checked = filter_images_with_only_crowd_annotations(checked)
    return checked


def check_datasets(cfg, dataset_names: Sequence[str], *, is_train: bool) -> None:
    """Load each dataset and run all start-up checks on it (e.g. the test sets at start-up, so a
    training run does not fail at its first evaluation)."""
    for name in dataset_names:
        check_dataset_source(name, for_evaluation=not is_train)
        check_dataset_dicts(cfg, [name], DatasetCatalog.get(name), is_train=is_train)
