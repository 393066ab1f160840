"""Panoptic FPN with Cascade R-CNN heads, the detectron2-ResNeSt fork's panoptic "tricks" model
(twin of the model keys of ``COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x
.yaml`` at ResNeSt-50): the :mod:`.panoptic_fpn` model whose instance branch is the Cascade Mask
R-CNN of :mod:`.cascade_mask_rcnn_fpn` (three stages at IoU 0.5 / 0.6 / 0.7, class-agnostic
boxes, 2000 training proposals) and whose stuff head uses SyncBN (``SEM_SEG_HEAD.NORM``)."""

from .cascade_mask_rcnn_fpn import model as cascade
from .panoptic_fpn import model

model.proposal_generator.post_nms_topk = cascade.proposal_generator.post_nms_topk
model.roi_heads = cascade.roi_heads
model.sem_seg_head.norm = "SyncBN"
