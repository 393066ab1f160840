"""Mask R-CNN of the ResNeSt paper's COCO recipe (twin of ``Base-RCNN-FPN-ResNeSt.yaml`` with
``MASK_ON``): detectron2's ``common/models/mask_rcnn_fpn.py`` with the ResNeSt-50 FPN backbone,
RGB input with torchvision's mean/std, and a 4conv1fc box head and a mask head normalised by
``naiveSyncBN_N`` (SyncBN statistics that also accept the empty inputs a head gets)."""

from detectron2.model_zoo import get_config

from resnest_dense.modeling.proposal_generator import StableTopKRPN

from .resnest_fpn import backbone

model = get_config("common/models/mask_rcnn_fpn.py").model
model.backbone = backbone
# detectron2's RPN with equal scores kept in anchor order (Base-RCNN-FPN-ResNeSt.yaml says why).
model.proposal_generator._target_ = StableTopKRPN
model.pixel_mean = [123.68, 116.779, 103.939]
model.pixel_std = [58.393, 57.12, 57.375]
model.input_format = "RGB"
model.roi_heads.box_head.update(conv_dims=[256] * 4, fc_dims=[1024], conv_norm="naiveSyncBN_N")
model.roi_heads.mask_head.conv_norm = "naiveSyncBN_N"
