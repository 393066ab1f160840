"""FCN OS8, ResNeSt-50, the PyTorch-Encoding ADE20K recipe (120 epochs, Encoding's
``fcn_resnest50_ade``): the LazyConfig twin of
``configs/ADE20K-SemanticSegmentation/fcn_S_50_OS8_syncbn_120ep.yaml``."""

from ..common.data.ade20k import dataloader
from ..common.models.fcn import model
from ..common.optim import SemSegSGD as optimizer
from ..common.schedule import poly as lr_multiplier
from ..common.train import train

train.init_checkpoint = "resnest://resnest50"
# 120 epochs x floor(20210 / 16) iterations (the reference drops the last partial batch).
train.update(max_iter=151560, precise_bn=dict(enabled=False, num_iter=200))
train.checkpointer.period = 12630
