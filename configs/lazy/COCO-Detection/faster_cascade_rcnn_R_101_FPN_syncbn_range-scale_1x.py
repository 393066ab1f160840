"""Cascade R-CNN, ResNet-101 baseline (detectron2's ResNet, stride in the 3x3 conv), the paper's
COCO recipe: the LazyConfig twin of ``configs/COCO-Detection/faster_cascade_rcnn_R_101_FPN_syncbn_range-scale_1x.yaml``.
"""

from ..common.data.coco import dataloader
from ..common.models.cascade_rcnn_fpn import model
from ..common.models.resnet_fpn import backbone
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

model.backbone = backbone
model.backbone.bottom_up.stages.depth = 101
# ImageNet weights: none registered for detectron2's ResNet layout; see docs/detection.md.
train.init_checkpoint = ""
dataloader.train.mapper.use_instance_mask = False
