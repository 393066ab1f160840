"""DeepLabV3 OS8, ResNeSt-269, the PyTorch-Encoding ADE20K recipe (120 epochs): the LazyConfig
twin of ``configs/ADE20K-SemanticSegmentation/deeplabv3_S_269_OS8_syncbn_120ep.yaml``."""

from ..common.data.ade20k import dataloader
from ..common.models.deeplabv3 import model
from ..common.optim import SemSegSGD as optimizer
from ..common.schedule import poly as lr_multiplier
from ..common.train import train

model.backbone.update(depth=269, stem_width=64)
train.init_checkpoint = "resnest://resnest269"
# 120 epochs x floor(20210 / 16) iterations (the reference drops the last partial batch).
train.update(max_iter=151560, precise_bn=dict(enabled=False, num_iter=200))
train.checkpointer.period = 12630
