"""detectron2-style model zoo over this project's configs.

Names are paths relative to ``configs/`` (for example
``"COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml"``). The files are read
from ``resnest_dense/model_zoo/configs`` (a link to the repository's ``configs/`` in a source
checkout, a copy in an installed wheel) or, failing that, from ``configs/`` next to the package.
"""

import logging
import os
from typing import List, Optional

import torch
from detectron2.config import CfgNode

# Registers every builder our configs name (dilated backbones, DeepLabV3 head, segmentor).
from ..modeling import meta_arch, sem_seg_heads  # noqa: F401
from ..modeling.backbone import dilated  # noqa: F401
from .weights import SCHEME, weights_for_config

__all__ = ["config_root", "list_configs", "get_config_file", "get_config", "get"]

logger = logging.getLogger(__name__)

_HERE = os.path.dirname(os.path.abspath(__file__))


def config_root() -> str:
    """The directory holding the config tree (``COCO-Detection/``, ``ADE20K-.../``, ...)."""
    for candidate in (
        os.path.join(_HERE, "configs"),
        os.path.join(os.path.dirname(os.path.dirname(_HERE)), "configs"),
    ):
        if os.path.isdir(candidate):
            return candidate
    raise RuntimeError(
        "resnest_dense configs not found: neither resnest_dense/model_zoo/configs nor the "
        "repository's configs/ exists. Reinstall the package (package_data) or run from a "
        "source checkout."
    )


def list_configs() -> List[str]:
    """All config names (relative paths), sorted; ``Base-*`` files excluded."""
    root = config_root()
    names = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            if f.endswith(".yaml") and not f.startswith("Base-"):
                names.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(n.replace(os.sep, "/") for n in names)


def get_config_file(config_path: str) -> str:
    """Absolute path of a config given its name relative to ``configs/``.

    Raises:
        RuntimeError: no such config; the message lists the available ones.
    """
    path = os.path.join(config_root(), config_path)
    if not os.path.isfile(path):
        raise RuntimeError(
            f"{config_path} not available in the resnest_dense model zoo. Available: "
            + ", ".join(list_configs())
        )
    return path


def get_config(config_path: str, trained: bool = False) -> CfgNode:
    """A detectron2 config for one of our configs, with the ResNeSt keys added.

    Args:
        config_path: name relative to ``configs/``.
        trained: set ``MODEL.WEIGHTS`` to the released trained model of this config (a
            ``resnest://`` registry URI); without it the config's own weights (ImageNet
            initialisation or none) are kept.

    Raises:
        RuntimeError: unknown config, or ``trained=True`` and no released model exists.
    """
    from ..config import get_resnest_cfg

    cfg = get_resnest_cfg(get_config_file(config_path))
    if trained:
        released = weights_for_config(config_path)
        if not released:
            raise RuntimeError(
                f"No released trained model corresponds to {config_path}; train it with "
                f"tools/train_net.py (see docs/results.md)."
            )
        cfg.MODEL.WEIGHTS = SCHEME + released[0].name
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None) -> torch.nn.Module:
    """Build the model of a config, with released weights loaded when ``trained``.

    Args:
        config_path: name relative to ``configs/``.
        trained: load the released trained model (see :func:`get_config`); loading fails
            unless every parameter of the model is in the checkpoint with the right shape.
        device: ``"cpu"``, ``"cuda"``...; default: cuda when available, else cpu.

    Returns:
        The model in eval mode. SyncBN layers act as plain BN outside distributed training.
    """
    from detectron2.modeling import build_model

    from ..checkpoint import load_checked

    cfg = get_config(config_path, trained=trained)
    cfg.MODEL.DEVICE = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_checked(model, cfg.MODEL.WEIGHTS, strict=trained)
    return model.eval()
