"""A generated toy COCO-panoptic set: the toy shapes (things) on a sky / ground scene (stuff).

Each image is a toy COCO image (:func:`.toy_coco.make_toy_image`) whose background is split at
a random row into two stuff regions, "sky" above and "ground" below, with a 2-pixel VOID band
between them. The files have the layout of COCO panoptic after detectron2's
``prepare_panoptic_fpn.py``, so the registered sets run through detectron2's own loaders
(``load_coco_json`` + ``load_sem_seg`` + ``merge_to_panoptic``, as
``register_coco_panoptic_separated`` does) and through panoptic evaluation:

* ``{split}/*.png``: the images;
* ``annotations/instances_{split}.json``: the things as COCO polygons (categories 1-3);
* ``annotations/panoptic_{split}.json`` + ``panoptic_{split}/*.png``: COCO panoptic
  annotations (segment ids as RGB, ``segments_info`` with areas and boxes; stuff categories
  4 "sky" and 5 "ground");
* ``panoptic_stuff_{split}/*.png``: the semantic targets of the stuff head: 0 for thing
  pixels, 1 sky, 2 ground, 255 VOID.

Registered as ``toy_panoptic_{train,val}`` (``evaluator_type="coco_panoptic_seg"``), generated
under ``$DETECTRON2_DATASETS/toy_panoptic`` on first use; or write it with
``python -m resnest_dense.data.toy_panoptic --out DIR``.
"""

import json
import logging
import os
from typing import Dict, List, Optional

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg
from detectron2.data.datasets.coco_panoptic import merge_to_panoptic

from .coco_panoptic import stuff_id_map, stuff_label
from .registration import GENERATED_KEY, datasets_root
from .panoptic_ids import id_to_rgb
from .generated import ensure_dataset_dir, generate_dataset_dir, generator_main
from .toy_coco import (
    EMPTY_EVERY,
    TOY_CLASSES,
    coco_polygon,
    coco_polygon_annotation,
    make_toy_image,
)

__all__ = [
    "TOY_STUFF_CLASSES",
    "TOY_PANOPTIC_SPLITS",
    "generate_toy_panoptic",
    "register_toy_panoptic",
    "toy_panoptic_metadata",
]

logger = logging.getLogger(__name__)

TOY_STUFF_CLASSES = ["sky", "ground"]
TOY_PANOPTIC_SPLITS = {"train": 256, "val": 48}
_IGNORE = 255
_FIRST_STUFF_ID = len(TOY_CLASSES) + 1  # dataset category ids: things 1-3, stuff 4-5


def _categories() -> List[Dict]:
    """The ``categories`` of the panoptic JSON: things 1-3, stuff 4-5."""
    things = [
        {"id": i + 1, "name": n, "supercategory": "shape", "isthing": 1}
        for i, n in enumerate(TOY_CLASSES)
    ]
    stuff = [
        {"id": _FIRST_STUFF_ID + i, "name": n, "supercategory": "scene", "isthing": 0}
        for i, n in enumerate(TOY_STUFF_CLASSES)
    ]
    return things + stuff


def toy_panoptic_metadata() -> Dict:
    """Class names and id maps, in the form detectron2 uses for COCO panoptic ("separated")."""
    stuff_map = {k: v for k, v in stuff_id_map(_categories()).items() if v > 0}
    stuff_map[0] = 0  # the stuff head's class 0 is "things"
    return {
        "thing_classes": list(TOY_CLASSES),
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(TOY_CLASSES))},
        "stuff_classes": ["things"] + list(TOY_STUFF_CLASSES),
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }


def _segment(segment_id: int, category_id: int, mask: np.ndarray) -> Dict:
    ys, xs = np.nonzero(mask)
    return {
        "id": segment_id,
        "category_id": category_id,
        "iscrowd": 0,
        "area": int(mask.sum()),
        "bbox": [
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        ],
    }


