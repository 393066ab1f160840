"""Cascade Mask R-CNN, ResNeSt-50-FPN, detectron2's new-baseline recipe (large-scale jitter, SyncBN,
batch 64, 400 epochs) from the ImageNet ResNeSt-50 weights; see ``../common/lsj.py``."""

from ..common.lsj import dataloader, lsj_model, lsj_schedule, optimizer, train
from ..common.models.cascade_mask_rcnn_fpn import model

lsj_model(model)
train.init_checkpoint = "resnest://resnest50"
lr_multiplier = lsj_schedule(train, epochs=400)
