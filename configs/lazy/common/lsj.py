"""detectron2's new-baseline recipe (``configs/new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py``)
for this project's R-CNN models: large-scale jitter (resize to a 0.1-2.0 scale of 1024x1024,
crop / pad to 1024x1024, flip; boxes recomputed after the crop), batch 64, SGD lr 0.1 with weight
decay 4e-5, x0.1 at 89% and 96% of training after a 500-iteration warm-up, mixed precision
with fp16 gradient compression.

The model keeps the paper recipe's RGB input and ImageNet initialisation (detectron2 trains its
ResNets from scratch); :func:`lsj_model` adds the recipe's model changes: nothing frozen, two
convs in the RPN head (SyncBN is already in backbone and FPN, ``naiveSyncBN_N`` in the heads).
``epochs`` counts passes over the 118k COCO train images (100 epochs = 184375 iterations).
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from .data.coco import dataloader
from .optim import SGD as optimizer
from .train import train

IMAGE_SIZE = 1024
ITERS_PER_100_EPOCHS = 184375  # 100 epochs x 118000 images / 64 per iteration

dataloader.train.mapper.augmentations = [
    L(T.ResizeScale)(
        min_scale=0.1, max_scale=2.0, target_height=IMAGE_SIZE, target_width=IMAGE_SIZE
    ),
    L(T.FixedSizeCrop)(crop_size=(IMAGE_SIZE, IMAGE_SIZE)),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.recompute_boxes = True
dataloader.train.total_batch_size = 64

optimizer.lr = 0.1
optimizer.weight_decay = 4e-5

train.amp.enabled = True
train.ddp.fp16_compression = True
# detectron2's common/train.py evaluates every 5000 iterations; no PreciseBN in this recipe.
train.update(eval_period=5000, precise_bn=dict(enabled=False, num_iter=200))


def lsj_model(model):
    """The recipe's model changes, in place: train the whole backbone, 2-conv RPN head."""
    model.backbone.bottom_up.freeze_at = 0
    model.proposal_generator.head.conv_dims = [-1, -1]
    return model


def lsj_schedule(train, epochs: int):
    """Set ``train.max_iter`` for ``epochs`` and return the LR multiplier (milestones scaled
    with the length, as detectron2's 200ep / 400ep files do)."""
    train.max_iter = ITERS_PER_100_EPOCHS * epochs // 100
    scale = epochs / 100
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[1.0, 0.1, 0.01],
            milestones=[round(163889 * scale), round(177546 * scale)],
            num_updates=train.max_iter,
        ),
        warmup_length=500 / train.max_iter,
        warmup_factor=0.067,
    )
