"""Instance polygons that pycocotools cannot rasterise, and the one policy that removes them.

detectron2 rasterises polygon masks with pycocotools in training (mask targets) and so does
COCO evaluation (ground truth), but the two see different data: training reads the dataset dicts,
from which ``load_coco_json`` has already dropped polygons with fewer than 3 points or an odd
number of coordinates, while ``COCOEvaluator`` parses the raw ``json_file`` again. What
pycocotools 2.0.11 does with such polygons (tried on this machine):

* a first polygon of 4 coordinates is taken for a box and fails with "Argument 'bb' has incorrect
  type"; fewer than 4 coordinates: "input type is not supported";
* with a NaN or infinite coordinate, or one of 1e12, ``frPyObjects`` had not returned after
  20-60 s (one 20 x 20 polygon); 1e7 takes 1.6 s. Training rasterises mask targets with the
  same function, so such a polygon stalls training as well as evaluation;
* a zero-area polygon gives an empty mask, a ground truth no prediction can match.

The policy, applied by :func:`filter_dataset_dicts` to the training dicts and by
:func:`filter_coco_ground_truth` to the evaluation ground truth alike: a polygon with fewer than
3 points, an odd number of coordinates, a non-numeric, NaN or infinite coordinate, a coordinate
more than one image size outside the image, or zero area is removed; an instance left without any
polygon is removed entirely (its box too), as ``load_coco_json`` already does for short
polygons. RLE masks are left alone. The checks run on all polygons at once with NumPy (about 0.2 s
for 100k polygons).
"""

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "POLYGON_PROBLEMS",
    "PolygonFilterReport",
    "filter_coco_ground_truth",
    "filter_dataset_dicts",
    "polygon_problems",
]

logger = logging.getLogger(__name__)

# Reason codes returned by polygon_problems (0 = a polygon pycocotools rasterises correctly).
POLYGON_PROBLEMS = {
    1: "not a list of coordinates",
    2: "odd number of coordinates",
    3: "fewer than 3 points",
    4: "non-numeric coordinate",
    5: "NaN or infinite coordinate",
    6: "coordinate more than one image size outside the image",
    7: "zero area",
}
_NOT_A_LIST, _ODD, _FEW, _NON_NUMERIC, _NON_FINITE, _FAR, _ZERO_AREA = range(1, 8)
# Twice the area (shoelace sum) below which a polygon counts as degenerate: far below any real
# object, far above float64 rounding of collinear points with coordinates up to 1e5.
_MIN_DOUBLE_AREA = 1e-6


