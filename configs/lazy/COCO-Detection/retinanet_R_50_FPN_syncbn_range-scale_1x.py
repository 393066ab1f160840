"""RetinaNet, ResNet-50 baseline (detectron2's ResNet, stride in the 3x3 conv, P6 / P7 on C5),
detectron2's RetinaNet 1x recipe with this project's input settings: the LazyConfig twin of
``configs/COCO-Detection/retinanet_R_50_FPN_syncbn_range-scale_1x.yaml``.
"""

from ..common.data.coco import dataloader
from ..common.models.retinanet_fpn import model, resnet_backbone
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

model.backbone = resnet_backbone
optimizer.lr = 0.01
# ImageNet weights: none registered for detectron2's ResNet layout; see docs/detection.md.
train.init_checkpoint = ""
dataloader.train.mapper.use_instance_mask = False
