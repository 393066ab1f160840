"""Weight conversion into detectron2 names, and the checkpointer every tool loads with."""

from .checkpointer import CheckpointReadError, Checkpointer, LoadReport, load_checked
from .convert import (
    REQUIRED_INPUT_SETTINGS,
    CheckpointMismatchError,
    build_variant_backbone,
    check_state_dict,
    convert_resnest_checkpoint,
    convert_resnest_state_dict,
    load_torch_state_dict,
)

__all__ = [
    "REQUIRED_INPUT_SETTINGS",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "Checkpointer",
    "LoadReport",
    "load_checked",
    "build_variant_backbone",
    "check_state_dict",
    "convert_resnest_checkpoint",
    "convert_resnest_state_dict",
    "load_torch_state_dict",
]
