"""Dilated (output stride 8 / 16) ResNeSt and ResNet backbones for semantic segmentation.

The ResNeSt paper's ADE20K numbers (DeepLabV3, Zhang et al. 2020) come from PyTorch-Encoding,
whose dilated networks differ from detectron2's ``RES5_DILATION`` in two ways, both reproduced
here:

* the first block of a dilated stage runs at the next lower dilation (1 in a stage dilated by
  2, 2 in a stage dilated by 4), the following blocks at the stage dilation;
* in a ResNeSt, the first block of res3, res4 and res5 keeps its 3x3 average pool (``avd``)
  even where the stage has stride 1, as a stride-1 ``AvgPool2d(3, 1, 1)``.

Output stride 8 dilates res4/res5 by 2/4, output stride 16 dilates res5 by 2. The plain ResNet
baselines of the paper are PyTorch-Encoding's ``resnet50s`` / ``resnet101s``: detectron2
bottleneck blocks (stride in the 3x3 conv, 1x1-conv shortcut) behind the deep stem of width 64,
without avd or avg_down.
"""

import logging
from typing import List, Sequence, Tuple

from detectron2.layers import CNNBlockBase, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, ResNet
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock

from .resnest import DeepStem, _stage_dilations, build_resnest, resnest_kwargs_from_config

__all__ = [
    "stage_dilations_for_output_stride",
    "make_dilated_resnet_stages",
    "build_resnest_dilated_backbone",
    "build_resnet_dilated_backbone",
]

logger = logging.getLogger(__name__)

# Dilation of res2..res5 for every supported output stride.
_OUTPUT_STRIDE_DILATIONS = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}

# Blocks per stage of the plain ResNet baselines.
_RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def stage_dilations_for_output_stride(output_stride: int) -> Tuple[int, int, int, int]:
    """Dilations of res2..res5 giving ``output_stride`` (8, 16 or 32)."""
    if output_stride not in _OUTPUT_STRIDE_DILATIONS:
        raise ValueError(
            f"MODEL.RESNETS.OUTPUT_STRIDE must be one of {sorted(_OUTPUT_STRIDE_DILATIONS)}, "
            f"got {output_stride}"
        )
    return _OUTPUT_STRIDE_DILATIONS[output_stride]


def make_dilated_resnet_stages(
    *,
    depth: int,
    in_channels: int,
    out_channels: int = 256,
    num_groups: int = 1,
    width_per_group: int = 64,
    norm: str = "BN",
    stride_in_1x1: bool = False,
    dilations: Sequence[int] = (1, 1, 2, 4),
    num_stages: int = 4,
) -> List[List[CNNBlockBase]]:
    """Stages res2..res5 of a plain (bottleneck) ResNet with reference-style dilation.

    Args:
        depth: 50, 101 or 152.
        in_channels: channels coming out of the stem (128 for the deep stem of width 64).
        out_channels: output channels of res2; doubled at every later stage.
        num_groups, width_per_group: the 3x3 conv of res2 has ``num_groups * width_per_group``
            channels, doubled at every later stage.
        norm: a detectron2 norm name for ``get_norm``.
        stride_in_1x1: put the stride in the first 1x1 conv (Caffe/MSRA style); the reference
            (torchvision style) has it in the 3x3 conv.
        dilations: dilation of res2..res5; a stage with dilation > 1 has stride 1 and its first
            block runs at the next lower dilation.
        num_stages: how many stages to build.

    Returns:
        One list of :class:`BottleneckBlock` per stage.
    """
    if depth not in _RESNET_DEPTHS:
        raise ValueError(f"ResNet depth {depth} is not one of {sorted(_RESNET_DEPTHS)}")
    bottleneck_channels = num_groups * width_per_group
    stages = []
    for idx, num_blocks in enumerate(_RESNET_DEPTHS[depth][:num_stages]):
        first_stride = 1 if idx == 0 or dilations[idx] > 1 else 2
        stages.append(
            ResNet.make_stage(
                BottleneckBlock,
                num_blocks,
                in_channels=in_channels,
                out_channels=out_channels,
                bottleneck_channels=bottleneck_channels,
                stride_per_block=[first_stride] + [1] * (num_blocks - 1),
                dilation_per_block=_stage_dilations(dilations[idx], num_blocks, True),
                num_groups=num_groups,
                norm=norm,
                stride_in_1x1=stride_in_1x1,
            )
        )
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return stages


def _check_no_res5_dilation(cfg) -> None:
    if cfg.MODEL.RESNETS.RES5_DILATION != 1:
        raise ValueError(
            "The dilated backbones take their dilation from MODEL.RESNETS.OUTPUT_STRIDE "
            f"(8 or 16); leave MODEL.RESNETS.RES5_DILATION at 1, got "
            f"{cfg.MODEL.RESNETS.RES5_DILATION}."
        )


def _num_stages(out_features: Sequence[str]) -> int:
    return max(int(f[3:]) - 1 for f in out_features if f.startswith("res"))


@BACKBONE_REGISTRY.register()
def build_resnest_dilated_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNeSt with output stride ``MODEL.RESNETS.OUTPUT_STRIDE`` and reference dilation.

    Reads the keys of ``build_resnest_backbone`` (DEPTH, RADIX, DEEP_STEM, STEM_WIDTH, AVD,
    AVG_DOWN, ...) plus OUTPUT_STRIDE; needs :func:`resnest_dense.add_resnest_config`.
    """
    _check_no_res5_dilation(cfg)
    dilations = stage_dilations_for_output_stride(cfg.MODEL.RESNETS.OUTPUT_STRIDE)
    return build_resnest(
        in_channels=input_shape.channels,
        out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        dilations=dilations,
        reference_dilation=True,
        **resnest_kwargs_from_config(cfg),
    )


@BACKBONE_REGISTRY.register()
def build_resnet_dilated_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Plain bottleneck ResNet (``resnet50s``-style with DEEP_STEM) with reference dilation.

    Reads MODEL.RESNETS.DEPTH, DEEP_STEM, STEM_WIDTH (0 = 64), STEM_OUT_CHANNELS (7x7 stem),
    NUM_GROUPS, WIDTH_PER_GROUP, RES2_OUT_CHANNELS, STRIDE_IN_1X1, NORM, OUT_FEATURES,
    OUTPUT_STRIDE and MODEL.BACKBONE.FREEZE_AT. Split-attention keys must be off.
    """
    r = cfg.MODEL.RESNETS
    _check_no_res5_dilation(cfg)
    if r.RADIX > 1 or r.AVD or r.AVG_DOWN:
        raise ValueError(
            f"build_resnet_dilated_backbone builds a plain ResNet, but RADIX={r.RADIX}, "
            f"AVD={r.AVD}, AVG_DOWN={r.AVG_DOWN}; use build_resnest_dilated_backbone."
        )
    if r.DEEP_STEM:
        stem = DeepStem(input_shape.channels, r.STEM_WIDTH or 64, r.NORM)
    else:
        stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    stages = make_dilated_resnet_stages(
        depth=r.DEPTH,
        in_channels=stem.out_channels,
        out_channels=r.RES2_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        norm=r.NORM,
        stride_in_1x1=r.STRIDE_IN_1X1,
        dilations=stage_dilations_for_output_stride(r.OUTPUT_STRIDE),
        num_stages=_num_stages(r.OUT_FEATURES),
    )
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
