"""DeepLabV3 OS8, ResNeSt-101, PyTorch-Encoding's PASCAL Context recipe (59 classes, 80 epochs;
Encoding's ``deeplab_resnest101_pcontext``): the LazyConfig twin of
``configs/PascalContext-SemanticSegmentation/deeplabv3_S_101_OS8_syncbn_80ep.yaml``."""

from ..common.pascal_context_deeplabv3 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(depth=101, stem_width=64)
train.init_checkpoint = "resnest://resnest101"
