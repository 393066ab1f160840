"""PyTorch-Encoding's DeepLabV3 recipe on PASCAL Context (``train.py --dataset pcontext --model
deeplab --aux``): the twin of ``PascalContext-SemanticSegmentation/Base-DeepLabV3-OS8.yaml``.

The ADE20K recipe (:mod:`.models.deeplabv3`, OS8, SyncBN, 480 crops from a 520 base size, aux
loss 0.2, head at 10x, poly, single-scale test with 480 windows) with 59 classes
(:mod:`.data.pascal_context`), lr 0.001 and 80 epochs of the 4998 training images
(80 x floor(4998 / 16) = 24960 iterations, a checkpoint every 3120), no PreciseBN.

Leaves set the backbone and ``train.init_checkpoint``.
"""

from .data.pascal_context import dataloader
from .models.deeplabv3 import model
from .optim import SemSegSGD as optimizer
from .schedule import poly as lr_multiplier
from .train import train

model.sem_seg_head.num_classes = 59
optimizer.lr = 0.001
train.update(max_iter=24960, precise_bn=dict(enabled=False, num_iter=200))
train.checkpointer.period = 3120
