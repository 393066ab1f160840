"""Convert PyTorch-Encoding checkpoints (DeepLabV3 / FCN, ``resnet*s`` ImageNet) to our names.

PyTorch-Encoding (Zhang et al.) trained the ResNeSt paper's ADE20K DeepLabV3 models and the
released PASCAL Context ones (``deeplab_resnest*_pcontext``: the same layout with 59-class
classifiers in ``head.block.4`` and ``auxlayer.conv5.4``; the class count is checked against
the config's ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` when the converted names are compared with the
model). Its ``DeepLabV3`` keeps the dilated backbone under ``pretrained.`` (official ResNeSt
names: ``conv1.0``, ``layer1.0.conv2.fc1``, ...), the head under ``head.aspp.b0..b4``,
``head.aspp.project``, ``head.block`` and the auxiliary FCN head under ``auxlayer.conv5``. Our
:class:`~resnest_dense.modeling.sem_seg_heads.EncodingDeepLabV3Head` keeps the reference's
``nn.Sequential`` indices, so the head converts by prefix and the backbone goes through
:func:`~resnest_dense.checkpoint.convert_resnest_state_dict`. Encoding's ``FCN`` (released as
``fcn_resnest50_ade``) has its main head under ``head.conv5``, which becomes
:class:`~resnest_dense.modeling.sem_seg_heads.EncodingFCNHead`'s ``sem_seg_head.fcn.conv5``.

The plain ResNet baselines (``resnet50s``/``resnet101s``: deep stem, torchvision bottlenecks)
use ``bn2`` after the 3x3 conv, which ResNeSt blocks do not have; it becomes ``conv2.norm``.

Every name must match a rule; anything else raises :class:`CheckpointMismatchError`.
"""

import logging
import os
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .convert import CheckpointMismatchError, _format_keys, convert_resnest_state_dict

__all__ = [
    "convert_encoding_backbone_state_dict",
    "convert_encoding_deeplab_state_dict",
    "convert_encoding_deeplab_checkpoint",
    "convert_encoding_fcn_state_dict",
    "convert_encoding_segmentation_state_dict",
]

logger = logging.getLogger(__name__)

# PyTorch-Encoding head name -> our sem_seg_head name (the Sequential indices are kept).
_HEAD_RULES = [
    (r"^head\.aspp\.(b[0-3])\.([01])\.(.+)$", r"sem_seg_head.aspp.\1.\2.\3"),
    (r"^head\.aspp\.b4\.gap\.([12])\.(.+)$", r"sem_seg_head.aspp.b4.gap.\1.\2"),
    (r"^head\.aspp\.project\.([01])\.(.+)$", r"sem_seg_head.aspp.project.\1.\2"),
    (r"^head\.block\.([014])\.(.+)$", r"sem_seg_head.block.\1.\2"),
    (r"^auxlayer\.conv5\.([014])\.(.+)$", r"sem_seg_head.auxlayer.conv5.\1.\2"),
]
# Encoding's FCN: the main FCNHead on res5 ("head.conv5"); the auxiliary head as in DeepLabV3.
_FCN_HEAD_RULES = [
    (r"^head\.conv5\.([014])\.(.+)$", r"sem_seg_head.fcn.conv5.\1.\2"),
    _HEAD_RULES[-1],
]
_LAYOUTS = {
    "deeplab": (
        _HEAD_RULES,
        "DeepLabV3 (pretrained.*, head.aspp.b0..b4, head.aspp.project, head.block, "
        "auxlayer.conv5)",
    ),
    "fcn": (_FCN_HEAD_RULES, "FCN (pretrained.*, head.conv5, auxlayer.conv5)"),
}
_BN2 = re.compile(r"^layer([1-4])\.(\d+)\.bn2\.(.+)$")


