"""PASCAL Context loaders of PyTorch-Encoding's recipe (``PascalContext-SemanticSegmentation/
Base-DeepLabV3-OS8.yaml``): the 59-class ``pascal_context_59_{train,val}`` sets (written by
``datasets/prepare_pascal_context.py``) with the ADE20K augmentation of :mod:`.ade20k` (long side
of 520 x U(0.5, 2.0), 480 crops, flip, blur) and batch 16."""

from .ade20k import dataloader

dataloader.train.dataset.names = "pascal_context_59_train"
dataloader.test.dataset.names = "pascal_context_59_val"
