"""Config keys for semantic segmentation: dilated backbones, the reference DeepLabV3 head,
PyTorch-Encoding style training augmentation and multi-scale / sliding-window inference.

Call :func:`add_resnest_segmentation_config` after :func:`resnest_dense.add_resnest_config`
(it only adds keys that are missing, so calling it twice, or after detectron2's
``add_deeplab_config``, is harmless).
"""

from detectron2.config import CfgNode

__all__ = ["add_resnest_segmentation_config"]


def _set_default(node: CfgNode, key: str, value) -> None:
    if key not in node:
        node[key] = value


def add_resnest_segmentation_config(cfg: CfgNode) -> CfgNode:
    """Add the segmentation keys (in place) and return ``cfg``; values already set are kept."""
    r = cfg.MODEL.RESNETS
    # Output stride of the dilated backbones (8: res4/res5 dilated 2/4; 16: res5 dilated 2;
    # 32: no dilation). Read by build_resnest_dilated_backbone / build_resnet_dilated_backbone.
    _set_default(r, "OUTPUT_STRIDE", 8)

    h = cfg.MODEL.SEM_SEG_HEAD
    # ASPP rates at output stride 8; scaled by 8 / stride of the input feature (halved at OS16).
    _set_default(h, "ATROUS_RATES", [12, 24, 36])
    # Feature for the auxiliary FCN head ("" disables it) and its loss weight.
    _set_default(h, "AUX_IN_FEATURE", "res4")
    _set_default(h, "AUX_LOSS_WEIGHT", 0.2)
    # Width of the auxiliary head's 3x3 conv (the reference uses in_channels / 4 = 256).
    _set_default(h, "AUX_CONVS_DIM", 256)
    # Bilinear upsampling with align_corners=True, as PyTorch-Encoding does.
    _set_default(h, "ALIGN_CORNERS", True)

    # Training augmentation of the reference: the long side is resized to BASE_SIZE times a
    # scale drawn uniformly from RANDOM_SCALE, then INPUT.CROP.SIZE is cropped (padded with
    # black pixels / ignore labels when the image is smaller) and INPUT.RANDOM_FLIP applied.
    _set_default(cfg.INPUT, "BASE_SIZE", 520)
    _set_default(cfg.INPUT, "RANDOM_SCALE", [0.5, 2.0])
    # Probability of a Gaussian blur of radius U(0, 1) on a training crop (0.5 in the reference).
    _set_default(cfg.INPUT, "BLUR_PROB", 0.0)

    # Inference of MultiScaleSemanticSegmentor. Single scale: SCALES [1.0], FLIP False.
    # The reference multi-scale + flip: SCALES [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], FLIP True.
    cfg.TEST.SEM_SEG = CfgNode() if "SEM_SEG" not in cfg.TEST else cfg.TEST.SEM_SEG
    t = cfg.TEST.SEM_SEG
    _set_default(t, "SCALES", [1.0])
    # Also average with the horizontally flipped image.
    _set_default(t, "FLIP", False)
    # Long side at scale 1.0 (0 = keep the size given by the test mapper, scale it by SCALES).
    _set_default(t, "BASE_SIZE", 0)
    # Sliding-window size; images whose long side exceeds it are tiled, smaller ones padded
    # to it (0 = run on the whole image).
    _set_default(t, "CROP_SIZE", 0)
    # Window step as a fraction of CROP_SIZE (2/3 in the reference).
    _set_default(t, "STRIDE_RATE", 2.0 / 3.0)

    # The learning rate of the segmentation head (ASPP, classifier and auxiliary head) is
    # multiplied by this; the reference trains heads at 10x the backbone rate.
    _set_default(cfg.SOLVER, "HEAD_LR_MULTIPLIER", 1.0)
    # Poly schedule keys, as in detectron2's add_deeplab_config (used by WarmupPolyLR).
    _set_default(cfg.SOLVER, "POLY_LR_POWER", 0.9)
    _set_default(cfg.SOLVER, "POLY_LR_CONSTANT_ENDING", 0.0)
    return cfg
