"""Panoptic quality counting (resnest_dense.engine.panoptic) against hand-worked cases and an
independent mask-by-mask implementation of the COCO panoptic rules written here."""

import math

import numpy as np
import pytest

from resnest_dense.data.panoptic_ids import id_to_rgb, rgb_to_id
from resnest_dense.engine.panoptic import (
    VOID,
    PanopticCounts,
    Segment,
    match_image,
    panoptic_quality,
)

THING, STUFF = 1, 2
IS_THING = {THING: True, STUFF: False, 3: True}


def _quality(gt_ids, gt_segments, pred_ids, pred_segments):
    counts = match_image(gt_ids, gt_segments, pred_ids, pred_segments)
    return counts, panoptic_quality(counts, IS_THING)


def test_perfect_prediction_is_one():
    gt = np.zeros((8, 8), np.int64)
    gt[:, :4] = 5
    gt[2:5, 5:7] = 7
    segments = {5: Segment(STUFF), 7: Segment(THING)}
    # The prediction uses other ids for the same segments: only the pixels count.
    pred = np.where(gt == 5, 1, np.where(gt == 7, 2, 0))
    counts, (summary, per_category) = _quality(
        gt, segments, pred, {1: Segment(STUFF), 2: Segment(THING)}
    )
    assert counts.tp == {STUFF: 1, THING: 1} and not counts.fp and not counts.fn
    assert summary["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert summary["Things"]["n"] == 1 and summary["Stuff"]["n"] == 1


def test_hand_worked_match_void_and_false_positive():
    # Ground truth: a 10x10 thing (100 px) on a 10x30 image; columns 20..29 are VOID.
    gt = np.zeros((10, 30), np.int64)
    gt[:, :10] = 1
    gt[:, 10:20] = 2  # stuff, 100 px
    segments = {1: Segment(THING), 2: Segment(STUFF)}
    pred = np.zeros_like(gt)
    pred[:, 2:12] = 11  # thing: 80 px on gt 1, 20 px on the stuff
    pred[:, 12:25] = 12  # stuff: 80 px on gt 2, 50 px on VOID
    pred[:, 25:30] = 13  # a thing entirely on VOID: ignored, not a false positive
    pred[:, :2] = 14  # a stuff segment on the thing: a false positive of STUFF
    pred_segments = {11: Segment(THING), 12: Segment(STUFF), 13: Segment(THING), 14: Segment(STUFF)}
    counts, (summary, per_category) = _quality(gt, segments, pred, pred_segments)
    # thing: IoU 80 / (100 + 100 - 80) = 2/3 > 0.5 -> TP.
    # stuff: union = 130 + 100 - 80 - 50 (VOID part of the prediction) = 100 -> IoU 0.8 -> TP.
    assert counts.tp == {THING: 1, STUFF: 1}
    assert counts.fp == {STUFF: 1} and not counts.fn
    assert counts.iou[THING] == pytest.approx(2 / 3) and counts.iou[STUFF] == pytest.approx(0.8)
    assert per_category[THING] == pytest.approx({"pq": 2 / 3, "sq": 2 / 3, "rq": 1.0})
    assert per_category[STUFF] == pytest.approx({"pq": 0.8 / 1.5, "sq": 0.8, "rq": 1 / 1.5})
    assert summary["All"]["pq"] == pytest.approx((2 / 3 + 0.8 / 1.5) / 2)


def test_iou_exactly_one_half_is_not_a_match():
    gt = np.zeros((4, 4), np.int64)
    gt[:, :2] = 1  # 8 px
    pred = np.zeros_like(gt)
    pred[:, 1:3] = 1  # 8 px, 4 shared: IoU 4 / 12 < 0.5
    counts, _ = _quality(gt, {1: Segment(THING)}, pred, {1: Segment(THING)})
    assert counts.fn == {THING: 1} and counts.fp == {THING: 1} and not counts.tp
    gt2 = np.array([[1, 1, 2, 2]])  # segment 2 is STUFF, so no predicted pixel is on VOID
    pred2 = np.ones_like(gt2)  # 4 px, 2 shared: IoU 2 / 4 = 0.5 exactly -> no match
    counts, _ = _quality(gt2, {1: Segment(THING), 2: Segment(STUFF)}, pred2, {1: Segment(THING)})
    assert not counts.tp and counts.fn == {THING: 1, STUFF: 1} and counts.fp == {THING: 1}
    # The same prediction where the rest is VOID: union 4 + 2 - 2 - 2 (VOID) = 2 -> IoU 1.
    counts, _ = _quality(np.array([[1, 1, 0, 0]]), {1: Segment(THING)}, pred2, {1: Segment(THING)})
    assert counts.tp == {THING: 1} and counts.iou[THING] == 1.0


def test_crowd_regions_are_neither_matched_nor_missed():
    gt = np.zeros((10, 10), np.int64)
    gt[:, :5] = 1  # crowd of THING
    gt[:, 5:] = 2  # a normal THING segment
    segments = {1: Segment(THING, iscrowd=True), 2: Segment(THING)}
    pred = np.zeros_like(gt)
    pred[:, :4] = 3  # on the crowd: ignored
    pred[:, 4:] = 4  # 60 px, 50 on gt 2: IoU 50/60 -> TP
    counts, _ = _quality(gt, segments, pred, {3: Segment(THING), 4: Segment(THING)})
    assert counts.tp == {THING: 1} and not counts.fp and not counts.fn
    # On the crowd of ANOTHER category the prediction is a false positive.
    counts, _ = _quality(gt, segments, pred, {3: Segment(3), 4: Segment(THING)})
    assert counts.fp == {3: 1}


def test_categories_that_never_occur_are_left_out_and_empty_parts_are_nan():
    gt = np.ones((3, 3), np.int64)
    counts, (summary, per_category) = _quality(gt, {1: Segment(THING)}, gt, {1: Segment(THING)})
    assert set(per_category) == {THING}
    assert summary["Things"]["pq"] == 1.0 and summary["All"]["n"] == 1
    assert summary["Stuff"]["n"] == 0 and math.isnan(summary["Stuff"]["pq"])


def test_unlisted_prediction_pixels_are_unlabelled():
    gt = np.ones((4, 4), np.int64)
    pred = np.full_like(gt, 9)  # id 9 is not in the prediction's segment list
    counts, _ = _quality(gt, {1: Segment(THING)}, pred, {})
    assert counts.fn == {THING: 1} and not counts.fp and not counts.tp


@pytest.mark.parametrize(
    "case, message",
    [
        ("size", "resolution"),
        ("unknown_gt", "not in the JSON"),
        ("void_pred", "unlabelled"),
    ],
)
def test_inconsistent_inputs_are_named(case, message):
    gt = np.ones((4, 4), np.int64)
    segments = {1: Segment(THING)}
    pred, pred_segments = np.ones((4, 4), np.int64), {1: Segment(THING)}
    if case == "size":
        pred = np.ones((4, 5), np.int64)
    elif case == "unknown_gt":
        gt[0, 0] = 8
    else:
        pred_segments = {0: Segment(THING)}
    with pytest.raises(ValueError, match=message):
        match_image(gt, segments, pred, pred_segments, where="img_7.png")


def test_rgb_ids_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 256**3 - 1, 12345678]], np.int64)
    assert np.array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    assert id_to_rgb(np.array([[256 + 2]]))[0, 0].tolist() == [2, 1, 0]


