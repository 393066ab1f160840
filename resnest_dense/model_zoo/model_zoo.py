"""detectron2-style model zoo over this project's configs: a config or a model by config name.

Names are paths relative to ``configs/`` (for example
``"COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml"``); the files are found
by :mod:`.config_files`, the released weights of a config by :mod:`.registry`.
"""

import logging
from typing import Optional

import torch
from detectron2.config import CfgNode

# Registers every builder our configs name (dilated backbones, DeepLabV3 head, segmentor).
from ..modeling import meta_arch, sem_seg_heads  # noqa: F401
from ..modeling.backbone import dilated  # noqa: F401
from .config_files import get_config_file
from .registry import SCHEME, weights_for_config

__all__ = ["get_config", "get"]

logger = logging.getLogger(__name__)


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