def _make_scene(rng: np.random.Generator, empty: bool):
    """Image (H, W, 3) RGB, thing polygons, panoptic ids (H, W) and their segments_info."""
    image, objects = make_toy_image(rng, empty)
    h, w = image.shape[:2]
    ids = np.zeros((h, w), np.int32)
    # pycocotools' rasterisation of the instance polygons (what detectron2 trains the mask
    # head on and COCO evaluates), so both annotations hold the same thing masks.
    for k, (_, polygon) in enumerate(objects):
        rle = mask_util.frPyObjects([coco_polygon(polygon)], h, w)
        ids[mask_util.decode(mask_util.merge(rle)).astype(bool)] = k + 1
    things = ids > 0
    split = int(rng.integers(h // 3, 2 * h // 3))
    rows = np.arange(h)[:, None]
    ground = (rows >= split + 1) & ~things
    sky = (rows < split - 1) & ~things
    ground_colour = (image[0, 0].astype(np.int64) + rng.integers(60, 196, size=3)) % 256
    noise = rng.normal(0, 20, size=(h, w, 3))
    image[ground] = np.clip(ground_colour + noise[ground], 0, 255).astype(np.uint8)
    segments = [_segment(k + 1, cls + 1, ids == k + 1) for k, (cls, _) in enumerate(objects)]
    next_id = len(objects) + 1
    for c, mask in enumerate((sky, ground)):
        if mask.any():
            ids[mask] = next_id
            segments.append(_segment(next_id, _FIRST_STUFF_ID + c, mask))
            next_id += 1
    return image, objects, ids, segments


def _write_split(out_dir: str, split: str, num_images: int, seed: int) -> None:
    folders = {
        k: os.path.join(out_dir, k.format(split))
        for k in ("{}", "panoptic_{}", "panoptic_stuff_{}")
    }
    for folder in folders.values():
        os.makedirs(folder)
    images, instances, panoptic = [], [], []
    for idx in range(num_images):
        # One generator per image, as in toy_coco; "2/3" keeps these images apart from it.
        rng = np.random.default_rng([seed, 2 if split == "train" else 3, idx])
        image, objects, ids, segments = _make_scene(rng, empty=idx % EMPTY_EVERY == EMPTY_EVERY - 1)
        stem, image_id = f"{idx:06d}", idx + 1
        cv2.imwrite(os.path.join(folders["{}"], stem + ".png"), image[:, :, ::-1])
        cv2.imwrite(os.path.join(folders["panoptic_{}"], stem + ".png"), id_to_rgb(ids)[:, :, ::-1])
        cv2.imwrite(
            os.path.join(folders["panoptic_stuff_{}"], stem + ".png"),
            stuff_label(ids, segments, stuff_id_map(_categories())),
        )
        h, w = image.shape[:2]
        images.append({"id": image_id, "file_name": stem + ".png", "height": h, "width": w})
        for cls, polygon in objects:
            instances.append(coco_polygon_annotation(len(instances) + 1, image_id, cls, polygon))
        panoptic.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments}
        )
    categories = _categories()
    things = [c for c in categories if c["isthing"]]
    annotations = os.path.join(out_dir, "annotations")
    os.makedirs(annotations, exist_ok=True)
    with open(os.path.join(annotations, f"instances_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": instances, "categories": things}, f)
    with open(os.path.join(annotations, f"panoptic_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": panoptic, "categories": categories}, f)


def generate_toy_panoptic(
    out_dir: str,
    num_train: int = TOY_PANOPTIC_SPLITS["train"],
    num_val: int = TOY_PANOPTIC_SPLITS["val"],
    seed: int = 0,
) -> str:
    """Write the toy panoptic set to ``out_dir`` (must not exist yet), atomically; return it."""
    return generate_dataset_dir(
        out_dir, _write_split, "toy_panoptic.json", num_train=num_train, num_val=num_val, seed=seed
    )


def _paths(root: str, split: str) -> Dict[str, str]:
    return {
        "image_root": os.path.join(root, split),
        "panoptic_root": os.path.join(root, f"panoptic_{split}"),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}.json"),
        "sem_seg_root": os.path.join(root, f"panoptic_stuff_{split}"),
        "json_file": os.path.join(root, "annotations", f"instances_{split}.json"),
    }


def _default_root() -> str:
    return os.path.join(datasets_root(), "toy_panoptic")


def _load_split(name: str, root: Optional[str], split: str, generate_kwargs: Dict) -> List[Dict]:
    root = root or _default_root()
    paths = _paths(root, split)
    meta = MetadataCatalog.get(name)
    if meta.get("panoptic_root") not in (None, paths["panoptic_root"]):
        MetadataCatalog.remove(name)
        _set_metadata(name, generate_kwargs)
    MetadataCatalog.get(name).set(**paths)
    ensure_dataset_dir(root, generate_toy_panoptic, **generate_kwargs)
    # What detectron2's register_coco_panoptic_separated registers, read now.
    return merge_to_panoptic(
        load_coco_json(paths["json_file"], paths["image_root"], dataset_name=name),
        load_sem_seg(paths["sem_seg_root"], paths["image_root"], image_ext="png"),
    )


def _set_metadata(name: str, generate_kwargs: Dict) -> None:
    MetadataCatalog.get(name).set(
        evaluator_type="coco_panoptic_seg",
        ignore_label=_IGNORE,
        **{GENERATED_KEY: generate_kwargs},
        **toy_panoptic_metadata(),
    )


def register_toy_panoptic(
    root: Optional[str] = None,
    prefix: str = "toy_panoptic",
    num_train: int = TOY_PANOPTIC_SPLITS["train"],
    num_val: int = TOY_PANOPTIC_SPLITS["val"],
    seed: int = 0,
) -> List[str]:
    """Register ``{prefix}_train`` / ``{prefix}_val``; files are generated on first use.

    Args:
        root: directory of the set; None: ``$DETECTRON2_DATASETS/toy_panoptic`` as the variable
            is set when the data are loaded. The file paths in the metadata
            (``panoptic_json``, ``panoptic_root``, ``sem_seg_root``, ``json_file``) are set when
            the data are loaded, or now if ``root`` is given.
        prefix, num_train, num_val, seed: names and size of the set.

    Returns:
        The registered names.
    """
    generate_kwargs = dict(num_train=num_train, num_val=num_val, seed=seed)
    names = []
    for split in ("train", "val"):
        name = f"{prefix}_{split}"
        DatasetCatalog.register(
            name, lambda name=name, split=split: _load_split(name, root, split, generate_kwargs)
        )
        _set_metadata(name, generate_kwargs)
        if root is not None:
            MetadataCatalog.get(name).set(**_paths(root, split))
        names.append(name)
    return names


def main(argv: Optional[List[str]] = None) -> None:
    generator_main("toy COCO panoptic set", generate_toy_panoptic, TOY_PANOPTIC_SPLITS, argv)


if __name__ == "__main__":
    main()
