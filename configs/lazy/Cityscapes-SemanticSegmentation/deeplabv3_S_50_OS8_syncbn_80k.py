"""DeepLabV3 OS8, ResNeSt-50, Cityscapes 769 x 769, 80k iterations: the LazyConfig twin of
``configs/Cityscapes-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_80k.yaml``."""

from ..common.cityscapes_deeplabv3 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(depth=50, stem_width=32)
train.init_checkpoint = "resnest://resnest50"
