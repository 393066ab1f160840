"""COCO-format datasets named in the config (``DATASETS.COCO_FORMAT``): any json + image folder,
registered with detectron2's COCO loader so its names can be used in ``DATASETS.TRAIN / TEST``."""

import logging
import os
from typing import List

from detectron2.data.datasets import register_coco_instances

from ..errors import MissingFileError, StartupError
from .registration import already_registered

__all__ = ["register_coco_format_datasets"]

logger = logging.getLogger(__name__)


def register_coco_format_datasets(entries, missing_ok: bool = False) -> List[str]:
    """Register ``[name, json_file, image_root]`` triples with detectron2's COCO loader.

    A name registered before with the same files is left alone, so calling this twice (for
    example in each worker of a multi-GPU launch) is harmless.

    Args:
        entries: iterable of 3-element sequences (``DATASETS.COCO_FORMAT``).
        missing_ok: skip (with a warning) entries whose files are missing instead of raising:
            for tools that need no data (the demos take class names from the checkpoint).

    Returns:
        The registered names.

    Raises:
        StartupError: an entry is not a triple, or the name is taken by another dataset.
        MissingFileError: the json file or the image folder does not exist.
    """
    names = []
    for entry in entries:
        if len(entry) != 3:
            raise StartupError(
                f"DATASETS.COCO_FORMAT entries are [name, json_file, image_root]; got {entry!r}"
            )
        name, json_file, image_root = (str(v) for v in entry)
        missing = [
            f"{what} {path!r}"
            for what, path, exists in (
                ("annotation file", json_file, os.path.isfile(json_file)),
                ("image folder", image_root, os.path.isdir(image_root)),
            )
            if not exists
        ]
        if missing:
            message = (
                f"DATASETS.COCO_FORMAT: {' and '.join(missing)} of dataset {name!r} "
                "do(es) not exist"
            )
            if missing_ok:
                logger.warning("%s; not registered.", message)
                continue
            raise MissingFileError(message)
        files = {"json_file": json_file, "image_root": image_root}
        if already_registered("DATASETS.COCO_FORMAT", name, files):
            names.append(name)
            continue
        register_coco_instances(name, {}, json_file, image_root)
        logger.info("Registered COCO-format dataset %s: %s, %s", name, json_file, image_root)
        names.append(name)
    return names
