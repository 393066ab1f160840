#!/usr/bin/env python
"""Write PASCAL Context (59 classes) label PNGs and split files from ``trainval_merged.json``.

Follows the 59-class protocol of PyTorch-Encoding (``encoding/datasets/pcontext.py``) and
mmsegmentation (``tools/dataset_converters/pascal_context.py`` + ``PascalContextDataset59``):
the class map of an image is drawn from its segmentation annotations (each annotation's pixels
set to its category id, later annotations over earlier ones, 0 where none), then the 59 kept
categories become 0..58 in ascending id order and everything else (0 = unlabelled, any other
category) becomes 255 = ignore. Both references assert that a class map holds only 0 and the 59
ids; here another id is mapped to 255 and reported in the log instead of stopping the run. Those two tools call the Detail API (``detail.Detail.getMask``);
the ``detail`` package on PyPI is an unrelated project, so this script reads the json itself.

Fields of ``trainval_merged.json`` used (the rest is ignored):

* ``images[]``: ``image_id``, ``file_name`` (``2008_000002.jpg``), ``height``, ``width``,
  ``phase`` (``"train"`` / ``"val"``; other phases are skipped);
* ``annos_segmentation[]``: ``image_id``, ``category_id`` and ``segmentation``, a COCO mask:
  RLE ``{"size": [h, w], "counts": str or list}`` or polygons ``[[x0, y0, x1, y1, ...], ...]``;
* ``categories[]`` (optional): ``category_id``, ``name``, checked against the 59 names so a
  json with another numbering fails instead of producing wrong labels.

Writes, next to ``JPEGImages`` in ``VOCdevkit/VOC2010``: ``SegmentationClassContext59/<id>.png``
(8-bit, 0..58 and 255) and ``ImageSets/SegmentationContext/{train,val}.txt``.

Usage:
    python datasets/prepare_pascal_context.py               # $DETECTRON2_DATASETS or ./datasets
    python datasets/prepare_pascal_context.py --voc2010 /data/VOCdevkit/VOC2010 \\
        --json /data/trainval_merged.json
"""

import argparse
import json
import logging
import os
import sys
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from resnest_dense.data.pascal_context import (
    IGNORE_LABEL,
    PASCAL_CONTEXT_59,
    PASCAL_CONTEXT_SPLITS,
    pascal_context_paths,
)
from resnest_dense.utils.io import atomic_write

logger = logging.getLogger("prepare_pascal_context")

MAX_CATEGORY_ID = 65535


def category_lookup(max_id: int) -> np.ndarray:
    """``lookup[category id] = class index`` (0..58) or 255 for every id up to ``max_id``."""
    lookup = np.full(max(max_id, PASCAL_CONTEXT_59[-1][0]) + 1, IGNORE_LABEL, np.uint8)
    for index, (cid, _) in enumerate(PASCAL_CONTEXT_59):
        lookup[cid] = index
    return lookup


def decode_segmentation(segmentation, height: int, width: int, where: str) -> np.ndarray:
    """A COCO RLE (compressed or not) or polygon list as an (H, W) bool mask."""
    if isinstance(segmentation, dict):
        if list(segmentation.get("size", [])) != [height, width]:
            raise ValueError(
                f"{where}: segmentation size {segmentation.get('size')} differs from the image's "
                f"[height, width] = [{height}, {width}]"
            )
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle.get("counts"), str):
            rle = dict(rle, counts=rle["counts"].encode("ascii"))
    elif isinstance(segmentation, list) and segmentation:
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        raise ValueError(
            f"{where}: 'segmentation' must be an RLE dict or a list of polygons, got "
            f"{type(segmentation).__name__}"
        )
    return mask_utils.decode(rle).astype(bool)


def context_label(image: Dict, annotations: Sequence[Dict], lookup: np.ndarray) -> np.ndarray:
    """The 59-class label map of one image.

    Args:
        image: its ``images[]`` entry (``height``, ``width``, ``file_name``).
        annotations: its ``annos_segmentation[]`` entries, in file order.
        lookup: from :func:`category_lookup`.

    Returns:
        (H, W) uint8 array: 0..58 and 255.
    """
    height, width = int(image["height"]), int(image["width"])
    ids = np.zeros((height, width), np.int64)  # 0 = no annotation, as getMask draws it
    for ann in annotations:
        where = f"{image['file_name']}: annotation {ann.get('id', '?')}"
        ids[decode_segmentation(ann["segmentation"], height, width, where)] = ann["category_id"]
    return lookup[ids]


