"""COCO panoptic PNGs store segment ids as colours: ``id = R + 256 G + 256^2 B``."""

import numpy as np

__all__ = ["rgb_to_id", "id_to_rgb"]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Colours (H, W, 3) -> segment ids (H, W) int64."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids (H, W), each below 256^3 -> colours (H, W, 3) uint8."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(
            f"Panoptic segment ids must be in [0, 256^3); got {ids.min()}..{ids.max()}"
        )
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
