"""ResNeSt + detectron2's FPN, for Faster/Mask/Cascade R-CNN (P2-P6) and RetinaNet (P3-P7)."""

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from .resnest import build_resnest_backbone

__all__ = ["build_resnest_fpn_backbone", "build_retinanet_resnest_fpn_backbone"]


def _fpn(cfg, bottom_up, top_block) -> FPN:
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_resnest_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNeSt-FPN with a max-pooled P6: the R-CNN backbone."""
    return _fpn(cfg, build_resnest_backbone(cfg, input_shape), LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_resnest_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNeSt-FPN with P6/P7 convs on C5 (res5): the RetinaNet backbone (P3-P7), laid out as
    detectron2's ``build_retinanet_resnet_fpn_backbone`` (the ResNet baselines') and as the
    official fork, which patched that builder, so a ResNeSt / ResNet pair differs only in the
    bottom-up network."""
    bottom_up = build_resnest_backbone(cfg, input_shape)
    c5 = bottom_up.output_shape()["res5"].channels
    return _fpn(cfg, bottom_up, LastLevelP6P7(c5, cfg.MODEL.FPN.OUT_CHANNELS, "res5"))
