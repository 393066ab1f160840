"""mmsegmentation's DeepLabV3+ recipe on ADE20K (``configs/resnest/deeplabv3plus_s101-d8_512x512_
160k_ade20k.py``): the twin of ``ADE20K-SemanticSegmentation/Base-DeepLabV3Plus-OS8.yaml``.

* ``model``: :mod:`.models.deeplabv3plus` (150 classes, whole-image test);
* ``dataloader``: ADE20K, batch 16, random resize of (2048, 512) x U(0.5, 2.0), 512 x 512 crops,
  flip, no blur; test images resized to a short side of 512 (long side at most 2048);
* ``optimizer``: SGD lr 0.01, momentum 0.9, weight decay 5e-4 on every parameter, no head
  multiplier; ``lr_multiplier``: poly, power 0.9; ``train``: 160k iterations, a checkpoint every
  16k, no PreciseBN.

Leaves set the backbone and ``train.init_checkpoint``.
"""

from .data.ade20k import dataloader
from .data.mmseg import resize_crop_flip, resize_test
from .models.deeplabv3plus import model
from .optim import MMSegSGD as optimizer
from .schedule import poly as lr_multiplier
from .train import train

dataloader.train.mapper.augmentations = resize_crop_flip(long=2048, short=512, crop_size=(512, 512))
dataloader.test.mapper.augmentations = resize_test(short=512, long=2048)
train.update(max_iter=160000, precise_bn=dict(enabled=False, num_iter=200))
train.checkpointer.period = 16000
