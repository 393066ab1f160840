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
import json
import logging
import os
import sys
from multiprocessing import Pool
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from resnest_dense.data.coco_panoptic import stuff_id_map, stuff_label
from resnest_dense.data.panoptic_ids import rgb_to_id
from resnest_dense.data.registration import datasets_root
from resnest_dense.utils.io import atomic_write

logger = logging.getLogger("prepare_panoptic_fpn")


def _convert_one(job: Tuple[str, str, List[Dict], Dict[int, int]]) -> str:
    src, dst, segments_info, id_map = job
    with Image.open(src) as im:
        ids = rgb_to_id(np.asarray(im.convert("RGB")))
    label = stuff_label(ids, segments_info, id_map, where=src)
    atomic_write(dst, lambda f: Image.fromarray(label).save(f, format="PNG"))
    return dst


def convert_panoptic_split(
    panoptic_json: str,
    panoptic_root: str,
    out_dir: str,
    workers: int = 1,
    overwrite: bool = False,
) -> int:
    """Write the stuff PNG of every image of ``panoptic_json`` into ``out_dir``.

    Each file is written atomically (an interrupted run leaves no truncated PNG); existing files
    are skipped unless ``overwrite``.

    Returns:
        The number of files written.
    """
    if os.path.abspath(out_dir) == os.path.abspath(panoptic_root):
        raise ValueError("the output folder must differ from the panoptic PNG folder")
    with open(panoptic_json) as f:
        data = json.load(f)
    id_map = stuff_id_map(data["categories"])
    os.makedirs(out_dir, exist_ok=True)
    jobs = []
    for ann in data["annotations"]:
        dst = os.path.join(out_dir, ann["file_name"])
        if overwrite or not os.path.exists(dst):
            src = os.path.join(panoptic_root, ann["file_name"])
            jobs.append((src, dst, ann["segments_info"], id_map))
    if workers > 1 and len(jobs) > 1:
        with Pool(workers) as pool:
            for i, _ in enumerate(pool.imap_unordered(_convert_one, jobs, chunksize=64)):
                if (i + 1) % 5000 == 0:
                    logger.info("%s: %d / %d", out_dir, i + 1, len(jobs))
    else:
        for job in jobs:
            _convert_one(job)
    return len(jobs)


def main(argv: Optional[List[str]] = None) -> int:
    default_root = os.path.join(datasets_root(), "coco")
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