def check_categories(data: Dict, json_path: str) -> None:
    """The json's names of the 59 kept ids must be the protocol's (when it lists categories)."""
    names = {c["category_id"]: c.get("name") for c in data.get("categories", [])}
    wrong = [
        f"{cid}: {names[cid]!r} (expected {name!r})"
        for cid, name in PASCAL_CONTEXT_59
        if cid in names and names[cid] != name
    ]
    if wrong:
        raise ValueError(
            f"{json_path}: category ids of the 59-class protocol carry other names "
            f"({'; '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}); this is not the PASCAL "
            "Context trainval_merged.json"
        )


def prepare(voc2010: str, json_path: str, overwrite: bool = False) -> Dict[str, int]:
    """Write the label PNGs and split files; returns the number of images per split.

    Raises:
        FileNotFoundError: the json or images it names are missing.
        ValueError: the json lacks a field used here, or holds masks of the wrong size.
    """
    with open(json_path) as f:
        data = json.load(f)
    for key in ("images", "annos_segmentation"):
        if key not in data:
            raise ValueError(
                f"{json_path}: no '{key}' list; expected the Detail API's trainval_merged.json "
                f"(keys found: {sorted(data)[:8]})"
            )
    check_categories(data, json_path)
    paths = {"images": os.path.join(voc2010, "JPEGImages")}
    paths["labels"] = os.path.join(voc2010, "SegmentationClassContext59")
    paths["splits"] = os.path.join(voc2010, "ImageSets", "SegmentationContext")
    by_image = defaultdict(list)
    for ann in data["annos_segmentation"]:
        by_image[ann["image_id"]].append(ann)
    images = {s: [] for s in PASCAL_CONTEXT_SPLITS.values()}
    for image in data["images"]:
        if image.get("phase") in images:
            images[image["phase"]].append(image)
    missing = [
        os.path.join(paths["images"], im["file_name"])
        for split in images.values()
        for im in split
        if not os.path.isfile(os.path.join(paths["images"], im["file_name"]))
    ]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images named in {json_path} are missing, e.g. {missing[:3]}: put the "
            f"VOC2010 JPEGImages (VOCtrainval_03-May-2010.tar) at {paths['images']}"
        )
    max_id = max([a["category_id"] for a in data["annos_segmentation"]] + [0])
    if max_id > MAX_CATEGORY_ID:
        raise ValueError(f"{json_path}: category id {max_id} is out of range")
    lookup = category_lookup(max_id)
    os.makedirs(paths["labels"], exist_ok=True)
    os.makedirs(paths["splits"], exist_ok=True)
    other = Counter()
    counts = {}
    for split, split_images in images.items():
        ids = []
        for n, image in enumerate(sorted(split_images, key=lambda im: im["file_name"])):
            stem = os.path.splitext(image["file_name"])[0]
            ids.append(stem)
            dst = os.path.join(paths["labels"], f"{stem}.png")
            if os.path.exists(dst) and not overwrite:
                continue
            anns = by_image.get(image["image_id"], [])
            other.update(a["category_id"] for a in anns if lookup[a["category_id"]] == IGNORE_LABEL)
            label = context_label(image, anns, lookup)
            # Written under a temporary name first: an interrupted run leaves no truncated PNG.
            atomic_write(dst, lambda f, a=label: Image.fromarray(a).save(f, format="PNG"))
            if (n + 1) % 1000 == 0:
                logger.info("%s: %d / %d", split, n + 1, len(split_images))
        atomic_write(
            os.path.join(paths["splits"], f"{split}.txt"),
            lambda f, lines=ids: f.write("".join(f"{i}\n" for i in lines)),
            mode="w",
        )
        counts[split] = len(ids)
        logger.info("%s: %d images, labels in %s", split, len(ids), paths["labels"])
    if other:
        logger.info(
            "Annotations of %d categories outside the 59 were set to %d (ignore): ids %s",
            len(other),
            IGNORE_LABEL,
            sorted(other)[:20],
        )
    return counts


def main(argv: Optional[List[str]] = None) -> int:
    default = pascal_context_paths()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voc2010", default=default["voc2010"], help="VOCdevkit/VOC2010 folder")
    parser.add_argument(
        "--json", help="trainval_merged.json (default: <voc2010>/trainval_merged.json)"
    )
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing label PNGs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    json_path = args.json or os.path.join(args.voc2010, "trainval_merged.json")
    for path, what in ((args.voc2010, "the VOC2010 folder"), (json_path, "trainval_merged.json")):
        if not os.path.exists(path):
            logger.error("Missing %s: %s (see datasets/README.md, 'PASCAL Context')", what, path)
            return 1
    try:
        prepare(args.voc2010, json_path, overwrite=args.overwrite)
    except (FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
