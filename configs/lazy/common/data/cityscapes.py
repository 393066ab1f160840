"""Cityscapes loaders of the DeepLabV3 recipe (``Cityscapes-SemanticSegmentation/
Base-DeepLabV3-OS8.yaml``, mmsegmentation's ``cityscapes_769x769.py``): detectron2's builtin
``cityscapes_fine_sem_seg_{train,val}`` (19 train ids), batch 8, random resize of (2049, 1025)
x U(0.5, 2.0), 769 x 769 crops, flip, no blur; test images unresized (the model scales them to a
2049 long side and tiles 769 windows itself). The DeepLabV3+ leaves replace the augmentations
with :func:`.mmseg.resize_crop_flip` / :func:`.mmseg.resize_test` of their recipe."""

from .ade20k import dataloader
from .mmseg import resize_crop_flip

dataloader.train.dataset.names = "cityscapes_fine_sem_seg_train"
dataloader.train.mapper.augmentations = resize_crop_flip(
    long=2049, short=1025, crop_size=(769, 769)
)
dataloader.train.total_batch_size = 8
dataloader.test.dataset.names = "cityscapes_fine_sem_seg_val"
