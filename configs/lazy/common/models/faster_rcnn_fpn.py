"""Faster R-CNN of the ResNeSt paper's COCO recipe (twin of ``Base-RCNN-FPN-ResNeSt.yaml``):
the Mask R-CNN of :mod:`.mask_rcnn_fpn` without its mask branch."""

from .mask_rcnn_fpn import model

for key in ("mask_in_features", "mask_pooler", "mask_head"):
    model.roi_heads.pop(key)
