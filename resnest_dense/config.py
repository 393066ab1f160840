"""Every config key of resnest_dense, and the one way a config is built from a file.

Key names follow the official detectron2-ResNeSt fork (Zhang et al., "ResNeSt: Split-Attention
Networks", 2020), so its YAML files merge unchanged after :func:`add_resnest_config`. Besides the
backbone keys this module adds the segmentation keys (dilated backbones, the reference DeepLabV3
head, PyTorch-Encoding style augmentation and multi-scale inference) and the tool keys.

:func:`get_resnest_cfg` is the config path of every tool: ``get_cfg`` -> these keys -> the file
-> the ``KEY VALUE`` options -> fork builder names. Tools add data registration and start-up
checks on top of it (:func:`resnest_dense.engine.load_config`). detectron2's Python LazyConfig
files (``configs/lazy/``) are read by :func:`get_lazy_cfg` (the file -> checked ``a.b=c``
overrides) on the same path (docs/configs.md).
"""

import difflib
import inspect
import logging
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import yaml
from detectron2.config import CfgNode, LazyConfig, get_cfg
from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigKeyError, MissingFileError, StartupError

__all__ = [
    "SEM_SEG_ARCHITECTURES",
    "add_resnest_config",
    "cfg_value",
    "class_count_keys",
    "score_thresh_key",
    "has_sem_seg_head",
    "is_semantic_segmentation",
    "add_resnest_segmentation_config",
    "get_lazy_cfg",
    "get_resnest_cfg",
    "is_lazy_config_file",
    "merge_config",
    "weights_override",
    "resolve_fork_backbone_name",
]

logger = logging.getLogger(__name__)

# detectron2's ResNet builders and the ResNeSt builders that take their place when a YAML file
# written for the official fork (which patched detectron2's builders in place) asks for RADIX > 1.
_FORK_BUILDER_NAMES = {
    "build_resnet_backbone": "build_resnest_backbone",
    "build_resnet_fpn_backbone": "build_resnest_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone": "build_retinanet_resnest_fpn_backbone",
}


def _set_default(node: CfgNode, key: str, value) -> None:
    if key not in node:
        node[key] = value


def add_resnest_config(cfg: CfgNode) -> CfgNode:
    """Add every key of this project to a detectron2 config (in place) and return ``cfg``.

    Backbone keys go to ``MODEL.RESNETS``; segmentation keys to ``MODEL.RESNETS``,
    ``MODEL.SEM_SEG_HEAD``, ``INPUT``, ``TEST.SEM_SEG`` and ``SOLVER``; tool keys are
    ``TEST.FAST_INFERENCE``, ``DATASETS.COCO_FORMAT`` / ``SEM_SEG_FORMAT``,
    ``DATALOADER.SKIP_CORRUPT_IMAGES``, ``SOLVER.CHECK_FINITE_LOSS`` and ``SOLVER.AMP.PRECISION``.
    Calling it twice (or after detectron2's ``add_deeplab_config``) is harmless: values already
    set are kept.
    """
    r = cfg.MODEL.RESNETS
    # Number of splits per cardinal group in split attention (1: sigmoid gate, >1: softmax).
    # As in the official fork, RADIX > 1 also switches on DEEP_STEM, AVD and AVG_DOWN.
    _set_default(r, "RADIX", 1)
    # Three 3x3 convs (stem_width, stem_width, 2*stem_width) instead of one 7x7 conv.
    _set_default(r, "DEEP_STEM", False)
    # Deep-stem width; 0 = the official per-depth width (32 for depth <= 50, 64 above).
    _set_default(r, "STEM_WIDTH", 0)
    # Strided 3x3 average pool instead of a strided 3x3 conv in downsampling blocks.
    _set_default(r, "AVD", False)
    # Put that pool before the split-attention conv (the "fast" variants) not after it.
    _set_default(r, "AVD_FIRST", False)
    # Shortcut downsamples with an average pool followed by a stride-1 1x1 conv.
    _set_default(r, "AVG_DOWN", False)
    # Channels per cardinal group for a 64-wide stage (the "d" in "2s2x40d").
    _set_default(r, "BOTTLENECK_WIDTH", 64)
    # DropBlock probability in res4/res5 (0 = off; the paper's detectors use 0).
    _set_default(r, "DROPBLOCK_PROB", 0.0)
    # Recompute block activations in backward instead of storing them (saves memory).
    _set_default(r, "GRAD_CHECKPOINT", False)
    _add_segmentation_keys(cfg)
    _add_tool_keys(cfg)
    return cfg


