"""An RPN whose proposals do not depend on how a runtime orders equal scores.

detectron2's :class:`~detectron2.modeling.proposal_generator.RPN` keeps the ``PRE_NMS_TOPK``
best anchors of each level with ``torch.topk``, which leaves the order of equal scores
unspecified (on CPU it comes from an unstable sort). Equal scores are not rare: anchors over a
flat region (image background, batch padding) get bit-identical logits and box deltas, so their
proposals are exact shifts of each other. Their order then decides which one the RPN's NMS
keeps (torchvision's ``nms`` keeps the first of equal scores), and through the box head it can
change a final detection. ONNX ``TopK`` defines the order (the lower index first), so an
exported model and its PyTorch source disagreed on such images (docs/deployment.md).

:class:`StableTopKRPN` is detectron2's RPN with that order defined the ONNX way, in every
runtime: equal scores keep their anchor order. Everything else (heads, losses, anchor matching,
NMS, clipping, the empty-box filter, ``POST_NMS_TOPK``) is detectron2's, and it loads the same
weights. On scores without ties it returns exactly what ``RPN`` returns (tested).
Select it with ``MODEL.PROPOSAL_GENERATOR.NAME: "StableTopKRPN"`` (the project's detector
configs do).
"""

from typing import List, Tuple

import torch
from detectron2.layers import batched_nms, cat
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN
from detectron2.structures import Boxes, Instances

__all__ = ["StableTopKRPN", "stable_top_k", "select_rpn_proposals"]


@torch.jit.unused
def _in_onnx_export() -> bool:
    return torch.onnx.is_in_onnx_export()


def stable_top_k(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest scores of each row, best first, equal scores in ascending index order.

    Args:
        scores: ``(N, M)`` scores.
        k: how many to keep, ``1 <= k <= M`` (a 0-dim tensor while tracing, so that the graph
            keeps it a function of the input size).

    Returns:
        ``(values, indices)``, each ``(N, k)``.
    """
    if not torch.jit.is_scripting() and _in_onnx_export():
        # ONNX TopK specifies this order; the selection below exports to ops (NonZero, CumSum)
        # that would only re-derive it.
        return scores.topk(k, dim=1)
    # torch.topk finds the k-th value; which of the values equal to it make the cut, and the
    # order of equal values, are then fixed here. O(M) passes plus a sort of k, instead of a
    # stable sort of all M scores.
    # torch.topk ranks NaN first; as +inf here (those proposals are dropped or stop training).
    inf = float("inf")
    key = torch.nan_to_num(scores, nan=inf, posinf=inf, neginf=-inf)
    kth = key.topk(k, dim=1).values[:, -1:]
    above, at_kth = key > kth, key == kth
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (at_kth & (at_kth.cumsum(dim=1) <= room))
    # Exactly k per row, in ascending index order; a stable sort by score keeps that order
    # among equal scores.
    index = chosen.nonzero()[:, 1].reshape(scores.shape[0], -1)
    order = key.gather(1, index).sort(dim=1, descending=True, stable=True).indices
    index = index.gather(1, order)
    return scores.gather(1, index), index


def _by_score_then_index(keep: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``keep`` ordered by decreasing score, equal scores by increasing index. torchvision's
    ``batched_nms`` gives that order on its single-NMS path, but with more than 1000 boxes on
    CPU it runs one NMS per level and merges them with an unstable sort, so which of equal
    scores make the ``post_nms_topk`` cut would be unspecified again. (The ONNX graph takes the
    single-NMS path, whose ``NonMaxSuppression`` orders equal scores by index.)"""
    keep = keep.sort().values
    return keep[scores[keep].sort(descending=True, stable=True).indices]


def select_rpn_proposals(
    proposals: List[torch.Tensor],
    pred_objectness_logits: List[torch.Tensor],
    image_sizes: List[Tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> List[Instances]:
    """Per level the ``pre_nms_topk`` best proposals (:func:`stable_top_k`), then per image NMS
    within each level, clipping, the small-box filter and the ``post_nms_topk`` best overall.

    The contract of detectron2's ``find_top_rpn_proposals``, with a defined order of equal
    scores.

    Args:
        proposals: per level, ``(N, Hi*Wi*A, 4)`` decoded boxes.
        pred_objectness_logits: per level, ``(N, Hi*Wi*A)`` objectness logits.
        image_sizes: ``(h, w)`` of each image, to clip to.
        nms_thresh: IoU threshold of the RPN's NMS.
        pre_nms_topk: proposals kept per level and image before NMS.
        post_nms_topk: proposals kept per image after NMS (over all levels).
        min_box_size: boxes with a side shorter than this (pixels) are dropped.
        training: training raises on non-finite boxes or scores (diverged training); inference
            drops them.

    Returns:
        One ``Instances`` per image with ``proposal_boxes`` and ``objectness_logits``, best
        first.
    """
    scores, boxes, levels = [], [], []
    for level, (boxes_l, logits_l) in enumerate(zip(proposals, pred_objectness_logits)):
        num_anchors = logits_l.shape[1]
        if isinstance(num_anchors, torch.Tensor):  # traced: keep k a function of the input size
            k = torch.clamp(num_anchors, max=pre_nms_topk)
        else:
            k = min(num_anchors, pre_nms_topk)
        scores_l, index = stable_top_k(logits_l, k)
        scores.append(scores_l)
        boxes.append(boxes_l.gather(1, index.unsqueeze(2).expand(-1, -1, boxes_l.shape[2])))
        levels.append(torch.full_like(index[0], level))
    scores, boxes, levels = cat(scores, dim=1), cat(boxes, dim=1), cat(levels, dim=0)

    results: List[Instances] = []
    for n, image_size in enumerate(image_sizes):
        image_scores, image_boxes = scores[n], boxes[n]
        finite = torch.isfinite(image_boxes).all(dim=1) & torch.isfinite(image_scores)
        if training and not bool(finite.all()):
            raise FloatingPointError(
                "Predicted boxes or scores contain Inf/NaN. Training has diverged."
            )
        image_boxes = Boxes(image_boxes[finite])
        image_scores, image_levels = image_scores[finite], levels[finite]
        image_boxes.clip(image_size)
        big_enough = image_boxes.nonempty(threshold=min_box_size)
        image_boxes = image_boxes[big_enough]
        image_scores, image_levels = image_scores[big_enough], image_levels[big_enough]
        keep = batched_nms(image_boxes.tensor, image_scores, image_levels, nms_thresh)
        if torch.jit.is_scripting() or not _in_onnx_export():
            keep = _by_score_then_index(keep, image_scores)
        keep = keep[:post_nms_topk]
        result = Instances(image_size)
        result.proposal_boxes = image_boxes[keep]
        result.objectness_logits = image_scores[keep]
        results.append(result)
    return results


@PROPOSAL_GENERATOR_REGISTRY.register()
class StableTopKRPN(RPN):
    """detectron2's RPN with equal objectness scores kept in anchor order (see the module
    docstring); same arguments, weights and losses."""

    def predict_proposals(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
    ) -> List[Instances]:
        # Proposals are constants for the ROI heads, as in detectron2's RPN.
        with torch.no_grad():
            return select_rpn_proposals(
                self._decode_proposals(anchors, pred_anchor_deltas),
                pred_objectness_logits,
                image_sizes,
                self.nms_thresh,
                self.pre_nms_topk[self.training],
                self.post_nms_topk[self.training],
                self.min_box_size,
                self.training,
            )
