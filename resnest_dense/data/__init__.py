"""Dataset registration: importing this package registers the datasets of our configs.

* ``toy_coco_{train,val}``: generated COCO-format shapes with masks (:mod:`.toy_coco`), written
  under ``$DETECTRON2_DATASETS/toy_coco`` on first use;
* ``toy_sem_seg_{train,val}``: generated semantic-segmentation shapes (:mod:`.toy_sem_seg`);
* ``toy_panoptic_{train,val}``: generated COCO-panoptic scenes, shapes on sky / ground
  (:mod:`.toy_panoptic`);
* ``ade20k_sem_seg_{train,val}``: detectron2's ADE20K names, if detectron2 has not registered
  them (:mod:`.ade20k`);
* ``pascal_context_59_{train,val}``: PASCAL Context, 59 classes (:mod:`.pascal_context`).

detectron2's builtin COCO names (``coco_2017_train`` ...) come from detectron2 itself. Any other
COCO-format json + image folder: ``DATASETS.COCO_FORMAT`` (:mod:`.coco_format`,
``docs/detection.md``).
Registration touches no file.
"""

from detectron2.data import DatasetCatalog

from .ade20k import register_ade20k_sem_seg
from .coco_format import register_coco_format_datasets
from .pascal_context import register_pascal_context
from .toy_coco import register_toy_coco
from .toy_panoptic import register_toy_panoptic
from .toy_sem_seg import register_toy_sem_seg

__all__ = [
    "register_ade20k_sem_seg",
    "register_coco_format_datasets",
    "register_pascal_context",
    "register_toy_coco",
    "register_toy_panoptic",
    "register_toy_sem_seg",
]

# Importing twice (or after a tool registered the same names) must not re-register.
if "toy_coco_train" not in DatasetCatalog.list():
    register_toy_coco()
if "toy_sem_seg_train" not in DatasetCatalog.list():
    register_toy_sem_seg()
if "toy_panoptic_train" not in DatasetCatalog.list():
    register_toy_panoptic()
register_ade20k_sem_seg()
register_pascal_context()
