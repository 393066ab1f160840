"""The DeepLabV3 recipe on Cityscapes (mmsegmentation's ``deeplabv3_r50-d8_769x769_80k_cityscapes
.py`` schedule and data around the paper's Encoding head): the twin of
``Cityscapes-SemanticSegmentation/Base-DeepLabV3-OS8.yaml``.

* ``model``: :mod:`.models.deeplabv3` with 19 classes; test at a long side of 2049 with 769 x 769
  sliding windows at a step of int(769 x 0.6672) = 513, ``align_corners`` True;
* ``dataloader``: :mod:`.data.cityscapes` (batch 8, 769 crops from a (2049, 1025) random resize);
* ``optimizer``: SGD lr 0.01, weight decay 5e-4 on every parameter, no head multiplier;
  ``lr_multiplier``: poly, power 0.9; ``train``: 80k iterations, a checkpoint every 8k, no
  PreciseBN.

Leaves set the backbone and ``train.init_checkpoint``.
"""

from .data.cityscapes import dataloader
from .models.deeplabv3 import model
from .optim import MMSegSGD as optimizer
from .schedule import poly as lr_multiplier
from .train import train

model.sem_seg_head.num_classes = 19
model.update(base_size=2049, crop_size=769, stride_rate=0.6672)
train.update(max_iter=80000, precise_bn=dict(enabled=False, num_iter=200))
train.checkpointer.period = 8000
