#!/usr/bin/env python
"""Write the stuff targets Panoptic FPN trains on from COCO panoptic annotations.

detectron2's ``coco_2017_{train,val}_panoptic_separated`` read the stuff head's label PNGs from
``coco/panoptic_stuff_{train,val}2017/``: 0 for thing pixels, 1..53 for the stuff categories in
increasing category id, 255 for VOID. This script writes them from
``coco/annotations/panoptic_{train,val}2017.json`` and ``coco/panoptic_{train,val}2017/`` (the
panoptic PNGs, unzipped from the annotation download); existing files are skipped, every file
is written atomically, and a PNG / JSON mismatch stops the script naming the file.

Usage:
    python datasets/prepare_panoptic_fpn.py                     # $DETECTRON2_DATASETS/coco
    python datasets/prepare_panoptic_fpn.py --root /data/coco --workers 8
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

from resnest_dense.data.coco_panoptic import convert_panoptic_split

logger = logging.getLogger("prepare_panoptic_fpn")


def main(argv: Optional[List[str]] = None) -> int:
    default_root = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "coco"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_root, help="the coco folder")
    parser.add_argument("--splits", nargs="+", default=["train2017", "val2017"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing stuff PNGs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for split in args.splits:
        panoptic_json = os.path.join(args.root, "annotations", f"panoptic_{split}.json")
        panoptic_root = os.path.join(args.root, f"panoptic_{split}")
        missing = [p for p in (panoptic_json, panoptic_root) if not os.path.exists(p)]
        if missing:
            logger.error(
                "Missing %s: download and unzip COCO's panoptic annotations first "
                "(datasets/README.md)",
                " and ".join(missing),
            )
            return 1
        out_dir = os.path.join(args.root, f"panoptic_stuff_{split}")
        try:
            n = convert_panoptic_split(
                panoptic_json, panoptic_root, out_dir, args.workers, args.overwrite
            )
        except ValueError as e:
            logger.error("%s", e)
            return 1
        logger.info("%s: wrote %d stuff label maps to %s", split, n, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
