"""Augmentations of mmsegmentation's segmentation recipes (``_base_/datasets/cityscapes*.py``,
``ade20k.py``), the twins of a YAML with ``INPUT.BASE_SIZE_SHORT`` > 0: ``Resize(img_scale=(long,
short), ratio_range=(0.5, 2.0))`` (:class:`~resnest_dense.engine.semseg.RandomRatioResize`), a
fixed-size crop padded with black pixels / the ignore label, horizontal flip, no blur; at test
time the short side resized to ``INPUT.MIN_SIZE_TEST`` with the long side capped at
``INPUT.MAX_SIZE_TEST``."""

from typing import List, Sequence

from detectron2.config import LazyCall as L
from detectron2.data import transforms as T

from resnest_dense.engine.semseg import RandomRatioResize


def resize_crop_flip(long: int, short: int, crop_size: Sequence[int]) -> List:
    """Training augmentations: the YAML's ``INPUT.BASE_SIZE`` (``long``), ``BASE_SIZE_SHORT``
    (``short``), ``RANDOM_SCALE [0.5, 2.0]`` and ``CROP.SIZE`` (``crop_size``, height x width)."""
    return [
        L(RandomRatioResize)(long=long, short=short, min_ratio=0.5, max_ratio=2.0),
        L(T.FixedSizeCrop)(crop_size=tuple(crop_size), pad=True, pad_value=0.0, seg_pad_value=255),
        L(T.RandomFlip)(horizontal=True),
    ]


def resize_test(short: int, long: int) -> List:
    """Test augmentation: ``INPUT.MIN_SIZE_TEST`` (``short``) / ``MAX_SIZE_TEST`` (``long``)."""
    return [L(T.ResizeShortestEdge)(short_edge_length=short, max_size=long)]
