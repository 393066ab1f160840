"""A generated toy COCO dataset: coloured circles, squares and triangles on noisy backgrounds.

It is deterministic (one seed per image), small (64-160 px images) and written as ordinary COCO
files (``annotations/instances_{train,val}.json`` with polygon masks + PNG images), so the
whole detectron2 path (``load_coco_json`` -> ``DatasetMapper`` -> ``COCOEvaluator``) runs on it
exactly as on COCO. Shapes never overlap, so each polygon is the visible instance mask.

Generate it explicitly with ``python -m resnest_dense.data.toy_coco --out DIR``, or let the
registered names ``toy_coco_train`` / ``toy_coco_val`` generate it under
``$DETECTRON2_DATASETS/toy_coco`` (default ``./datasets/toy_coco``) on first use.
"""

import json
import logging
import math
import os
from typing import Dict, List, Optional

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .registration import GENERATED_KEY, datasets_root
from .generated import ensure_dataset_dir, generate_dataset_dir, generator_main, shape_polygon

__all__ = [
    "TOY_CLASSES",
    "TOY_SPLITS",
    "coco_polygon",
    "coco_polygon_annotation",
    "generate_toy_coco",
    "ensure_toy_coco",
    "register_toy_coco",
    "default_toy_coco_root",
    "make_toy_image",
]

logger = logging.getLogger(__name__)

TOY_CLASSES = ["circle", "square", "triangle"]
# Default number of images per split of the registered toy set.
TOY_SPLITS = {"train": 512, "val": 64}
# Every EMPTY_EVERY-th image has no object, so batches with empty images occur in training.
EMPTY_EVERY = 10