def _add_segmentation_keys(cfg: CfgNode) -> None:
    """Dilated backbones, the reference DeepLabV3 head, its augmentation and inference."""
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
    # Bilinear upsampling with align_corners=True, as PyTorch-Encoding does (mmsegmentation,
    # and so our DeepLabV3+ configs, use False).
    _set_default(h, "ALIGN_CORNERS", True)
    # SeparableDeepLabV3PlusHead: the finer feature its decoder fuses and that feature's width
    # after the 1x1 projection (res2 and 48 in DeepLabV3+).
    _set_default(h, "LOW_LEVEL_FEATURE", "res2")
    _set_default(h, "LOW_LEVEL_CHANNELS", 48)
    # Depthwise-separable 3x3 convs in the DeepLabV3+ ASPP and decoder (detectron2 DeepLab's key
    # and default; our DeepLabV3+ configs set True, as mmsegmentation's head).
    _set_default(h, "USE_DEPTHWISE_SEPARABLE_CONV", False)

    # Training augmentation of the reference: the long side is resized to BASE_SIZE times a
    # scale drawn uniformly from RANDOM_SCALE, then INPUT.CROP.SIZE is cropped (padded with
    # black pixels / ignore labels when the image is smaller) and INPUT.RANDOM_FLIP applied.
    _set_default(cfg.INPUT, "BASE_SIZE", 520)
    _set_default(cfg.INPUT, "RANDOM_SCALE", [0.5, 2.0])
    # > 0: mmsegmentation's random resize instead: the image is scaled by r * min(BASE_SIZE /
    # long side, BASE_SIZE_SHORT / short side), r uniform in RANDOM_SCALE (its img_scale
    # (BASE_SIZE, BASE_SIZE_SHORT) with ratio_range; (2048, 512) ADE20K, (2048, 1024) Cityscapes).
    _set_default(cfg.INPUT, "BASE_SIZE_SHORT", 0)
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


def _add_tool_keys(cfg: CfgNode) -> None:
    """Keys of the training / evaluation tools."""
    # Fold eval-mode batch norms into convs and use channels_last for --eval-only and the demos
    # (exact; resnest_dense.utils.optimize_for_inference). False runs the model as trained.
    _set_default(cfg.TEST, "FAST_INFERENCE", True)
    # COCO-format datasets to register before training, as [name, json_file, image_root]
    # triples, e.g. [["shapes_train", "data/train.json", "data/train"]]; the names can then be
    # used in DATASETS.TRAIN / DATASETS.TEST and are evaluated with COCO AP.
    _set_default(cfg.DATASETS, "COCO_FORMAT", [])
    # Semantic-segmentation folders to register, as [name, image_root, label_root] with
    # <label_root>/classes.json (resnest_dense.data.sem_seg_format); evaluated with mIoU.
    _set_default(cfg.DATASETS, "SEM_SEG_FORMAT", [])
    # Skip unreadable training images with a counted warning instead of failing.
    _set_default(cfg.DATALOADER, "SKIP_CORRUPT_IMAGES", False)
    # Stop with a clear error when a loss becomes NaN/inf (iteration and loss terms named).
    _set_default(cfg.SOLVER, "CHECK_FINITE_LOSS", True)
    # Autocast dtype of SOLVER.AMP.ENABLED training: "bfloat16", "float16", or "" for bfloat16
    # on the CPU and float16 on CUDA (resnest_dense.engine.amp).
    _set_default(cfg.SOLVER.AMP, "PRECISION", "")


# Kept for code written against earlier releases, where the segmentation keys had their own
# function; add_resnest_config adds them all.
add_resnest_segmentation_config = add_resnest_config


