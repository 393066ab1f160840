"""Cascade Mask R-CNN of the ResNeSt paper's COCO recipe (twin of
``Base-Cascade-RCNN-FPN-ResNeSt.yaml`` with ``MASK_ON``): three 4conv1fc box stages at IoU
0.5 / 0.6 / 0.7 with class-agnostic regression, and 2000 training proposals per image."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.roi_heads import CascadeROIHeads, FastRCNNConvFCHead, FastRCNNOutputLayers

from .mask_rcnn_fpn import model

model.proposal_generator.post_nms_topk = (2000, 1000)
for key in ("box_head", "box_predictor", "proposal_matcher"):
    model.roi_heads.pop(key)
model.roi_heads.update(
    _target_=CascadeROIHeads,
    box_heads=[
        L(FastRCNNConvFCHead)(
            input_shape=ShapeSpec(channels=256, height=7, width=7),
            conv_dims=[256] * 4,
            fc_dims=[1024],
            conv_norm="naiveSyncBN_N",
        )
        for _ in range(3)
    ],
    box_predictors=[
        L(FastRCNNOutputLayers)(
            input_shape=ShapeSpec(channels=1024),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(w, w, w / 2, w / 2)),
            cls_agnostic_bbox_reg=True,
            num_classes="${...num_classes}",
        )
        for w in (10.0, 20.0, 30.0)
    ],
    proposal_matchers=[
        L(Matcher)(thresholds=[iou], labels=[0, 1], allow_low_quality_matches=False)
        for iou in (0.5, 0.6, 0.7)
    ],
)
