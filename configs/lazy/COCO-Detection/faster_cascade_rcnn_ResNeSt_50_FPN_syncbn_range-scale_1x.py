"""Cascade R-CNN, ResNeSt-50, the paper's COCO recipe: the LazyConfig twin of
``configs/COCO-Detection/faster_cascade_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml``."""

from ..common.data.coco import dataloader
from ..common.models.cascade_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

train.init_checkpoint = "resnest://resnest50"
dataloader.train.mapper.use_instance_mask = False
