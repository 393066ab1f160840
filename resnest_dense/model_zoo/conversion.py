"""Released weight files as detectron2 checkpoints: :func:`resolve_weights`.

detectron2-format releases (the detectron2-ResNeSt detectors) load as published. ImageNet
classifiers (official ResNeSt, PyTorch-Encoding ResNet-D) and PyTorch-Encoding DeepLabV3 / FCN files are
converted once into detectron2 names, checked strictly (names and shapes) against the network
they are meant for, and cached as ``<cache>/converted/<file stem>.d2.pth``.

The network of a registry entry's config is built here from the config file itself
(:func:`resnest_dense.config.get_resnest_cfg`), not through :mod:`.model_zoo`, which depends on
the registry: the dependencies run one way, model_zoo -> registry and conversion -> config_files.
"""

import logging
import os
from typing import Dict, Optional

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

from ..checkpoint import (
    build_variant_backbone,
    check_state_dict,
    convert_resnest_state_dict,
    load_torch_state_dict,
)
from ..checkpoint.encoding import (
    convert_encoding_backbone_state_dict,
    convert_encoding_segmentation_state_dict,
)
from ..config import get_resnest_cfg

# Registers every builder our configs name (dilated backbones, DeepLabV3 head, segmentor).
from ..modeling import meta_arch, sem_seg_heads  # noqa: F401
from ..modeling.backbone.dilated import build_resnet_dilated_backbone
from ..utils.io import atomic_write
from .config_files import get_config_file
from .registry import SCHEME, WeightEntry, get_entry
from .store import WeightsNotFoundError, cache_dir, fetch

__all__ = ["convert", "resolve_weights"]

logger = logging.getLogger(__name__)


def _variant_backbone_state(entry: WeightEntry) -> Dict[str, torch.Tensor]:
    """Names and shapes (meta tensors) of the backbone an ImageNet entry initialises."""
    with torch.device("meta"):
        if entry.format == "resnest_official":
            return build_variant_backbone(entry.variant).state_dict()
        depth = int(entry.variant.replace("resnet", "").rstrip("s"))
        cfg = get_resnest_cfg()
        cfg.MODEL.RESNETS.merge_from_list(
            ["DEPTH", depth, "DEEP_STEM", True, "STEM_WIDTH", 64, "NORM", "FrozenBN"]
        )
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        return build_resnet_dilated_backbone(cfg, ShapeSpec(channels=3)).state_dict()


def _config_model_state(config_name: str) -> Dict[str, torch.Tensor]:
    """Names and shapes (meta tensors) of the model built from one of our configs."""
    cfg = get_resnest_cfg(get_config_file(config_name))
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg).state_dict()


def convert(entry: WeightEntry, src: str, dst: str) -> str:
    """Convert the released file ``src`` of ``entry`` to a detectron2 checkpoint ``dst``.

    The result is checked (names and shapes, strictly) against the network it is meant for
    before it is written atomically.
    """
    state = load_torch_state_dict(src)
    if entry.format in ("encoding_deeplab", "encoding_fcn"):
        model = entry.format[len("encoding_") :]
        converted, _ = convert_encoding_segmentation_state_dict(state, model)
        if entry.config:
            check_state_dict(converted, _config_model_state(entry.config), what=src)
        # Full model names: load strictly.
        heuristics = False
    else:
        if entry.format == "resnest_official":
            converted, _ = convert_resnest_state_dict(state)
        else:
            converted, _ = convert_encoding_backbone_state_dict(state)
        check_state_dict(converted, _variant_backbone_state(entry), what=src)
        # Backbone names without a prefix: detectron2 matches them to backbone.bottom_up.*
        # (FPN) or backbone.* (dilated) by suffix, as it does for its own ImageNet models.
        heuristics = True
    checkpoint = {
        "model": converted,
        "__author__": "resnest_dense",
        "matching_heuristics": heuristics,
        "converted_from": entry.file,
    }
    atomic_write(dst, lambda f: torch.save(checkpoint, f))
    logger.info("Converted %s (%s) to %s", src, entry.format, dst)
    return dst


def resolve_weights(
    name_or_path: str,
    download: Optional[bool] = None,
    registry: Optional[Dict[str, WeightEntry]] = None,
) -> str:
    """Local path of a detectron2-loadable checkpoint for a path, registry name or URI.

    Args:
        name_or_path: an existing local file (returned unchanged), a registry name
            (``resnest50``, ``faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x``), a published
            file name (``resnest50-528c19ca.pth``) or ``resnest://`` followed by either.
        download: allow downloading; None means "unless ``RESNEST_DENSE_OFFLINE`` is set".
        registry: an alternative registry (``load_registry(path)``); default
            :func:`~.registry.default_registry`.

    Returns:
        For detectron2-format entries the verified released file; for ImageNet and
        PyTorch-Encoding entries the converted checkpoint cached as
        ``<cache>/converted/<file stem>.d2.pth``.

    Raises:
        WeightsNotFoundError: not on disk and not downloadable (the message gives the URL(s)
            and the exact path to put the file at), or neither a file nor a registry name.
        ChecksumMismatchError: a found or downloaded file has the wrong hash.
    """
    if not name_or_path.startswith(SCHEME) and os.path.isfile(os.path.expanduser(name_or_path)):
        return os.path.expanduser(name_or_path)
    try:
        entry = get_entry(name_or_path, registry)
    except KeyError as e:
        raise WeightsNotFoundError(f"{name_or_path} is not a file; {e.args[0]}") from None
    if not entry.needs_conversion:
        return fetch(entry, download)
    stem = os.path.splitext(entry.file)[0]
    dst = os.path.join(cache_dir(), "converted", f"{stem}.d2.pth")
    if os.path.isfile(dst):
        return dst
    return convert(entry, fetch(entry, download), dst)
