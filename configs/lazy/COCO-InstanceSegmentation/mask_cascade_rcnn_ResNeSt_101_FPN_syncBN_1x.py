"""Cascade Mask R-CNN, ResNeSt-101, the paper's COCO recipe: the LazyConfig twin of
``configs/COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_101_FPN_syncBN_1x.yaml``."""

from ..common.data.coco import dataloader
from ..common.models.cascade_mask_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

model.backbone.bottom_up.update(depth=101, stem_width=64)
train.init_checkpoint = "resnest://resnest101"