def _reference_counts(gt, gt_segments, pred, pred_segments):
    """The COCO panoptic rules written mask by mask, with no overlap table."""
    counts = PanopticCounts()
    matched_gt, matched_pred = set(), set()
    for g, gs in gt_segments.items():
        gmask = gt == g
        if not gmask.any() or gs.iscrowd:
            continue
        for p, ps in pred_segments.items():
            pmask = pred == p
            if ps.category_id != gs.category_id or not pmask.any():
                continue
            inter = np.logical_and(gmask, pmask).sum()
            union = np.logical_or(gmask, pmask).sum() - np.logical_and(pmask, gt == VOID).sum()
            if inter / union > 0.5:
                counts.add("tp", gs.category_id)
                counts.add("iou", gs.category_id, inter / union)
                matched_gt.add(g)
                matched_pred.add(p)
    for g, gs in gt_segments.items():
        if (gt == g).any() and g not in matched_gt and not gs.iscrowd:
            counts.add("fn", gs.category_id)
    for p, ps in pred_segments.items():
        pmask = pred == p
        if not pmask.any() or p in matched_pred:
            continue
        ignore = gt == VOID
        for g, gs in gt_segments.items():
            if gs.iscrowd and gs.category_id == ps.category_id:
                ignore |= gt == g
        if np.logical_and(pmask, ignore).sum() / pmask.sum() > 0.5:
            continue
        counts.add("fp", ps.category_id)
    return counts


def _random_panoptic(rng, shape, num_segments, first_id):
    """Blocky random segment maps: a few rectangles painted over each other, some VOID."""
    ids = np.zeros(shape, np.int64)
    segments = {}
    for k in range(num_segments):
        y0, x0 = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        y1, x1 = y0 + rng.integers(2, shape[0] // 2 + 3), x0 + rng.integers(2, shape[1] // 2 + 3)
        ids[y0:y1, x0:x1] = first_id + k
        segments[first_id + k] = Segment(int(rng.integers(1, 4)), bool(rng.random() < 0.15))
    return ids, segments


@pytest.mark.parametrize("seed", range(12))
def test_equals_the_mask_by_mask_rules_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    gt, gt_segments = _random_panoptic(rng, (24, 32), 7, first_id=1000)
    # Predictions: the ground truth jittered, relabelled and partly replaced.
    pred = np.roll(np.where(gt > 0, gt - 990, 0), int(rng.integers(-2, 3)), axis=1)
    extra, extra_segments = _random_panoptic(rng, (24, 32), 3, first_id=50)
    pred = np.where(extra > 0, extra, pred)
    pred_segments = {k - 990: Segment(s.category_id) for k, s in gt_segments.items()}
    pred_segments.update({k: Segment(s.category_id) for k, s in extra_segments.items()})
    if seed % 3 == 0:  # sometimes a wrong class
        first = next(iter(pred_segments))
        pred_segments[first] = Segment(pred_segments[first].category_id % 3 + 1)
    got = match_image(gt, gt_segments, pred, pred_segments)
    want = _reference_counts(gt, gt_segments, pred, pred_segments)
    for kind in ("tp", "fp", "fn"):
        assert getattr(got, kind) == getattr(want, kind), kind
    assert set(got.iou) == set(want.iou)
    for c in got.iou:
        assert got.iou[c] == pytest.approx(want.iou[c])
    assert sum(got.tp.values()) + sum(got.fn.values()) > 0  # the case is not trivial
