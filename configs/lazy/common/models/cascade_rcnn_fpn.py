"""Cascade R-CNN (boxes only) of the ResNeSt paper's COCO recipe (twin of
``Base-Cascade-RCNN-FPN-ResNeSt.yaml``): :mod:`.cascade_mask_rcnn_fpn` without its mask branch."""

from .cascade_mask_rcnn_fpn import model

for key in ("mask_in_features", "mask_pooler", "mask_head"):
    model.roi_heads.pop(key)
