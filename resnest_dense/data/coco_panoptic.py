"""COCO panoptic annotations -> the stuff targets of Panoptic FPN (detectron2's "separated"
COCO panoptic layout).

detectron2's ``coco_2017_{train,val}_panoptic_separated`` train the stuff head on label PNGs in
``panoptic_stuff_{train,val}2017/``: 0 for every thing pixel, ``1..S`` for the stuff categories
in increasing category id, 255 for VOID. :func:`stuff_label` computes one such map; ``datasets/prepare_panoptic_fpn.py`` writes a whole
split with it and the generated toy panoptic set writes its stuff PNGs with it.
"""

from typing import Dict, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["STUFF_IGNORE", "stuff_id_map", "stuff_label"]

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
