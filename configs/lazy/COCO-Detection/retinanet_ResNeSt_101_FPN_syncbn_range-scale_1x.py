"""RetinaNet, ResNeSt-101, detectron2's RetinaNet 1x recipe with this project's input settings
(lr 0.01 for batch 16): the LazyConfig twin of
``configs/COCO-Detection/retinanet_ResNeSt_101_FPN_syncbn_range-scale_1x.yaml``.
No paper numbers, no released ResNeSt RetinaNet weights: ImageNet backbone only."""

from ..common.data.coco import dataloader
from ..common.models.retinanet_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

model.backbone.bottom_up.update(depth=101, stem_width=64)
optimizer.lr = 0.01
train.init_checkpoint = "resnest://resnest101"
dataloader.train.mapper.use_instance_mask = False
