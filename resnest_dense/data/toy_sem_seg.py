"""A generated toy semantic-segmentation set: tinted circles, squares and triangles on noise.

Deterministic (one seed per image), small (64-128 px) and laid out like detectron2's sem-seg
datasets (``images/{split}/*.png`` + ``labels/{split}/*.png`` with one uint8 class id per pixel,
255 = ignore), so ``load_sem_seg`` -> ``DatasetMapper`` -> ``SemSegEvaluator`` run on it as on
ADE20K. Classes: 0 background, 1 circle, 2 square, 3 triangle; each class has its own hue
(jittered) and a 1-px ignore outline, so a small network learns it in minutes on a CPU.

Generate it with ``python -m resnest_dense.data.toy_sem_seg --out DIR`` or let the registered
names ``toy_sem_seg_train`` / ``toy_sem_seg_val`` generate it under
``$DETECTRON2_DATASETS/toy_sem_seg`` (default ``./datasets/toy_sem_seg``) on first use.
"""

import logging
import math
import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

from .registration import GENERATED_KEY, datasets_root
from .generated import ensure_dataset_dir, generate_dataset_dir, generator_main, shape_polygon

__all__ = [
    "TOY_SEM_SEG_CLASSES",
    "TOY_SEM_SEG_SPLITS",
    "generate_toy_sem_seg",
    "ensure_toy_sem_seg",
    "register_toy_sem_seg",
]

logger = logging.getLogger(__name__)

TOY_SEM_SEG_CLASSES = ["background", "circle", "square", "triangle"]
# Default number of images per split of the registered set.
TOY_SEM_SEG_SPLITS = {"train": 256, "val": 48}
IGNORE_LABEL = 255
# Mean RGB colour of each shape class; every shape jitters it.
_CLASS_COLOURS = {1: (220, 60, 60), 2: (60, 200, 60), 3: (70, 90, 230)}


def _make_sample(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 RGB and its label map (H, W) uint8."""
    h, w = (int(v) for v in rng.integers(64, 129, size=2))
    grey = rng.integers(60, 200)
    image = np.clip(grey + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
    labels = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(1, len(TOY_SEM_SEG_CLASSES)))
        r = float(rng.uniform(8, min(h, w) / 3))
        cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        angle = float(rng.uniform(0, 2 * math.pi))
        polygon = shape_polygon(TOY_SEM_SEG_CLASSES[cls], cx, cy, r, angle)
        polygon = np.round(polygon).astype(np.int32)
        colour = np.clip(np.array(_CLASS_COLOURS[cls]) + rng.integers(-40, 41, size=3), 0, 255)
        # Later shapes cover earlier ones, in the image and in the labels alike.
        cv2.fillPoly(image, [polygon], [int(c) for c in colour])
        cv2.fillPoly(labels, [polygon], cls)
        cv2.polylines(labels, [polygon], True, IGNORE_LABEL, 1)
    return image, labels


def _write_split(out_dir: str, split: str, num_images: int, seed: int) -> None:
    image_dir = os.path.join(out_dir, "images", split)
    label_dir = os.path.join(out_dir, "labels", split)
    os.makedirs(image_dir)
    os.makedirs(label_dir)
    for idx in range(num_images):
        # One generator per image: image i is the same whatever num_images is.
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, idx])
        image, labels = _make_sample(rng)
        cv2.imwrite(os.path.join(image_dir, f"{idx:06d}.png"), image[:, :, ::-1])
        cv2.imwrite(os.path.join(label_dir, f"{idx:06d}.png"), labels)


def generate_toy_sem_seg(
    out_dir: str,
    num_train: int = TOY_SEM_SEG_SPLITS["train"],
    num_val: int = TOY_SEM_SEG_SPLITS["val"],
    seed: int = 0,
) -> str:
    """Write the toy set to ``out_dir`` (which must not exist yet) and return ``out_dir``.

    Everything is written to a temporary sibling directory renamed to ``out_dir`` at the end,
    so readers never see a half-written set and concurrent generators are safe: the first
    rename wins and the other copy is discarded.

    Args:
        out_dir: output directory; gets ``images/{train,val}`` and ``labels/{train,val}``.
        num_train: number of training images.
        num_val: number of validation images.
        seed: base seed; the same seed gives the same files.
    """
    return generate_dataset_dir(
        out_dir, _write_split, "toy_sem_seg.json", num_train=num_train, num_val=num_val, seed=seed
    )


def ensure_toy_sem_seg(root: str, **kwargs) -> str:
    """Generate the toy set at ``root`` unless it is already there; return ``root``."""
    return ensure_dataset_dir(root, generate_toy_sem_seg, **kwargs)


def _load_split(root: str, split: str, generate_kwargs: Dict) -> List[Dict]:
    ensure_toy_sem_seg(root, **generate_kwargs)
    return load_sem_seg(
        os.path.join(root, "labels", split),
        os.path.join(root, "images", split),
        gt_ext="png",
        image_ext="png",
    )


def register_toy_sem_seg(
    root: Optional[str] = None,
    prefix: str = "toy_sem_seg",
    num_train: int = TOY_SEM_SEG_SPLITS["train"],
    num_val: int = TOY_SEM_SEG_SPLITS["val"],
    seed: int = 0,
) -> List[str]:
    """Register ``{prefix}_train`` and ``{prefix}_val``; the files are generated on first use.

    Registration touches no file. Metadata has ``evaluator_type="sem_seg"``, ``stuff_classes``
    and ``ignore_label=255``, so a trainer evaluates these names with ``SemSegEvaluator``.

    Args:
        root: directory of the set; default ``$DETECTRON2_DATASETS/toy_sem_seg``.
        prefix: name prefix.
        num_train, num_val, seed: see :func:`generate_toy_sem_seg`.

    Returns:
        The registered names.
    """
    if root is None:
        root = os.path.join(datasets_root(), "toy_sem_seg")
    generate_kwargs = dict(num_train=num_train, num_val=num_val, seed=seed)
    names = []
    for split in ("train", "val"):
        name = f"{prefix}_{split}"
        DatasetCatalog.register(name, lambda split=split: _load_split(root, split, generate_kwargs))
        MetadataCatalog.get(name).set(
            image_root=os.path.join(root, "images", split),
            sem_seg_root=os.path.join(root, "labels", split),
            evaluator_type="sem_seg",
            stuff_classes=list(TOY_SEM_SEG_CLASSES),
            ignore_label=IGNORE_LABEL,
            **{GENERATED_KEY: generate_kwargs},  # written on first use
        )
        names.append(name)
    return names


def main(argv: Optional[List[str]] = None) -> None:
    generator_main("toy semantic-segmentation set", generate_toy_sem_seg, TOY_SEM_SEG_SPLITS, argv)


if __name__ == "__main__":
    main()
