"""mmsegmentation's DeepLabV3+ recipe on Cityscapes (``configs/resnest/deeplabv3plus_s101-d8_
512x1024_80k_cityscapes.py``): the twin of ``Cityscapes-SemanticSegmentation/
Base-DeepLabV3Plus-OS8.yaml``.

* ``model``: :mod:`.models.deeplabv3plus` with 19 classes (whole-image test);
* ``dataloader``: :mod:`.data.cityscapes` with a (2048, 1024) x U(0.5, 2.0) random resize and
  512 x 1024 crops (height x width), flip; test images at a short side of 1024 (long side at
  most 2048: the full 2048 x 1024 frame);
* the solver of :mod:`.ade20k_deeplabv3plus` (SGD lr 0.01, weight decay 5e-4, poly) for 80k
  iterations, a checkpoint every 8k, batch 8.

Leaves set the backbone and ``train.init_checkpoint``.
"""

from .data.cityscapes import dataloader
from .data.mmseg import resize_crop_flip, resize_test
from .models.deeplabv3plus import model
from .optim import MMSegSGD as optimizer
from .schedule import poly as lr_multiplier
from .train import train

model.sem_seg_head.num_classes = 19
dataloader.train.mapper.augmentations = resize_crop_flip(
    long=2048, short=1024, crop_size=(512, 1024)
)
dataloader.test.mapper.augmentations = resize_test(short=1024, long=2048)
train.update(max_iter=80000, precise_bn=dict(enabled=False, num_iter=200))
train.checkpointer.period = 8000