def _lengths(polygons: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """Number of coordinates of each polygon, and the polygons that are not sequences."""
    lengths = np.zeros(len(polygons), np.int64)
    not_list = np.zeros(len(polygons), bool)
    for i, p in enumerate(polygons):
        if isinstance(p, (list, tuple)):
            # [[x, y], ...] instead of a flat [x, y, ...]: a common converter mistake.
            not_list[i] = len(p) > 0 and isinstance(p[0], (list, tuple))
            lengths[i] = len(p)
        elif isinstance(p, np.ndarray) and p.ndim == 1:
            lengths[i] = len(p)
        else:
            not_list[i] = True
    return lengths, not_list


def _flatten(polygons: Sequence, lengths: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """All coordinates of the polygons with ``codes == 0`` as one float64 array; polygons with a
    non-numeric coordinate get code ``_NON_NUMERIC`` (and are left out)."""
    keep = np.flatnonzero(codes == 0)
    try:
        return np.fromiter(
            chain.from_iterable(polygons[i] for i in keep),
            np.float64,
            count=int(lengths[keep].sum()),
        )
    except (TypeError, ValueError):
        # Rare: find the polygons that hold strings / None, then flatten the others.
        for i in keep:
            try:
                np.asarray(polygons[i], dtype=np.float64)
            except (TypeError, ValueError):
                codes[i] = _NON_NUMERIC
        return _flatten(polygons, lengths, codes)


def polygon_problems(
    polygons: Sequence[Sequence[float]], image_sizes: Optional[np.ndarray] = None
) -> np.ndarray:
    """Why each polygon cannot be rasterised by pycocotools (see :data:`POLYGON_PROBLEMS`).

    Args:
        polygons: ``P`` polygons, each a flat ``[x1, y1, x2, y2, ...]`` (list, tuple or 1-D
            array) in absolute pixels.
        image_sizes: ``(P, 2)`` width and height of each polygon's image, NaN where unknown;
            None skips the "far outside the image" test.

    Returns:
        ``(P,)`` int8 codes, 0 for a valid polygon. The first failing test wins, in the order
        of :data:`POLYGON_PROBLEMS`.
    """
    lengths, not_list = _lengths(polygons)
    codes = np.zeros(len(polygons), np.int8)
    codes[not_list] = _NOT_A_LIST
    codes[(codes == 0) & (lengths % 2 == 1)] = _ODD
    codes[(codes == 0) & (lengths < 6)] = _FEW
    flat = _flatten(polygons, lengths, codes)
    ok = np.flatnonzero(codes == 0)
    if not len(ok):
        return codes
    # Every kept polygon has an even number >= 6 of coordinates, so x / y alternate globally.
    points = lengths[ok] // 2
    starts = np.concatenate([[0], np.cumsum(points)[:-1]])
    x, y = flat[0::2], flat[1::2]
    finite = np.isfinite(x) & np.isfinite(y)
    non_finite = np.logical_or.reduceat(~finite, starts)
    x, y = np.where(finite, x, 0.0), np.where(finite, y, 0.0)
    far = np.zeros(len(ok), bool)
    if image_sizes is not None:
        sizes = np.asarray(image_sizes, np.float64)[ok]
        w, h = np.repeat(sizes[:, 0], points), np.repeat(sizes[:, 1], points)
        # Comparisons with NaN (unknown size) are False: no verdict without a size.
        outside = (x < -w) | (x > 2 * w) | (y < -h) | (y > 2 * h)
        far = np.logical_or.reduceat(outside, starts)
    # Shoelace with each polygon's last point joined to its first.
    ends = starts + points - 1
    x_next, y_next = np.roll(x, -1), np.roll(y, -1)
    x_next[ends], y_next[ends] = x[starts], y[starts]
    double_area = np.abs(np.add.reduceat(x * y_next - x_next * y, starts))
    sub = np.zeros(len(ok), np.int8)
    sub[double_area < _MIN_DOUBLE_AREA] = _ZERO_AREA
    sub[far] = _FAR
    sub[non_finite] = _NON_FINITE
    codes[ok] = sub
    return codes


@dataclass
class PolygonFilterReport:
    """What :func:`filter_dataset_dicts` / :func:`filter_coco_ground_truth` removed.

    Attributes:
        source: the dataset name(s) or file, for messages.
        num_polygons: polygons checked.
        removed_polygons: polygons removed.
        removed_instances: instances removed because none of their polygons was valid.
        reasons: ``{reason: number of polygons}``.
        first: the first removed polygon, as ``"<image file> (annotation <id or index>):
            <reason>"``.
    """

    source: str
    num_polygons: int = 0
    removed_polygons: int = 0
    removed_instances: int = 0
    reasons: Dict[str, int] = field(default_factory=dict)
    first: Optional[str] = None

    def message(self, what: str) -> str:
        """One line for the log (``what``: e.g. "training dicts")."""
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items()))
        return (
            f"{self.source}: removed {self.removed_polygons} of {self.num_polygons} polygons from "
            f"the {what} that pycocotools cannot rasterise ({reasons}); "
            f"{self.removed_instances} instance(s) had no valid polygon left and were removed "
            f"with their box. First: {self.first}. Training and evaluation apply the same rule "
            "(resnest_dense.data.polygons); fix the annotations to keep these objects."
        )


def _clean(
    segmentations: List[list],
    sizes: np.ndarray,
    label: Callable[[int], Tuple[str, object]],
    report: PolygonFilterReport,
) -> List[Optional[list]]:
    """Valid polygons of each instance (the same list object if all are valid, None if none is).

    Args:
        segmentations: per instance, a list of polygons.
        sizes: ``(N, 2)`` image width / height per instance (NaN: unknown).
        label: instance index -> ``(image file, annotation id or index)``, for the report
            (called for the first removed polygon only).
    """
    counts = np.fromiter((len(s) for s in segmentations), np.int64, len(segmentations))
    polygons = list(chain.from_iterable(segmentations))
    owner_of_polygon = np.repeat(np.arange(len(segmentations)), counts)
    codes = polygon_problems(polygons, sizes[owner_of_polygon] if len(polygons) else None)
    report.num_polygons += len(polygons)
    cleaned: List[Optional[list]] = list(segmentations)
    bad = np.flatnonzero(codes)
    if not len(bad):
        return cleaned
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    reasons = Counter()
    for instance in np.unique(owner_of_polygon[bad]):
        start, n = firsts[instance], counts[instance]
        instance_codes = codes[start : start + n]
        kept = [p for p, c in zip(segmentations[instance], instance_codes) if c == 0]
        cleaned[instance] = kept or None
        report.removed_instances += not kept
        for k in np.flatnonzero(instance_codes):
            reason = POLYGON_PROBLEMS[int(instance_codes[k])]
            reasons[reason] += 1
            if report.first is None:
                file_name, ann = label(int(instance))
                report.first = f"{file_name} (annotation {ann}, polygon {k}): {reason}"
    report.removed_polygons += len(bad)
    for reason, n in reasons.items():
        report.reasons[reason] = report.reasons.get(reason, 0) + n
    return cleaned