def merge_config(cfg: CfgNode, config_file: Optional[str], opts: Sequence[str] = ()) -> CfgNode:
    """``merge_from_file`` + ``merge_from_list`` with errors that name the key and its source.

    Raises:
        MissingFileError: ``config_file`` does not exist.
        ConfigKeyError: an unknown key, naming the file or the command line it came from.
        StartupError: the file is not valid YAML, or a value has the wrong type.
    """
    if config_file is not None:
        if not config_file:
            raise StartupError("No config file given: pass --config-file configs/<...>.yaml")
        if not os.path.isfile(config_file):
            raise MissingFileError(f"Config file {config_file!r} does not exist")
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:
            message = e.args[0] if e.args else e
            raise ConfigKeyError(f"{message} (in config file {config_file})") from e
        except ValueError as e:  # yacs: a value of the wrong type
            raise StartupError(f"{e} (in config file {config_file})") from e
        except yaml.YAMLError as e:  # names the file (or its _BASE_) and the line
            raise StartupError(
                f"Config file {config_file!r} is not valid YAML: {e}. Fix the file (an "
                "unclosed bracket or quote, or a tab in the indentation, are the usual causes)."
            ) from e
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as e:  # yacs asserts on unknown keys in a list
        message = e.args[0] if e.args else e
        raise ConfigKeyError(f"{message} (in the command-line options)") from e
    except ValueError as e:  # yacs: a value of the wrong type
        raise StartupError(f"{e} (in the command-line options)") from e
    return cfg


def get_resnest_cfg(config_file: Optional[str] = None, opts: Sequence[str] = ()) -> CfgNode:
    """A mutable detectron2 config with every key of this project, ``config_file`` and ``opts``
    merged and fork builder names resolved (:func:`resolve_fork_backbone_name`).

    Args:
        config_file: a YAML file; None gives detectron2's defaults plus our keys.
        opts: trailing ``KEY VALUE`` overrides.
    """
    cfg = add_resnest_config(get_cfg())
    merge_config(cfg, config_file, opts)
    resolve_fork_backbone_name(cfg)
    r = cfg.MODEL.RESNETS
    if r.RADIX > 1 and "resnest" in cfg.MODEL.BACKBONE.NAME:
        # The builders imply the full ResNeSt recipe for RADIX > 1 (as the fork does); say so in
        # the config, so the saved config.yaml describes the network that was built.
        r.DEEP_STEM = r.AVD = r.AVG_DOWN = True
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


# Meta-architectures whose output is a per-pixel class map (the DeepLabV3 recipe of this project).
SEM_SEG_ARCHITECTURES = ("SemanticSegmentor", "MultiScaleSemanticSegmentor")
# Per meta-architecture, the key of the number of "thing" classes the model predicts.
_THING_CLASS_KEYS = {
    "GeneralizedRCNN": "MODEL.ROI_HEADS.NUM_CLASSES",
    "PanopticFPN": "MODEL.ROI_HEADS.NUM_CLASSES",
    "RetinaNet": "MODEL.RETINANET.NUM_CLASSES",
}


def cfg_value(cfg: CfgNode, dotted: str):
    """The value of a dotted key, e.g. ``cfg_value(cfg, "MODEL.ROI_HEADS.NUM_CLASSES")``."""
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def is_semantic_segmentation(cfg: CfgNode) -> bool:
    """True for configs whose model is a (multi-scale) semantic segmentor."""
    return cfg.MODEL.META_ARCHITECTURE in SEM_SEG_ARCHITECTURES


def has_sem_seg_head(cfg: CfgNode) -> bool:
    """True when the model predicts a per-pixel class map trained on label PNGs (semantic
    segmentors, and Panoptic FPN's stuff head)."""
    return is_semantic_segmentation(cfg) or cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"


def class_count_keys(cfg: CfgNode) -> List[Tuple[str, str]]:
    """``(config key, dataset metadata attribute)`` pairs that must agree for ``cfg``'s model,
    e.g. ``[("MODEL.ROI_HEADS.NUM_CLASSES", "thing_classes")]``; empty for class-agnostic or
    unknown meta-architectures. The first pair is the model's main output."""
    arch = cfg.MODEL.META_ARCHITECTURE
    keys = []
    if arch in _THING_CLASS_KEYS:
        keys.append((_THING_CLASS_KEYS[arch], "thing_classes"))
    if has_sem_seg_head(cfg):
        keys.append(("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff_classes"))
    return keys


