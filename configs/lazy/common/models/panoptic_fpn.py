"""Panoptic FPN on the ResNeSt paper's R-CNN recipe (twin of ``Base-Panoptic-FPN-ResNeSt.yaml``):
the Mask R-CNN of :mod:`.mask_rcnn_fpn` plus detectron2's semantic FPN head for the 54 COCO
stuff classes (53 + "things"; GN, 128 channels, loss weight 0.5), and detectron2's default
rules for combining instances and stuff into the panoptic output."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling import PanopticFPN
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead

from .mask_rcnn_fpn import model

model._target_ = PanopticFPN
model.sem_seg_head = L(SemSegFPNHead)(
    input_shape={
        f: L(ShapeSpec)(stride=s, channels="${....backbone.out_channels}")
        for f, s in zip(["p2", "p3", "p4", "p5"], [4, 8, 16, 32])
    },
    ignore_value=255,
    num_classes=54,
    conv_dims=128,
    common_stride=4,
    loss_weight=0.5,
    norm="GN",
)
model.update(
    combine_overlap_thresh=0.5, combine_stuff_area_thresh=4096, combine_instances_score_thresh=0.5
)