def _is_polygon_list(segm) -> bool:
    return isinstance(segm, (list, tuple)) and len(segm) > 0


def filter_dataset_dicts(
    dataset_dicts: List[Dict], source: str = "dataset"
) -> Tuple[List[Dict], PolygonFilterReport]:
    """Remove polygons pycocotools cannot rasterise from detectron2 dataset dicts.

    Records and annotations that change are shallow-copied; the input is not modified (and is
    returned as is when nothing is removed).

    Args:
        dataset_dicts: detectron2's standard dicts (``annotations[i]["segmentation"]`` a list of
            flat polygons, or an RLE dict which is left alone).
        source: dataset name(s) for the report.

    Returns:
        The filtered dicts (same order; an image can be left with no annotation) and the report
        (also logged as a warning when something was removed).
    """
    report = PolygonFilterReport(source)
    where, segmentations, sizes = [], [], []
    for r, record in enumerate(dataset_dicts):
        size = (record.get("width", np.nan), record.get("height", np.nan))
        for a, ann in enumerate(record.get("annotations", ())):
            segm = ann.get("segmentation")
            if _is_polygon_list(segm):
                where.append((r, a))
                segmentations.append(segm)
                sizes.append(size)
    if not segmentations:
        return dataset_dicts, report

    def label(k: int) -> Tuple[str, object]:
        r, a = where[k]
        record = dataset_dicts[r]
        return record.get("file_name", f"record {r}"), record["annotations"][a].get("id", a)

    cleaned = _clean(segmentations, np.asarray(sizes, np.float64), label, report)
    if not report.removed_polygons:
        return dataset_dicts, report
    out = list(dataset_dicts)
    changed: Dict[int, Dict[int, Optional[list]]] = {}
    for (r, a), old, new in zip(where, segmentations, cleaned):
        if new is not old:
            changed.setdefault(r, {})[a] = new
    for r, per_ann in changed.items():
        record = dict(out[r])
        annotations = []
        for a, ann in enumerate(record["annotations"]):
            if a not in per_ann:
                annotations.append(ann)
            elif per_ann[a] is not None:
                annotations.append({**ann, "segmentation": per_ann[a]})
        record["annotations"] = annotations
        out[r] = record
    logger.warning(report.message("training dicts"))
    return out, report


def filter_coco_ground_truth(
    coco: Dict, source: str = "ground truth", image_root: str = ""
) -> PolygonFilterReport:
    """Remove, in place, the polygons :func:`filter_dataset_dicts` removes, from a COCO-format
    dict (``{"images": [...], "annotations": [...]}``, e.g. ``COCO().dataset``).

    Annotations keep their ``area`` (as the file gives it); an annotation left without any
    polygon is deleted. A ``pycocotools.coco.COCO`` object must rebuild its index afterwards
    (``createIndex()``). Evaluation refuses such ground truth
    (:func:`resnest_dense.data.validation.check_evaluation_polygons`); this writes the cleaned
    copy a user chooses to evaluate on.

    Args:
        coco: the COCO dict; modified in place.
        source: dataset name or file for the report.
        image_root: prefixed to the images' ``file_name`` in the report.

    Returns:
        The report (logged as a warning when something was removed).
    """
    report = PolygonFilterReport(source)
    images = {img.get("id"): img for img in coco.get("images", ())}
    annotations = coco.get("annotations", [])
    index, segmentations, sizes = [], [], []
    for i, ann in enumerate(annotations):
        segm = ann.get("segmentation")
        if _is_polygon_list(segm):
            image = images.get(ann.get("image_id"), {})
            index.append(i)
            segmentations.append(segm)
            sizes.append((image.get("width", np.nan), image.get("height", np.nan)))
    if not segmentations:
        return report

    def label(k: int) -> Tuple[str, object]:
        ann = annotations[index[k]]
        image = images.get(ann.get("image_id"), {})
        file_name = image.get("file_name", f"image id {ann.get('image_id')}")
        return os.path.join(image_root, file_name), ann.get("id", index[k])

    cleaned = _clean(segmentations, np.asarray(sizes, np.float64), label, report)
    if not report.removed_polygons:
        return report
    drop = set()
    for i, old, new in zip(index, segmentations, cleaned):
        if new is None:
            drop.add(i)
        elif new is not old:
            annotations[i]["segmentation"] = new
    if drop:
        coco["annotations"] = [a for i, a in enumerate(annotations) if i not in drop]
    logger.warning(report.message("evaluation ground truth"))
    return report
