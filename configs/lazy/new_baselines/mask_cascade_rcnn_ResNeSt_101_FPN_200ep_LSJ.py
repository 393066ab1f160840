"""Cascade Mask R-CNN, ResNeSt-101-FPN, detectron2's new-baseline recipe (large-scale jitter, SyncBN,
batch 64, 200 epochs) from the ImageNet ResNeSt-101 weights; see ``../common/lsj.py``."""

from ..common.lsj import dataloader, lsj_model, lsj_schedule, optimizer, train
from ..common.models.cascade_mask_rcnn_fpn import model

lsj_model(model)
model.backbone.bottom_up.update(depth=101, stem_width=64)
train.init_checkpoint = "resnest://resnest101"
lr_multiplier = lsj_schedule(train, epochs=200)
