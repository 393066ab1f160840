"""Utilities: inference fast path, the demos' image inputs."""

from .fast_inference import fold_batch_norms, optimize_for_inference
from .image_inputs import (
    ImageInput,
    ImageStream,
    UnreadableImageError,
    check_outputs,
    list_image_inputs,
    read_image_bgr,
)

__all__ = [
    "ImageInput",
    "ImageStream",
    "UnreadableImageError",
    "check_outputs",
    "fold_batch_norms",
    "list_image_inputs",
    "optimize_for_inference",
    "read_image_bgr",
]
