"""DeepLabV3+ OS8, ResNeSt-101, mmsegmentation's ADE20K recipe (160k iterations, 512 crops): the
LazyConfig twin of ``configs/ADE20K-SemanticSegmentation/deeplabv3plus_S_101_OS8_syncbn_160k.yaml``.
"""

from ..common.ade20k_deeplabv3plus import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(depth=101, stem_width=64)
train.init_checkpoint = "resnest://resnest101"