def score_thresh_key(cfg: CfgNode) -> str:
    """The key of the test score threshold of ``cfg``'s detector: RetinaNet has its own
    (``MODEL.RETINANET.SCORE_THRESH_TEST``), the R-CNNs read ``MODEL.ROI_HEADS``'."""
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        return "MODEL.RETINANET.SCORE_THRESH_TEST"
    return "MODEL.ROI_HEADS.SCORE_THRESH_TEST"


def is_lazy_config_file(config_file: Optional[str]) -> bool:
    """True for a detectron2 LazyConfig (Python) file, False for a YAML file."""
    return bool(config_file) and config_file.endswith(".py")


def weights_override(config_file: Optional[str], weights: str) -> List[str]:
    """The command-line override that sets the weights of ``config_file``'s model to
    ``weights`` ("" for none), in the config's own form: ``MODEL.WEIGHTS <w>`` for a YAML file,
    ``train.init_checkpoint=<w>`` for a LazyConfig."""
    if is_lazy_config_file(config_file):
        return [f"train.init_checkpoint={weights}"]
    return ["MODEL.WEIGHTS", weights]


def _dotted_keys(node, prefix: str = "") -> Iterator[str]:
    items = node.items() if isinstance(node, DictConfig) else enumerate(node)
    for key, value in items:
        dotted = f"{prefix}{key}"
        yield dotted
        if isinstance(value, (DictConfig, ListConfig)):
            yield from _dotted_keys(value, dotted + ".")


def _accepts(node, name: str) -> bool:
    """Whether ``node``, a ``LazyCall`` (with ``_target_``), takes a keyword argument ``name``
    it does not set yet (detectron2 fills unset arguments with their defaults)."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return False
    target = node._target_
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        target = locate(target)
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let instantiate decide
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def get_lazy_cfg(config_file: str, overrides: Sequence[str] = ()) -> DictConfig:
    """A detectron2 LazyConfig loaded from ``config_file`` with ``a.b=c`` overrides applied.

    Unlike detectron2's ``LazyConfig.apply_overrides``, an override must name an existing key,
    or an argument the ``LazyCall`` it belongs to accepts (e.g. ``model.backbone.bottom_up.
    dropblock_prob=0.1``), so a typo fails instead of adding a key nothing reads.

    Raises:
        MissingFileError: ``config_file`` does not exist.
        StartupError: the file does not load (its Python error named), or an override is not of
            the form ``a.b=c``.
        ConfigKeyError: an override names a key the config does not have (closest keys named).
    """
    if not os.path.isfile(config_file):
        raise MissingFileError(f"Config file {config_file!r} does not exist")
    try:
        cfg = LazyConfig.load(config_file)
    except Exception as e:  # the file is Python: any error in it is the config's
        cause = e.__cause__ if isinstance(e.__cause__, SyntaxError) else e
        where = f"line {cause.lineno}: " if isinstance(cause, SyntaxError) else ""
        what = cause.msg if isinstance(cause, SyntaxError) else f"{type(cause).__name__}: {cause}"
        raise StartupError(
            f"LazyConfig file {config_file!r} cannot be loaded: {where}{what}. Fix the file "
            "(it is Python, run by detectron2's LazyConfig.load)."
        ) from e
    keys = None
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key:
            raise StartupError(
                f"LazyConfig override {override!r} is not of the form dotted.key=value (e.g. "
                "train.max_iter=100 train.init_checkpoint=path/model.pth); the KEY VALUE form "
                f"is for YAML configs (config file {config_file})."
            )
        if OmegaConf.select(cfg, key, default=_NO_KEY, throw_on_missing=False) is not _NO_KEY:
            continue
        parent, _, name = key.rpartition(".")
        if parent and _accepts(OmegaConf.select(cfg, parent, default=None), name):
            continue
        keys = keys if keys is not None else list(_dotted_keys(cfg))
        close = difflib.get_close_matches(key, keys, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigKeyError(
            f"Override {override!r}: {config_file} has no key {key!r}.{hint} List the keys "
            f'with python -c "from detectron2.config import LazyConfig; '
            f"print(LazyConfig.to_py(LazyConfig.load('{config_file}')))\""
        )
    return LazyConfig.apply_overrides(cfg, list(overrides))


_NO_KEY = object()
