"""Panoptic quality (PQ / SQ / RQ) of COCO-panoptic predictions, without panopticapi.

detectron2's ``COCOPanopticEvaluator`` hands the counting to ``panopticapi`` (installed from
GitHub only, so not available here). This module counts the same way as the COCO panoptic
protocol (Kirillov et al. 2019, and its reference ``pq_compute``), per image and in memory:

* a ground-truth and a predicted segment of the same category match when their IoU is above
  0.5, where the union leaves out the predicted pixels on VOID (id 0) ground truth;
* crowd ground-truth segments are never matched and never count as false negatives;
* an unmatched prediction is a false positive unless more than half of it lies on VOID or on
  the crowd region of its own category;
* per category ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``,
  ``RQ = TP / (TP + FP/2 + FN/2)``; the averages (All / Things / Stuff) are over categories that
  occur (``TP + FP + FN > 0``).

Segment areas are pixel counts of the PNGs (COCO's ``area`` fields are the same counts).
"""

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from PIL import Image
from tabulate import tabulate

from ..data.panoptic_ids import rgb_to_id
from ..errors import StartupError
from ..utils.io import atomic_write_json

__all__ = [
    "VOID",
    "Segment",
    "PanopticCounts",
    "match_image",
    "panoptic_quality",
    "PanopticQualityEvaluator",
]

logger = logging.getLogger(__name__)

VOID = 0
# Segment ids are below 256**3 (three 8-bit channels), so gt * OFFSET + pred is unique.
_OFFSET = 256**3


@dataclass(frozen=True)
class Segment:
    """One segment of a panoptic image: its dataset category id and crowd flag."""

    category_id: int
    iscrowd: bool = False


class PanopticCounts:
    """Per-category TP / FP / FN counts and the IoU sum of the matches; adds up over images."""

    def __init__(self):
        self.tp: Dict[int, int] = {}
        self.fp: Dict[int, int] = {}
        self.fn: Dict[int, int] = {}
        self.iou: Dict[int, float] = {}

    def add(self, kind: str, category_id: int, value=1) -> None:
        table = getattr(self, kind)
        table[category_id] = table.get(category_id, 0) + value

    def merge(self, other: "PanopticCounts") -> "PanopticCounts":
        for kind in ("tp", "fp", "fn", "iou"):
            for category_id, value in getattr(other, kind).items():
                self.add(kind, category_id, value)
        return self


def _areas(ids: np.ndarray) -> Dict[int, int]:
    labels, counts = np.unique(ids, return_counts=True)
    return dict(zip(labels.tolist(), counts.tolist()))


