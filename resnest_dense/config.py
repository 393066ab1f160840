"""Config keys for ResNeSt backbones (Zhang et al., "ResNeSt: Split-Attention Networks", 2020).

Key names follow the official detectron2-ResNeSt fork, so its YAML files merge unchanged
after :func:`add_resnest_config`.
"""

import logging

from detectron2.config import CfgNode

logger = logging.getLogger(__name__)

# detectron2's ResNet builders and the ResNeSt builders that take their place when a YAML file
# written for the official fork (which patched detectron2's builders in place) asks for RADIX > 1.
_FORK_BUILDER_NAMES = {
    "build_resnet_backbone": "build_resnest_backbone",
    "build_resnet_fpn_backbone": "build_resnest_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone": "build_retinanet_resnest_fpn_backbone",
}


def add_resnest_config(cfg: CfgNode) -> CfgNode:
    """Add every key of this project to a detectron2 config (in place) and return ``cfg``.

    The ResNeSt backbone keys go to ``cfg.MODEL.RESNETS``; the segmentation keys
    (:func:`~resnest_dense.config_segmentation.add_resnest_segmentation_config`) and the tool keys
    (``TEST.FAST_INFERENCE``, ``DATASETS.COCO_FORMAT``, ``DATALOADER.SKIP_CORRUPT_IMAGES``,
    ``SOLVER.CHECK_FINITE_LOSS``) are added too. Calling it twice is harmless; values already
    set are kept.
    """
    r = cfg.MODEL.RESNETS
    defaults = {
        # Number of splits per cardinal group in split attention (1: sigmoid gate, >1: softmax).
        # As in the official fork, RADIX > 1 also switches on DEEP_STEM, AVD and AVG_DOWN.
        "RADIX": 1,
        # Three 3x3 convs (stem_width, stem_width, 2*stem_width) instead of one 7x7 conv.
        "DEEP_STEM": False,
        # Deep-stem width; 0 = the official per-depth width (32 for depth <= 50, 64 above).
        "STEM_WIDTH": 0,
        # Strided 3x3 average pool instead of a strided 3x3 conv in downsampling blocks.
        "AVD": False,
        # Put that pool before the split-attention conv (the "fast" variants) not after it.
        "AVD_FIRST": False,
        # Shortcut downsamples with an average pool followed by a stride-1 1x1 conv.
        "AVG_DOWN": False,
        # Channels per cardinal group for a 64-wide stage (the "d" in "2s2x40d").
        "BOTTLENECK_WIDTH": 64,
        # DropBlock probability in res4/res5 (0 = off; the paper's detectors use 0).
        "DROPBLOCK_PROB": 0.0,
        # Recompute block activations in backward instead of storing them (saves memory).
        "GRAD_CHECKPOINT": False,
    }
    for key, value in defaults.items():
        if key not in r:
            r[key] = value
    # Training robustness: skip unreadable images with a counted warning instead of failing.
    if "SKIP_CORRUPT_IMAGES" not in cfg.DATALOADER:
        cfg.DATALOADER.SKIP_CORRUPT_IMAGES = False
    # Stop with a clear error when a loss becomes NaN/inf (iteration and loss terms named).
    if "CHECK_FINITE_LOSS" not in cfg.SOLVER:
        cfg.SOLVER.CHECK_FINITE_LOSS = True

    # Segmentation (dilated backbones, DeepLabV3, multi-scale test) and tool keys.
    from .config_segmentation import add_resnest_segmentation_config
    from .engine.config import add_resnest_engine_config

    add_resnest_segmentation_config(cfg)
    add_resnest_engine_config(cfg)
    return cfg


def resolve_fork_backbone_name(cfg: CfgNode) -> CfgNode:
    """Point a fork-style YAML at the ResNeSt builders (in place; ``cfg`` must be mutable).

    The official detectron2-ResNeSt fork replaced detectron2's ``build_resnet_*`` builders, so
    its ResNeSt YAML files name ``build_resnet_fpn_backbone`` and set ``RADIX: 2``. On stock
    detectron2 that would silently build a plain ResNet; here the name is switched to the
    matching ResNeSt builder and the switch is logged.
    """
    name = cfg.MODEL.BACKBONE.NAME
    if name not in _FORK_BUILDER_NAMES:
        return cfg
    r = cfg.MODEL.RESNETS
    if r.RADIX <= 1 and (r.DEEP_STEM or r.AVD or r.AVG_DOWN):
        raise ValueError(
            f"MODEL.BACKBONE.NAME={name} with RADIX={r.RADIX} and DEEP_STEM={r.DEEP_STEM}, "
            f"AVD={r.AVD}, AVG_DOWN={r.AVG_DOWN}: detectron2's ResNet has no deep stem, avd or "
            f"avg_down. Use MODEL.BACKBONE.NAME={_FORK_BUILDER_NAMES[name]} (split attention) "
            "or set those keys to False."
        )
    if r.RADIX > 1:
        new = _FORK_BUILDER_NAMES[name]
        logger.warning(
            "MODEL.BACKBONE.NAME=%s with ResNeSt keys (RADIX=%d, DEEP_STEM=%s, AVD=%s, "
            "AVG_DOWN=%s): a config written for the detectron2-ResNeSt fork; using %s.",
            name,
            cfg.MODEL.RESNETS.RADIX,
            cfg.MODEL.RESNETS.DEEP_STEM,
            cfg.MODEL.RESNETS.AVD,
            cfg.MODEL.RESNETS.AVG_DOWN,
            new,
        )
        cfg.MODEL.BACKBONE.NAME = new
    return cfg
