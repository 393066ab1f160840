"""DeepLabV3 OS8, ResNet-101 (PyTorch-Encoding ``resnet101s``), the PyTorch-Encoding ADE20K recipe (120 epochs): the LazyConfig
twin of ``configs/ADE20K-SemanticSegmentation/deeplabv3_R_101_OS8_syncbn_120ep.yaml``."""

from ..common.data.ade20k import dataloader
from ..common.models.deeplabv3 import model
from ..common.models.resnet_dilated import backbone
from ..common.optim import SemSegSGD as optimizer
from ..common.schedule import poly as lr_multiplier
from ..common.train import train

model.backbone = backbone
model.backbone.stages.depth = 101
train.init_checkpoint = "resnest://resnet101s"
# 120 epochs x floor(20210 / 16) iterations (the reference drops the last partial batch).
train.update(max_iter=151560, precise_bn=dict(enabled=False, num_iter=200))
train.checkpointer.period = 12630