def match_image(
    gt_ids: np.ndarray,
    gt_segments: Mapping[int, Segment],
    pred_ids: np.ndarray,
    pred_segments: Mapping[int, Segment],
    counts: Optional[PanopticCounts] = None,
    where: str = "image",
) -> PanopticCounts:
    """Count one image's matches into ``counts`` (a new one if None) and return it.

    Args:
        gt_ids, pred_ids: (H, W) integer segment ids; 0 is VOID in the ground truth. Pixels of
            ``pred_ids`` whose id is not in ``pred_segments`` count as unlabelled (VOID).
        gt_segments, pred_segments: segment id -> :class:`Segment`.
        where: names the image in error messages.

    Raises:
        ValueError: the two maps differ in size, or a ground-truth pixel carries an id that
            ``gt_segments`` does not list (a PNG / JSON mismatch in the data set).
    """
    counts = counts if counts is not None else PanopticCounts()
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"{where}: the prediction is {tuple(pred_ids.shape)} but the panoptic ground truth "
            f"is {tuple(gt_ids.shape)} (H, W); predictions must be at the ground-truth "
            "resolution"
        )
    gt_area = _areas(gt_ids)
    unknown = sorted(set(gt_area) - set(gt_segments) - {VOID})
    if unknown:
        raise ValueError(
            f"{where}: ground-truth segment ids {unknown[:5]} are in the PNG but not in the "
            "JSON's segments_info; the panoptic annotation files do not belong together"
        )
    if VOID in pred_segments:
        raise ValueError(f"{where}: a predicted segment has id {VOID}, the id of unlabelled pixels")
    pred_ids = np.where(np.isin(pred_ids, list(pred_segments)), pred_ids, VOID)
    pred_area = _areas(pred_ids)
    pairs = _areas(gt_ids.astype(np.int64) * _OFFSET + pred_ids.astype(np.int64))
    overlap = {(key // _OFFSET, key % _OFFSET): n for key, n in pairs.items()}

    gt_matched, pred_matched = set(), set()
    for (gt_id, pred_id), inter in overlap.items():
        if gt_id == VOID or pred_id == VOID:
            continue
        gt, pred = gt_segments[gt_id], pred_segments[pred_id]
        if gt.iscrowd or gt.category_id != pred.category_id:
            continue
        union = pred_area[pred_id] + gt_area[gt_id] - inter - overlap.get((VOID, pred_id), 0)
        iou = inter / union
        if iou > 0.5:  # at most one match per segment is possible above 0.5
            counts.add("tp", gt.category_id)
            counts.add("iou", gt.category_id, iou)
            gt_matched.add(gt_id)
            pred_matched.add(pred_id)

    crowd_of_category = {}
    for gt_id, gt in gt_segments.items():
        if gt_id in gt_matched or gt_id not in gt_area:
            continue
        if gt.iscrowd:
            crowd_of_category[gt.category_id] = gt_id
        else:
            counts.add("fn", gt.category_id)

    for pred_id, pred in pred_segments.items():
        if pred_id in pred_matched or pred_id not in pred_area:
            continue
        ignored = overlap.get((VOID, pred_id), 0)
        if pred.category_id in crowd_of_category:
            ignored += overlap.get((crowd_of_category[pred.category_id], pred_id), 0)
        if ignored / pred_area[pred_id] > 0.5:
            continue
        counts.add("fp", pred.category_id)
    return counts


def panoptic_quality(
    counts: PanopticCounts, is_thing: Mapping[int, bool]
) -> Tuple[Dict[str, Dict[str, float]], Dict[int, Dict[str, float]]]:
    """PQ / SQ / RQ (fractions, not percent) for All / Things / Stuff, and per category.

    Args:
        counts: the summed counts of all images.
        is_thing: dataset category id -> whether it is a thing class, for every category of
            the data set (categories that never occur are left out of the averages).

    Returns:
        ``({"All": {"pq", "sq", "rq", "n"}, "Things": ..., "Stuff": ...}, per_category)``; an
        average over no category is NaN (with ``n`` 0), never 0.
    """
    per_category = {}
    for category_id in is_thing:
        tp = counts.tp.get(category_id, 0)
        fp = counts.fp.get(category_id, 0)
        fn = counts.fn.get(category_id, 0)
        if tp + fp + fn == 0:
            continue
        iou = counts.iou.get(category_id, 0.0)
        denominator = tp + 0.5 * fp + 0.5 * fn
        per_category[category_id] = {
            "pq": iou / denominator,
            "sq": iou / tp if tp else 0.0,
            "rq": tp / denominator,
        }
    summary = {}
    for name, keep in (("All", None), ("Things", True), ("Stuff", False)):
        rows = [r for c, r in per_category.items() if keep is None or is_thing[c] == keep]
        summary[name] = {
            k: float(np.mean([r[k] for r in rows])) if rows else float("nan")
            for k in ("pq", "sq", "rq")
        }
        summary[name]["n"] = len(rows)
    return summary, per_category


class PanopticQualityEvaluator(DatasetEvaluator):
    """PQ / SQ / RQ of a model's ``"panoptic_seg"`` outputs on a COCO-panoptic data set.

    The data set's metadata names the ground truth as detectron2's COCO panoptic registrations
    do: ``panoptic_json`` (COCO panoptic annotations) and ``panoptic_root`` (their PNGs), plus
    ``thing_dataset_id_to_contiguous_id`` / ``stuff_dataset_id_to_contiguous_id`` to turn the
    model's contiguous class ids back into dataset ids. Results are in percent under
    ``"panoptic_seg"`` with detectron2's keys (``PQ, SQ, RQ, PQ_th, ..., RQ_st``) plus the
    number of categories of each part; images are counted as they come (no prediction is kept),
    and the counts of all processes are summed.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        meta = MetadataCatalog.get(dataset_name)
        missing = [
            k
            for k in (
                "panoptic_json",
                "panoptic_root",
                "thing_dataset_id_to_contiguous_id",
                "stuff_dataset_id_to_contiguous_id",
            )
            if not meta.get(k)
        ]
        if missing:
            raise StartupError(
                f"Dataset {dataset_name!r} has no {', '.join(missing)} in its metadata: panoptic "
                "evaluation needs the COCO panoptic JSON and PNG folder. Register it with "
                "detectron2's register_coco_panoptic_separated (or register_coco_panoptic)."
            )
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._panoptic_root = meta.panoptic_root
        self._thing_to_dataset = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
        self._stuff_to_dataset = {v: k for k, v in meta.stuff_dataset_id_to_contiguous_id.items()}
        self._label_divisor = meta.get("label_divisor")
        with PathManager.open(meta.panoptic_json) as f:
            gt = json.load(f)
        self._json_file = meta.panoptic_json
        self._is_thing = {c["id"]: bool(c.get("isthing", 0)) for c in gt["categories"]}
        self._gt = {a["image_id"]: a for a in gt["annotations"]}
        self.reset()

    def reset(self):
        self._counts = PanopticCounts()
        self._num_images = 0

    def _dataset_category(self, contiguous_id: int, isthing: Optional[bool]) -> int:
        if isthing is None:  # the model already predicts dataset category ids
            return int(contiguous_id)
        table = self._thing_to_dataset if isthing else self._stuff_to_dataset
        return table[int(contiguous_id)]

    def _prediction(self, panoptic_seg) -> Tuple[np.ndarray, Dict[int, Segment]]:
        ids, segments_info = panoptic_seg
        ids = ids.cpu().numpy().astype(np.int64)
        if segments_info is None:
            # detectron2's convention: ids are category * label_divisor + instance, -1 is VOID.
            segments = {}
            for label in np.unique(ids).tolist():
                if label < 0:
                    continue
                category = label // self._label_divisor
                isthing = category in self._thing_to_dataset
                segments[label + 1] = Segment(self._dataset_category(category, isthing))
            return ids + 1, segments
        segments = {
            int(s["id"]): Segment(self._dataset_category(s["category_id"], s.get("isthing")))
            for s in segments_info
        }
        return ids, segments

    def _ground_truth(self, image_id) -> Tuple[np.ndarray, Dict[int, Segment], str]:
        if image_id not in self._gt:
            raise ValueError(
                f"Image id {image_id!r} of {self._dataset_name!r} has no annotation in "
                f"{self._json_file}; the panoptic JSON and the instances JSON list different "
                "images"
            )
        ann = self._gt[image_id]
        path = os.path.join(self._panoptic_root, ann["file_name"])
        with PathManager.open(path, "rb") as f:
            ids = rgb_to_id(np.asarray(Image.open(f).convert("RGB")))
        segments = {
            int(s["id"]): Segment(int(s["category_id"]), bool(s.get("iscrowd", 0)))
            for s in ann["segments_info"]
        }
        return ids, segments, path

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            gt_ids, gt_segments, path = self._ground_truth(inp["image_id"])
            pred_ids, pred_segments = self._prediction(out["panoptic_seg"])
            match_image(gt_ids, gt_segments, pred_ids, pred_segments, self._counts, where=path)
            self._num_images += 1

    def evaluate(self):
        comm.synchronize()
        gathered = comm.gather((self._counts, self._num_images))
        if not comm.is_main_process():
            return None
        counts = PanopticCounts()
        for part, _ in gathered:
            counts.merge(part)
        num_images = sum(n for _, n in gathered)
        if num_images == 0:
            raise ValueError(f"No image of {self._dataset_name!r} was evaluated")
        summary, per_category = panoptic_quality(counts, self._is_thing)
        results = {}
        for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for key in ("pq", "sq", "rq"):
                results[key.upper() + suffix] = 100 * summary[name][key]
        table = tabulate(
            [
                [n, *(100 * summary[n][k] for k in ("pq", "sq", "rq")), summary[n]["n"]]
                for n in summary
            ],
            headers=["", "PQ", "SQ", "RQ", "#categories"],
            tablefmt="pipe",
            floatfmt=".3f",
        )
        logger.info(
            "Panoptic quality of %s (%d images):\n%s", self._dataset_name, num_images, table
        )
        if self._output_dir:
            atomic_write_json(
                os.path.join(self._output_dir, "panoptic_quality.json"),
                {
                    "summary": summary,
                    "per_category": {str(k): v for k, v in sorted(per_category.items())},
                    "num_images": num_images,
                },
            )
        return OrderedDict({"panoptic_seg": results})
