"""Mask R-CNN, ResNeSt-50, the paper's COCO recipe: the LazyConfig twin of
``configs/COCO-InstanceSegmentation/mask_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml``."""

from ..common.data.coco import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

train.init_checkpoint = "resnest://resnest50"
