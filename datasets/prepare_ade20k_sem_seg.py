#!/usr/bin/env python
"""Convert ADE20K (ADEChallengeData2016) labels to detectron2's semantic-segmentation format.

ADE20K label PNGs store 0 for "other / unlabelled" and 1..150 for the classes. detectron2 (and
``ade20k_sem_seg_{train,val}``) expects 0..149 for the classes and 255 for ignored pixels, in
``ADEChallengeData2016/annotations_detectron2/{training,validation}``. This script writes that
folder and never modifies ``annotations/``.

Usage:
    python datasets/prepare_ade20k_sem_seg.py                 # $DETECTRON2_DATASETS or ./datasets
    python datasets/prepare_ade20k_sem_seg.py --root /data/ADEChallengeData2016
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

import numpy as np
from PIL import Image

logger = logging.getLogger("prepare_ade20k_sem_seg")

IGNORE_LABEL = 255
NUM_CLASSES = 150


def convert_ade20k_label(label: np.ndarray) -> np.ndarray:
    """Map ADE20K ids (0 = ignore, 1..150) to detectron2 ids (255 = ignore, 0..149).

    Args:
        label: (H, W) integer array read from an ADE20K annotation PNG.

    Returns:
        (H, W) uint8 array.
    """
    if label.ndim != 2:
        raise ValueError(f"expected a single-channel label map, got shape {label.shape}")
    if label.size and int(label.max()) > NUM_CLASSES:
        raise ValueError(f"ADE20K labels are 0..{NUM_CLASSES}, found {int(label.max())}")
    out = label.astype(np.int64) - 1
    out[label == 0] = IGNORE_LABEL
    return out.astype(np.uint8)


def convert_split(in_dir: str, out_dir: str, overwrite: bool = False) -> int:
    """Convert every ``*.png`` of ``in_dir`` into ``out_dir``; returns the number written."""
    if os.path.abspath(in_dir) == os.path.abspath(out_dir):
        raise ValueError("the output folder must differ from the input folder")
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(f for f in os.listdir(in_dir) if f.endswith(".png"))
    written = 0
    for i, name in enumerate(names):
        dst = os.path.join(out_dir, name)
        if os.path.exists(dst) and not overwrite:
            continue
        label = np.asarray(Image.open(os.path.join(in_dir, name)))
        # Write to a temporary name first so an interrupted run leaves no truncated PNG.
        tmp = f"{dst}.tmp-{os.getpid()}.png"
        Image.fromarray(convert_ade20k_label(label)).save(tmp)
        os.replace(tmp, dst)
        written += 1
        if (i + 1) % 2000 == 0:
            logger.info("%s: %d / %d", in_dir, i + 1, len(names))
    return written


def main(argv: Optional[List[str]] = None) -> int:
    default_root = os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "ADEChallengeData2016"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_root, help="the ADEChallengeData2016 folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="rewrite files already in annotations_detectron2"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for split in ("training", "validation"):
        in_dir = os.path.join(args.root, "annotations", split)
        if not os.path.isdir(in_dir):
            logger.error(
                "Missing %s: download ADEChallengeData2016 first (see datasets/README.md)", in_dir
            )
            return 1
        out_dir = os.path.join(args.root, "annotations_detectron2", split)
        n = convert_split(in_dir, out_dir, overwrite=args.overwrite)
        logger.info("%s: wrote %d label maps to %s", split, n, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
