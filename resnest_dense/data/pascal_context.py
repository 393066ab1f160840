"""PASCAL Context, 59-class protocol: class table and dataset registration.

PASCAL Context (Mottaghi et al., CVPR 2014) labels every pixel of the VOC2010 images with one of
459 categories. The benchmark used by PyTorch-Encoding (``encoding/datasets/pcontext.py``), by
mmsegmentation (``PascalContextDataset59``) and by the ResNeSt paper's released models keeps
the 59 most frequent ones and ignores everything else ("background" and the other 400):
4998 training and 5105 validation images, the ``train`` / ``val`` phases of the Detail API's
``trainval_merged.json``.

``datasets/prepare_pascal_context.py`` writes the layout registered here::

    $DETECTRON2_DATASETS/VOCdevkit/VOC2010/
      JPEGImages/2008_000002.jpg ...                       (public VOC2010 images)
      trainval_merged.json                                  (Context annotations, input)
      SegmentationClassContext59/2008_000002.png ...        (0..58 = classes, 255 = ignore)
      ImageSets/SegmentationContext/{train,val}.txt         (one image id per line)

and :func:`register_pascal_context` registers ``pascal_context_59_train`` /
``pascal_context_59_val`` (``evaluator_type="sem_seg"``, ignore label 255).
"""

import logging
import os
from typing import Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import MissingFileError, StartupError
from .registration import datasets_root

__all__ = [
    "PASCAL_CONTEXT_59",
    "PASCAL_CONTEXT_59_CATEGORY_IDS",
    "PASCAL_CONTEXT_59_CLASSES",
    "PASCAL_CONTEXT_SPLITS",
    "load_pascal_context_split",
    "pascal_context_paths",
    "register_pascal_context",
]

logger = logging.getLogger(__name__)

# (Detail API category id, name) of the 59 classes, in class-index order 0..58. The ids are the
# 60-entry mapping of PyTorch-Encoding / mmsegmentation without its 0 (background), sorted; the
# Detail API numbers its 459 categories alphabetically, so the class order is alphabetical too.
PASCAL_CONTEXT_59: Tuple[Tuple[int, str], ...] = (
    (2, "aeroplane"), (9, "bag"), (18, "bed"), (19, "bedclothes"), (22, "bench"),
    (23, "bicycle"), (25, "bird"), (31, "boat"), (33, "book"), (34, "bottle"),
    (44, "building"), (45, "bus"), (46, "cabinet"), (59, "car"), (65, "cat"),
    (68, "ceiling"), (72, "chair"), (80, "cloth"), (85, "computer"), (98, "cow"),
    (104, "cup"), (105, "curtain"), (113, "dog"), (115, "door"), (144, "fence"),
    (158, "floor"), (159, "flower"), (162, "food"), (187, "grass"), (189, "ground"),
    (207, "horse"), (220, "keyboard"), (232, "light"), (258, "motorbike"), (259, "mountain"),
    (260, "mouse"), (284, "person"), (295, "plate"), (296, "platform"), (308, "pottedplant"),
    (324, "road"), (326, "rock"), (347, "sheep"), (349, "shelves"), (354, "sidewalk"),
    (355, "sign"), (360, "sky"), (366, "snow"), (368, "sofa"), (397, "table"),
    (415, "track"), (416, "train"), (420, "tree"), (424, "truck"), (427, "tvmonitor"),
    (440, "wall"), (445, "water"), (454, "window"), (458, "wood"),
)  # fmt: skip
PASCAL_CONTEXT_59_CATEGORY_IDS: List[int] = [cid for cid, _ in PASCAL_CONTEXT_59]
PASCAL_CONTEXT_59_CLASSES: List[str] = [name for _, name in PASCAL_CONTEXT_59]
assert len(PASCAL_CONTEXT_59) == 59 and PASCAL_CONTEXT_59_CATEGORY_IDS == sorted(
    PASCAL_CONTEXT_59_CATEGORY_IDS
)

IGNORE_LABEL = 255
# Registered name suffix -> Detail API phase / split file name.
PASCAL_CONTEXT_SPLITS = {"train": "train", "val": "val"}
_PREPARE = "python datasets/prepare_pascal_context.py (see datasets/README.md, 'PASCAL Context')"


def pascal_context_paths(root: Optional[str] = None) -> Dict[str, str]:
    """The folders and files of the layout above.

    Args:
        root: the folder holding ``VOCdevkit``; default ``$DETECTRON2_DATASETS``.

    Returns:
        ``{"voc2010", "images", "labels", "json", "splits"}`` paths (``splits`` is the folder of
        ``train.txt`` / ``val.txt``).
    """
    if root is None:
        root = datasets_root()
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    return {
        "voc2010": voc,
        "images": os.path.join(voc, "JPEGImages"),
        "labels": os.path.join(voc, "SegmentationClassContext59"),
        "json": os.path.join(voc, "trainval_merged.json"),
        "splits": os.path.join(voc, "ImageSets", "SegmentationContext"),
    }


def load_pascal_context_split(split_file: str, image_dir: str, label_dir: str) -> List[Dict]:
    """The dataset dicts of one split: ``<image_dir>/<id>.jpg`` with ``<label_dir>/<id>.png``
    for every id listed in ``split_file``.

    Raises:
        MissingFileError: the split file, or images / labels it names, do not exist (the first
            ones named).
        StartupError: the split file lists no id.
    """
    if not os.path.isfile(split_file):
        raise MissingFileError(
            f"PASCAL Context split file {split_file!r} does not exist. Write it with {_PREPARE}."
        )
    with open(split_file) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise StartupError(f"PASCAL Context split file {split_file!r} lists no image id.")
    dicts = [
        {
            "file_name": os.path.join(image_dir, f"{i}.jpg"),
            "sem_seg_file_name": os.path.join(label_dir, f"{i}.png"),
        }
        for i in ids
    ]
    for key, what, fix in (
        ("file_name", "images", "download the VOC2010 images (VOCtrainval_03-May-2010.tar)"),
        ("sem_seg_file_name", "label PNGs", f"write them with {_PREPARE}"),
    ):
        missing = [d[key] for d in dicts if not os.path.isfile(d[key])]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise MissingFileError(
                f"PASCAL Context {os.path.basename(split_file)}: {len(missing)} of {len(dicts)} "
                f"{what} are missing: {', '.join(missing[:3])}{more}. To fix: {fix}."
            )
    return dicts


def register_pascal_context(
    root: Optional[str] = None, prefix: str = "pascal_context_59"
) -> List[str]:
    """Register ``<prefix>_{train,val}`` (if not yet registered). Touches no file.

    Args:
        root: the folder holding ``VOCdevkit``; default ``$DETECTRON2_DATASETS``.
        prefix: of the names (another one registers a second copy, e.g. in tests).

    Returns:
        The two names.
    """
    paths = pascal_context_paths(root)
    names = []
    for suffix, split in PASCAL_CONTEXT_SPLITS.items():
        name = f"{prefix}_{suffix}"
        names.append(name)
        if name in DatasetCatalog.list():
            continue
        split_file = os.path.join(paths["splits"], f"{split}.txt")
        DatasetCatalog.register(
            name,
            lambda s=split_file, i=paths["images"], g=paths["labels"]: load_pascal_context_split(
                s, i, g
            ),
        )
        MetadataCatalog.get(name).set(
            stuff_classes=PASCAL_CONTEXT_59_CLASSES[:],
            image_root=paths["images"],
            sem_seg_root=paths["labels"],
            split_file=split_file,
            evaluator_type="sem_seg",
            ignore_label=IGNORE_LABEL,
        )
    return names
