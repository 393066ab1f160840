"""ResNeSt backbones; importing this module registers them in detectron2's BACKBONE_REGISTRY."""

from .dilated import (
    build_resnest_dilated_backbone,
    build_resnet_dilated_backbone,
    stage_dilations_for_output_stride,
)
from .fpn import build_resnest_fpn_backbone, build_retinanet_resnest_fpn_backbone
from .resnest import (
    RESNEST_DEPTHS,
    DeepStem,
    ResNeStBottleneckBlock,
    build_resnest,
    build_resnest_backbone,
    make_resnest_stages,
)

__all__ = [
    "RESNEST_DEPTHS",
    "DeepStem",
    "ResNeStBottleneckBlock",
    "build_resnest",
    "build_resnest_backbone",
    "build_resnest_dilated_backbone",
    "build_resnet_dilated_backbone",
    "stage_dilations_for_output_stride",
    "build_resnest_fpn_backbone",
    "build_retinanet_resnest_fpn_backbone",
    "make_resnest_stages",
]
