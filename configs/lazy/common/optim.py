"""Optimizers: detectron2's SGD (momentum 0.9, weight decay 1e-4, none on norms, lr 0.02 for
batch 16) for the R-CNN recipes, and the DeepLabV3 recipe's SGD (lr 0.004, weight decay 1e-4 on
every parameter, the head at 10x the learning rate)."""

from detectron2.model_zoo import get_config

from resnest_dense.engine.semseg import head_lr_factor
from detectron2.config import LazyCall as L

SGD = get_config("common/optim.py").SGD

SemSegSGD = get_config("common/optim.py").SGD
SemSegSGD.update(lr=0.004, weight_decay=1e-4)
SemSegSGD.params.update(
    base_lr="${..lr}", weight_decay_norm=1e-4, lr_factor_func=L(head_lr_factor)(multiplier=10.0)
)
