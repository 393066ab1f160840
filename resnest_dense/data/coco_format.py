"""COCO-format datasets named in the config (``DATASETS.COCO_FORMAT``): any json + image folder,
registered with detectron2's COCO loader so its names can be used in ``DATASETS.TRAIN / TEST``."""

import logging
import os
from typing import List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = ["register_coco_format_datasets"]

logger = logging.getLogger(__name__)


def register_coco_format_datasets(entries) -> List[str]:
    """Register ``[name, json_file, image_root]`` triples with detectron2's COCO loader.

    A name registered before with the same files is left alone, so calling this twice (for
    example in each worker of a multi-GPU launch) is harmless.

    Args:
        entries: iterable of 3-element sequences (``DATASETS.COCO_FORMAT``).

    Returns:
        The registered names.

    Raises:
        ValueError: an entry is not a triple, or the name is taken by another dataset.
        FileNotFoundError: the json file or the image folder does not exist.
    """
    names = []
    for entry in entries:
        if len(entry) != 3:
            raise ValueError(
                f"DATASETS.COCO_FORMAT entries are [name, json_file, image_root]; got {entry!r}"
            )
        name, json_file, image_root = (str(v) for v in entry)
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"DATASETS.COCO_FORMAT: annotation file {json_file!r} of dataset {name!r} "
                "does not exist"
            )
        if not os.path.isdir(image_root):
            raise FileNotFoundError(
                f"DATASETS.COCO_FORMAT: image folder {image_root!r} of dataset {name!r} "
                "does not exist"
            )
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
                names.append(name)
                continue
            raise ValueError(
                f"DATASETS.COCO_FORMAT: dataset name {name!r} is already registered with other "
                "files; choose another name"
            )
        register_coco_instances(name, {}, json_file, image_root)
        logger.info("Registered COCO-format dataset %s: %s, %s", name, json_file, image_root)
        names.append(name)
    return names
