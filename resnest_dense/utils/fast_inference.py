"""Inference fast path: fold eval-mode batch norms into the convs before them, channels_last.

Folding is exact up to float rounding: for ``y = BN(conv(x))`` in eval mode the norm is the
affine map ``y = s * conv(x) + (beta - s * mean)`` with ``s = gamma / sqrt(var + eps)``, which is
absorbed into the conv's weight and bias. It removes one full read+write of every normalised
feature map. It applies to detectron2 ``Conv2d`` layers with a ``norm`` (backbone, FPN, box and
mask heads, DeepLab heads) and to the ``bn0``/``bn1`` pairs inside split attention.

A folded model is for inference only: training it would no longer normalise with batch
statistics, so :func:`optimize_for_inference` leaves the model in eval mode and marks it.
"""

import logging
from typing import Optional, Tuple

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

from ..layers import SplitAttentionConv2d

__all__ = ["fold_batch_norms", "optimize_for_inference"]

logger = logging.getLogger(__name__)

_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


def _affine(norm: nn.Module) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(scale, shift)`` of an eval-mode batch norm, or None if ``norm`` is not foldable."""
    if not isinstance(norm, _BATCH_NORMS):
        return None
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        if norm.training or not norm.track_running_stats:
            return None
    weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
    bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
    scale = weight * torch.rsqrt(norm.running_var + norm.eps)
    return scale, bias - norm.running_mean * scale


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, norm: nn.Module) -> bool:
    affine = _affine(norm)
    if affine is None:
        return False
    scale, shift = (t.to(conv.weight.dtype) for t in affine)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return True


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every foldable eval-mode batch norm into its conv, in place.

    Args:
        model: any module; only its detectron2 ``Conv2d`` layers with a ``norm`` and its
            :class:`SplitAttentionConv2d` layers are touched. Call ``model.eval()`` first:
            norms in training mode are left alone.

    Returns:
        The number of norms folded.
    """
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, SplitAttentionConv2d):
            for conv_name, norm_name in (("conv", "bn0"), ("fc1", "bn1")):
                if _fold_into(getattr(module, conv_name), getattr(module, norm_name)):
                    module.add_module(norm_name, nn.Identity())
                    folded += 1
            module._needs_batch = False
        elif isinstance(module, Conv2d) and module.norm is not None:
            if _fold_into(module, module.norm):
                module.norm = None
                folded += 1
    return folded


def optimize_for_inference(
    model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True
) -> nn.Module:
    """Put ``model`` in eval mode and apply the exact inference optimisations, in place.

    Args:
        model: a detectron2 model or backbone.
        fold_bn: fold eval-mode batch norms into convs (:func:`fold_batch_norms`).
        channels_last: store 4-D weights as channels_last, which oneDNN (CPU) and cuDNN run
            faster; outputs of the first conv then follow that layout.

    Returns:
        ``model`` itself.
    """
    model.eval()
    if fold_bn:
        n = fold_batch_norms(model)
        logger.info("Folded %d batch norms into convolutions for inference.", n)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model._resnest_dense_inference_only = True  # read by tools that must not train it
    return model
