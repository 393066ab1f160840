"""DeepLabV3+ OS8, ResNeSt-101, mmsegmentation's Cityscapes recipe (512 x 1024 crops, 80k
iterations): the LazyConfig twin of
``configs/Cityscapes-SemanticSegmentation/deeplabv3plus_S_101_OS8_syncbn_80k.yaml``."""

from ..common.cityscapes_deeplabv3plus import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(depth=101, stem_width=64)
train.init_checkpoint = "resnest://resnest101"