def convert_encoding_backbone_state_dict(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a PyTorch-Encoding ResNeSt or ``resnet*s`` backbone to detectron2 names.

    Args:
        state_dict: backbone parameters with official names (no ``pretrained.`` prefix).
        prefix: prepended to every output name (``"backbone."`` for DeepLabV3).

    Returns:
        The renamed tensors and the dropped names (classifier, BN counters).

    Raises:
        CheckpointMismatchError: a name that fits no rule.
    """
    plain_bn2 = {}
    rest = {}
    for name, tensor in state_dict.items():
        m = _BN2.match(name)
        if m:
            stage, block, leaf = int(m.group(1)) + 1, m.group(2), m.group(3)
            plain_bn2[f"{prefix}res{stage}.{block}.conv2.norm.{leaf}"] = tensor
        else:
            rest[name] = tensor
    out, dropped = convert_resnest_state_dict(rest, prefix)
    for name in [k for k in plain_bn2 if k.endswith("num_batches_tracked")]:
        dropped.append(name)
        del plain_bn2[name]
    out.update(plain_bn2)
    return out, dropped


def convert_encoding_segmentation_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: str
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a PyTorch-Encoding ``DeepLabV3`` or ``FCN`` state dict to our names.

    Args:
        state_dict: the Encoding model's parameters and buffers (``pretrained.*``,
            ``head.*``, ``auxlayer.*``).
        model: ``"deeplab"`` (:class:`EncodingDeepLabV3Head`) or ``"fcn"``
            (:class:`EncodingFCNHead`).

    Returns:
        ``backbone.*`` / ``sem_seg_head.*`` tensors, and the dropped names (the backbone's
        ImageNet classifier ``pretrained.fc`` if present, BN ``num_batches_tracked``).

    Raises:
        CheckpointMismatchError: names outside that model's layout (another Encoding model such
            as EncNet or PSP, the other one of DeepLabV3 / FCN, or a head with ``with_global``).
    """
    if model not in _LAYOUTS:
        raise ValueError(f"model must be one of {sorted(_LAYOUTS)}, got {model!r}")
    rules, layout = _LAYOUTS[model]
    backbone: Dict[str, torch.Tensor] = {}
    out: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unknown: List[str] = []
    for name, tensor in state_dict.items():
        if name.startswith("pretrained."):
            backbone[name[len("pretrained.") :]] = tensor
            continue
        if name.endswith("num_batches_tracked"):
            dropped.append(name)
            continue
        for pattern, repl in rules:
            if re.match(pattern, name):
                out[re.sub(pattern, repl, name)] = tensor
                break
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointMismatchError(
            f"{len(unknown)} names are not PyTorch-Encoding {layout} names: "
            f"{_format_keys(unknown)}"
        )
    if not backbone:
        raise CheckpointMismatchError(
            f"no 'pretrained.*' backbone tensors: not a {model} segmentation model"
        )
    converted, bb_dropped = convert_encoding_backbone_state_dict(backbone, prefix="backbone.")
    out.update(converted)
    dropped += ["pretrained." + k for k in bb_dropped]
    return out, dropped


def convert_encoding_deeplab_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """:func:`convert_encoding_segmentation_state_dict` for a DeepLabV3 model."""
    return convert_encoding_segmentation_state_dict(state_dict, "deeplab")


def convert_encoding_fcn_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """:func:`convert_encoding_segmentation_state_dict` for an FCN model (``fcn_resnest50_ade``)."""
    return convert_encoding_segmentation_state_dict(state_dict, "fcn")


def convert_encoding_deeplab_checkpoint(
    src: str,
    dst: str,
    expected: Optional[Mapping[str, torch.Tensor]] = None,
    overwrite: bool = False,
    model: str = "deeplab",
) -> Dict[str, torch.Tensor]:
    """Convert an Encoding DeepLabV3 (or FCN) ``.pth`` to a detectron2 checkpoint, atomically.

    Args:
        src: the Encoding file (e.g. ``deeplab_resnest50_ade-2225f09d.pth``).
        dst: output path (``{"model": ..., "matching_heuristics": False}``).
        expected: the target model's state dict; when given, names and shapes must match it
            exactly before anything is written.
        overwrite: replace an existing ``dst``.
        model: ``"deeplab"`` or ``"fcn"`` (:func:`convert_encoding_segmentation_state_dict`).

    Returns:
        The converted state dict.
    """
    from .convert import check_state_dict, load_torch_state_dict

    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")
    converted, dropped = convert_encoding_segmentation_state_dict(load_torch_state_dict(src), model)
    if expected is not None:
        check_state_dict(converted, expected, what=f"{src} (converted)")
    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        torch.save(
            {"model": converted, "__author__": "resnest_dense", "matching_heuristics": False}, tmp
        )
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info(
        "Wrote %s: %d tensors (dropped %d: classifier and BN counters)",
        dst,
        len(converted),
        len(dropped),
    )
    return converted
