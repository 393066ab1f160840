"""Validation of COCO-format annotation files before detectron2's loader parses them.

detectron2's ``load_coco_json`` hands the file to pycocotools and fails without naming it: a
``json.JSONDecodeError`` with line and column but no file, ``KeyError: 'categories'`` for a file
without categories, ``ValueError: min() arg is an empty sequence`` for an empty list, and a file
without ``annotations`` loads silently as images without objects. :func:`validate_coco_json`
parses the file once more (about 1 s for 100k annotations) and names file, line and column, or
every kind of inconsistent entry with its first example.
"""

import json
import math
import os
from typing import Dict, List, Optional

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.utils.file_io import PathManager

from .check_errors import DataCheckError, data_error
from .polygons import filter_coco_ground_truth, refuse_unevaluable_ground_truth
from .registration import is_generated

__all__ = ["check_dataset_source", "validate_coco_json"]


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
        raise data_error(
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
        raise data_error(
            subject,
            "UTF-8 text",
            f"a byte that is not UTF-8 at offset {e.start} ({raw[e.start:e.start + 1]!r})",
            "Re-save the file as UTF-8 (JSON files must be UTF-8).",
        ) from None
    if not text.strip():
        raise data_error(subject, "a JSON object", "an empty file", "Regenerate or re-download it.")
    try:
        coco = json.loads(text)
    except json.JSONDecodeError as e:
        near = text[max(0, e.pos - 30) : e.pos + 30].replace("\n", "\\n")
        raise data_error(
            subject,
            "valid JSON",
            f"'{e.msg}' at line {e.lineno}, column {e.colno} (near {near!r})",
            "Fix the file at that position or regenerate it; an error at the very end usually "
            "means a truncated file (interrupted download or write).",
        ) from None
    if not isinstance(coco, dict):
        raise data_error(
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
            raise data_error(subject, f"a non-empty {key!r} list", found, _COCO_FIX)
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

    With ``for_evaluation`` the file is also the evaluator's ground truth: polygons pycocotools
    cannot evaluate are refused (:func:`~.polygons.refuse_unevaluable_ground_truth`).

    Raises:
        DataCheckError: see :func:`validate_coco_json`.
    """
    meta = MetadataCatalog.get(dataset_name)
    json_file = meta.get("json_file")
    if json_file is None:
        return
    if is_generated(meta) and not PathManager.exists(json_file):
        return
    coco = validate_coco_json(json_file, dataset_name, for_evaluation=for_evaluation)
    if for_evaluation:
        # What detectron2's COCOEvaluator reads as ground truth: this file.
        report = filter_coco_ground_truth(
            coco, f"{json_file} (dataset {dataset_name!r})", meta.get("image_root", "")
        )
        refuse_unevaluable_ground_truth(report)
