"""Mask R-CNN, ResNet-50 baseline (detectron2's ResNet, stride in the 3x3 conv), the paper's
COCO recipe: the LazyConfig twin of ``configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_syncbn_1x.yaml``.
"""

from ..common.data.coco import dataloader
from ..common.models.mask_rcnn_fpn import model
from ..common.models.resnet_fpn import backbone
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

model.backbone = backbone
# ImageNet weights: none registered for detectron2's ResNet layout; see docs/detection.md.
train.init_checkpoint = ""
