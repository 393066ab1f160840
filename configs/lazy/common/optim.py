"""Optimizers: detectron2's SGD (momentum 0.9, weight decay 1e-4, none on norms, lr 0.02 for
batch 16) for the R-CNN recipes, the DeepLabV3 recipe's SGD (lr 0.004, weight decay 1e-4 on
every parameter, the head at 10x the learning rate; PASCAL Context sets lr 0.001), and
mmsegmentation's SGD of the Cityscapes and DeepLabV3+ recipes (lr 0.01, weight decay 5e-4 on every
parameter, no head multiplier: ``SOLVER.HEAD_LR_MULTIPLIER 1.0``)."""

from detectron2.model_zoo import get_config

from resnest_dense.engine.semseg import head_lr_factor
from detectron2.config import LazyCall as L

SGD = get_config("common/optim.py").SGD

SemSegSGD = get_config("common/optim.py").SGD
SemSegSGD.update(lr=0.004, weight_decay=1e-4)
SemSegSGD.params.update(
    base_lr="${..lr}", weight_decay_norm=1e-4, lr_factor_func=L(head_lr_factor)(multiplier=10.0)
)

MMSegSGD = get_config("common/optim.py").SGD
MMSegSGD.update(lr=0.01, weight_decay=5e-4)
MMSegSGD.params.update(
    base_lr="${..lr}", weight_decay_norm=5e-4, lr_factor_func=L(head_lr_factor)(multiplier=1.0)
)
