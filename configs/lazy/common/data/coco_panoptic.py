"""COCO panoptic loaders of Panoptic FPN (``Base-Panoptic-FPN-ResNeSt.yaml``): the loaders of
:mod:`.coco` on detectron2's ``coco_2017_{train,val}_panoptic_separated`` (instances plus the
stuff PNGs of ``datasets/prepare_panoptic_fpn.py``), images without objects kept
(``DATALOADER.FILTER_EMPTY_ANNOTATIONS False``: their stuff labels still train the stuff head)."""

from .coco import dataloader

dataloader.train.dataset.update(names="coco_2017_train_panoptic_separated", filter_empty=False)
dataloader.test.dataset.names = "coco_2017_val_panoptic_separated"
