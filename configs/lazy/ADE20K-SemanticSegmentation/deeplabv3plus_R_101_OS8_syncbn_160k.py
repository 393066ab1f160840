"""DeepLabV3+ OS8, ResNet-101 (PyTorch-Encoding ``resnet101s``), mmsegmentation's ADE20K recipe
(160k iterations, 512 crops): the LazyConfig twin of
``configs/ADE20K-SemanticSegmentation/deeplabv3plus_R_101_OS8_syncbn_160k.yaml``."""

from ..common.ade20k_deeplabv3plus import dataloader, lr_multiplier, model, optimizer, train
from ..common.models.resnet_dilated import backbone

backbone.update(out_features=model.backbone.out_features)  # the decoder's res2 too
backbone.stages.depth = 101
model.backbone = backbone
train.init_checkpoint = "resnest://resnet101s"
