"""Config keys of the training / evaluation tools and COCO-format dataset registration."""

import logging
import os
from typing import List

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = ["add_resnest_engine_config", "register_coco_format_datasets"]

logger = logging.getLogger(__name__)


def add_resnest_engine_config(cfg: CfgNode) -> CfgNode:
    """Add the tool keys (in place) and return ``cfg``; values already set are kept."""
    # Fold eval-mode batch norms into convs and use channels_last for --eval-only and the demo
    # (exact; resnest_dense.utils.optimize_for_inference). False runs the model as trained.
    if "FAST_INFERENCE" not in cfg.TEST:
        cfg.TEST.FAST_INFERENCE = True
    # COCO-format datasets to register before training, as [name, json_file, image_root]
    # triples, e.g. [["shapes_train", "data/train.json", "data/train"]]; the names can then be
    # used in DATASETS.TRAIN / DATASETS.TEST and are evaluated with COCO AP.
    # Autocast dtype of SOLVER.AMP.ENABLED training: "bfloat16", "float16", or "" for bfloat16
    # on the CPU and float16 on CUDA (resnest_dense.engine.amp).
    if "PRECISION" not in cfg.SOLVER.AMP:
        cfg.SOLVER.AMP.PRECISION = ""
    if "COCO_FORMAT" not in cfg.DATASETS:
        cfg.DATASETS.COCO_FORMAT = []
    return cfg


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
