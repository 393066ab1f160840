"""ADE20K (SceneParsing, ADEChallengeData2016): 150-class palette and dataset registration.

detectron2 registers ``ade20k_sem_seg_train`` / ``ade20k_sem_seg_val`` in its builtin datasets
(images under ``$DETECTRON2_DATASETS/ADEChallengeData2016/images/{training,validation}``,
labels under ``annotations_detectron2/{training,validation}`` with 0..149 class ids and 255 =
ignore, as written by ``datasets/prepare_ade20k_sem_seg.py``). :func:`register_ade20k_sem_seg`
reuses those names and only registers them when detectron2 has not.
"""

import logging
import os
from typing import List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

from .registration import datasets_root

__all__ = ["ADE20K_PALETTE", "palette_for", "register_ade20k_sem_seg"]

logger = logging.getLogger(__name__)

# RGB colour of ADE20K classes 0..149 (the SceneParsing benchmark's colour table, as used by
# the CSAIL toolkit and mmsegmentation).
ADE20K_PALETTE: List[Tuple[int, int, int]] = [
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
]  # fmt: skip
assert len(ADE20K_PALETTE) == 150


def palette_for(
    num_classes: int, colours: Optional[Sequence[Sequence[int]]] = None
) -> List[Tuple[int, int, int]]:
    """``num_classes`` RGB colours: ``colours`` if given (e.g. metadata ``stuff_colors``), else
    the ADE20K palette, repeated when there are more than 150 classes."""
    source = [tuple(int(v) for v in c) for c in colours] if colours else ADE20K_PALETTE
    return [source[i % len(source)] for i in range(num_classes)]


def register_ade20k_sem_seg(root: Optional[str] = None) -> List[str]:
    """Make sure ``ade20k_sem_seg_{train,val}`` exist (detectron2's builtin names and layout).

    Args:
        root: the folder holding ``ADEChallengeData2016``; default ``$DETECTRON2_DATASETS``.

    Returns:
        The two names.
    """
    if root is None:
        root = datasets_root()
    base = os.path.join(root, "ADEChallengeData2016")
    names = []
    for split, dirname in (("train", "training"), ("val", "validation")):
        name = f"ade20k_sem_seg_{split}"
        names.append(name)
        if name in DatasetCatalog.list():
            continue
        image_dir = os.path.join(base, "images", dirname)
        gt_dir = os.path.join(base, "annotations_detectron2", dirname)
        DatasetCatalog.register(
            name, lambda x=image_dir, y=gt_dir: load_sem_seg(y, x, gt_ext="png", image_ext="jpg")
        )
        MetadataCatalog.get(name).set(
            stuff_classes=ADE20K_SEM_SEG_CATEGORIES[:],
            image_root=image_dir,
            sem_seg_root=gt_dir,
            evaluator_type="sem_seg",
            ignore_label=255,
        )
        logger.info("Registered %s (detectron2 had not).", name)
    return names
