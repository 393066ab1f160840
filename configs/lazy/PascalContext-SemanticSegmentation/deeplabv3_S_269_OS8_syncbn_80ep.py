"""DeepLabV3 OS8, ResNeSt-269, PyTorch-Encoding's PASCAL Context recipe (59 classes, 80 epochs;
Encoding's ``deeplab_resnest269_pcontext``): the LazyConfig twin of
``configs/PascalContext-SemanticSegmentation/deeplabv3_S_269_OS8_syncbn_80ep.yaml``."""

from ..common.pascal_context_deeplabv3 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update(depth=269, stem_width=64)
train.init_checkpoint = "resnest://resnest269"
