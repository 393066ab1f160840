"""Faster R-CNN, ResNeSt-200, the paper's COCO recipe: the LazyConfig twin of
``configs/COCO-Detection/faster_rcnn_ResNeSt_200_FPN_syncbn_range-scale_1x.yaml``."""

from ..common.data.coco import dataloader
from ..common.models.faster_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

model.backbone.bottom_up.update(depth=200, stem_width=64)
train.init_checkpoint = "resnest://resnest200"
dataloader.train.mapper.use_instance_mask = False
