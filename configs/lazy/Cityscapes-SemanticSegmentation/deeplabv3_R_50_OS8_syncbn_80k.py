"""DeepLabV3 OS8, ResNet-50 (PyTorch-Encoding ``resnet50s``), Cityscapes 769 x 769, 80k iterations:
the LazyConfig twin of
``configs/Cityscapes-SemanticSegmentation/deeplabv3_R_50_OS8_syncbn_80k.yaml``."""

from ..common.cityscapes_deeplabv3 import dataloader, lr_multiplier, model, optimizer, train
from ..common.models.resnet_dilated import backbone

backbone.update(out_features=model.backbone.out_features)
backbone.stages.depth = 50
model.backbone = backbone
train.init_checkpoint = "resnest://resnet50s"
