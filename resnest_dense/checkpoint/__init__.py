"""Weight conversion into detectron2 names."""

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
    "build_variant_backbone",
    "check_state_dict",
    "convert_resnest_checkpoint",
    "convert_resnest_state_dict",
    "load_torch_state_dict",
]