def make_toy_image(rng: np.random.Generator, empty: bool):
    """One image (H, W, 3) uint8 RGB on a noisy uniform background, and its list of
    (class index, polygon) of non-overlapping shapes (none if ``empty``)."""
    h, w = (int(v) for v in rng.integers(64, 161, size=2))
    background = rng.integers(0, 256, size=3)
    image = background[None, None, :] + rng.normal(0, 20, size=(h, w, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    objects, placed = [], []
    num_objects = 0 if empty else int(rng.integers(1, 5))
    for _ in range(num_objects * 10):  # rejection sampling for non-overlapping shapes
        if len(objects) == num_objects:
            break
        r = float(rng.uniform(8, min(h, w) / 4))
        cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        if any(math.hypot(cx - x, cy - y) < r + pr + 2 for x, y, pr in placed):
            continue
        cls = int(rng.integers(len(TOY_CLASSES)))
        polygon = shape_polygon(TOY_CLASSES[cls], cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        # A colour far from the background, so every shape is visible.
        colour = (background + rng.integers(80, 176, size=3)) % 256
        cv2.fillPoly(image, [np.round(polygon).astype(np.int32)], [int(c) for c in colour])
        placed.append((cx, cy, r))
        objects.append((cls, polygon))
    return image, objects


def coco_polygon(polygon: np.ndarray) -> List[float]:
    """A polygon (N, 2) as stored in the JSON: flat [x0, y0, x1, y1, ...], 2 decimals."""
    return [round(float(v), 2) for v in polygon.reshape(-1)]


def coco_polygon_annotation(ann_id: int, image_id: int, cls: int, polygon: np.ndarray) -> Dict:
    """The COCO instance annotation of toy class index ``cls`` (category ``cls + 1``)."""
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0)
    # Area of the polygon (shoelace), as COCO stores it.
    x, y = polygon[:, 0], polygon[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cls + 1,
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": area,
        "iscrowd": 0,
        "segmentation": [coco_polygon(polygon)],
    }


def _write_split(out_dir: str, split: str, num_images: int, seed: int) -> None:
    os.makedirs(os.path.join(out_dir, split))
    images, annotations = [], []
    for idx in range(num_images):
        # One generator per image: image i is the same whatever num_images is.
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, idx])
        image, objects = make_toy_image(rng, empty=idx % EMPTY_EVERY == EMPTY_EVERY - 1)
        file_name = f"{idx:06d}.png"
        cv2.imwrite(os.path.join(out_dir, split, file_name), image[:, :, ::-1])
        image_id = idx + 1
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": image.shape[0],
                "width": image.shape[1],
            }
        )
        for cls, polygon in objects:
            annotations.append(
                coco_polygon_annotation(len(annotations) + 1, image_id, cls, polygon)
            )
    categories = [
        {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(TOY_CLASSES)
    ]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    with open(os.path.join(out_dir, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump(coco, f)


def generate_toy_coco(
    out_dir: str,
    num_train: int = TOY_SPLITS["train"],
    num_val: int = TOY_SPLITS["val"],
    seed: int = 0,
) -> str:
    """Write the toy set to ``out_dir`` (which must not exist yet) and return ``out_dir``.

    Everything is written to a temporary sibling directory that is renamed to ``out_dir`` at the
    end, so a reader never sees a half-written set and two processes generating at once are safe:
    the first rename wins and the other copy is discarded.

    Args:
        out_dir: output directory; gets ``train/``, ``val/`` and ``annotations/``.
        num_train: number of training images.
        num_val: number of validation images.
        seed: base seed; the same seed gives the same files.
    """
    return generate_dataset_dir(
        out_dir, _write_split, "toy_coco.json", num_train=num_train, num_val=num_val, seed=seed
    )


def ensure_toy_coco(root: str, **kwargs) -> str:
    """Generate the toy set at ``root`` unless it is already there; return ``root``."""
    return ensure_dataset_dir(root, generate_toy_coco, **kwargs)


def default_toy_coco_root() -> str:
    """``$DETECTRON2_DATASETS/toy_coco`` (default ``./datasets/toy_coco``), read now."""
    return os.path.join(datasets_root(), "toy_coco")


def _set_split_metadata(name: str, root: str, split: str, generate_kwargs: Dict) -> None:
    """Point ``name``'s metadata at the files under ``root`` (replacing an older root)."""
    meta = MetadataCatalog.get(name)
    if meta.get("toy_coco_root") not in (None, root):
        MetadataCatalog.remove(name)
        meta = MetadataCatalog.get(name)
    meta.set(
        json_file=os.path.join(root, "annotations", f"instances_{split}.json"),
        image_root=os.path.join(root, split),
        evaluator_type="coco",
        thing_classes=list(TOY_CLASSES),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(TOY_CLASSES))},
        toy_coco_root=root,
        **{GENERATED_KEY: generate_kwargs},
    )


def _load_toy_split(
    name: str, root: Optional[str], split: str, generate_kwargs: Dict
) -> List[Dict]:
    root = root or default_toy_coco_root()
    _set_split_metadata(name, root, split, generate_kwargs)
    ensure_toy_coco(root, **generate_kwargs)
    return load_coco_json(
        os.path.join(root, "annotations", f"instances_{split}.json"),
        os.path.join(root, split),
        # The name makes detectron2 map category ids 1..3 to contiguous 0..2.
        dataset_name=name,
    )


def register_toy_coco(
    root: Optional[str] = None,
    prefix: str = "toy_coco",
    num_train: int = TOY_SPLITS["train"],
    num_val: int = TOY_SPLITS["val"],
    seed: int = 0,
) -> List[str]:
    """Register ``{prefix}_train`` and ``{prefix}_val``; the files are generated on first use.

    Registration is cheap (no file is touched). Metadata has ``evaluator_type="coco"``, so the
    trainer evaluates these names with COCO box (and mask) AP.

    Args:
        root: directory of the set. None: ``$DETECTRON2_DATASETS/toy_coco`` as the variable is
            set when the data are loaded (not when registered); ``json_file`` / ``image_root``
            metadata are then set on loading.
        prefix: name prefix.
        num_train, num_val, seed: see :func:`generate_toy_coco`.

    Returns:
        The registered names.
    """
    generate_kwargs = dict(num_train=num_train, num_val=num_val, seed=seed)
    names = []
    for split in ("train", "val"):
        name = f"{prefix}_{split}"
        DatasetCatalog.register(
            name,
            lambda name=name, split=split: _load_toy_split(name, root, split, generate_kwargs),
        )
        if root is None:
            MetadataCatalog.get(name).set(
                evaluator_type="coco",
                thing_classes=list(TOY_CLASSES),
                thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(TOY_CLASSES))},
                **{GENERATED_KEY: generate_kwargs},
            )
        else:
            _set_split_metadata(name, root, split, generate_kwargs)
        names.append(name)
    return names


def main(argv: Optional[List[str]] = None) -> None:
    generator_main("toy COCO set (shapes with masks)", generate_toy_coco, TOY_SPLITS, argv)


if __name__ == "__main__":
    main()
