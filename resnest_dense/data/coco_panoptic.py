"""COCO panoptic annotations -> the stuff targets of Panoptic FPN (detectron2's "separated"
COCO panoptic layout).

detectron2's ``coco_2017_{train,val}_panoptic_separated`` train the stuff head on label PNGs in
``panoptic_stuff_{train,val}2017/``: 0 for every thing pixel, ``1..S`` for the stuff categories
in increasing category id, 255 for VOID. :func:`stuff_label` computes one such map and
:func:`convert_panoptic_split` writes a whole split (``datasets/prepare_panoptic_fpn.py``); the
generated toy panoptic set writes its stuff PNGs with the same function.
"""

import json
import logging
import os
from multiprocessing import Pool
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np
from PIL import Image

from ..utils.io import atomic_write
from .panoptic_ids import rgb_to_id

__all__ = ["STUFF_IGNORE", "stuff_id_map", "stuff_label", "convert_panoptic_split"]

logger = logging.getLogger(__name__)

STUFF_IGNORE = 255


def stuff_id_map(categories: Sequence[Mapping]) -> Dict[int, int]:
    """Dataset category id -> stuff-head class: things 0, stuff 1..S by increasing id.

    Args:
        categories: the ``categories`` of a COCO panoptic JSON (``id``, ``isthing``).
    """
    stuff = sorted(c["id"] for c in categories if not c.get("isthing", 0))
    mapping = {c["id"]: 0 for c in categories if c.get("isthing", 0)}
    mapping.update({k: i + 1 for i, k in enumerate(stuff)})
    return mapping


def stuff_label(
    ids: np.ndarray,
    segments_info: Iterable[Mapping],
    id_map: Mapping[int, int],
    where: str = "image",
) -> np.ndarray:
    """The stuff-head target (H, W) uint8 of one panoptic id map.

    Args:
        ids: (H, W) segment ids (0 is VOID).
        segments_info: the image's segments (``id``, ``category_id``).
        id_map: :func:`stuff_id_map` of the data set.
        where: names the image in error messages.

    Raises:
        ValueError: a segment id of the PNG is not in ``segments_info``, or a segment has a
            category the JSON does not list.
    """
    label_of = {0: STUFF_IGNORE}
    for s in segments_info:
        if s["category_id"] not in id_map:
            raise ValueError(
                f"{where}: segment {s['id']} has category_id {s['category_id']}, which is not in "
                "the JSON's categories"
            )
        label_of[int(s["id"])] = id_map[s["category_id"]]
    uniq, inverse = np.unique(ids, return_inverse=True)
    unknown = [int(u) for u in uniq if int(u) not in label_of]
    if unknown:
        raise ValueError(
            f"{where}: segment ids {unknown[:5]} are in the PNG but not in the JSON's "
            "segments_info; the panoptic PNGs and JSON do not belong together"
        )
    lut = np.array([label_of[int(u)] for u in uniq], dtype=np.uint8)
    return lut[inverse].reshape(ids.shape)


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
