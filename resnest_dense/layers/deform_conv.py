"""Deformable convolution (DCNv1 / DCNv2) on ``torchvision.ops.deform_conv2d``: no compiled op.

Dai et al., "Deformable Convolutional Networks" (2017) and Zhu et al., "Deformable ConvNets v2:
More Deformable, Better Results" (2019). detectron2's ``DeformConv`` / ``ModulatedDeformConv``
need its CUDA extension; torchvision ships the same operator for CPU and GPU with autograd, so
the layers here run and train anywhere torchvision does.

Channel layout of the offset conv output (the one the detectron2-ResNeSt fork's ``conv2_offset``
produces, and detectron2's ``DeformBottleneckBlock``): ``(B, 3 * G * K, H, W)`` for DCNv2 with
``G`` deformable groups and ``K = kh * kw`` taps; the first ``2 * G * K`` channels are the
offsets, ``(dy, dx)`` interleaved per tap and grouped per deformable group (torchvision's and
detectron2's kernels read them the same way), the last ``G * K`` are mask logits, turned into
the modulation mask by a sigmoid. DCNv1 has only the ``2 * G * K`` offset channels.
"""

from typing import Optional, Tuple

import torch
from torchvision.ops import deform_conv2d

__all__ = ["deform_conv_from_offsets", "offset_channels"]


def offset_channels(kernel_size: int, deform_num_groups: int, modulated: bool) -> int:
    """Output channels of the conv that predicts offsets (and mask logits when modulated)."""
    return (3 if modulated else 2) * kernel_size * kernel_size * deform_num_groups


def deform_conv_from_offsets(
    x: torch.Tensor,
    offset_mask: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    modulated: bool,
) -> torch.Tensor:
    """A (modulated) deformable conv with offsets / mask logits from one offset conv output.

    Args:
        x: ``(B, C_in, H, W)``.
        offset_mask: ``(B, 3 * G * K, H_out, W_out)`` when ``modulated`` (offsets, then mask
            logits), ``(B, 2 * G * K, H_out, W_out)`` otherwise; ``G`` = deformable groups.
        weight: ``(C_out, C_in / groups, kh, kw)``; the conv groups follow from its shape.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: of the conv, as in ``nn.Conv2d``.
        modulated: DCNv2 (sigmoid mask) or DCNv1.

    Returns:
        ``(B, C_out, H_out, W_out)``. With zero offsets it is the plain conv, times 0.5 when
        modulated with zero mask logits (sigmoid(0)), as in detectron2 and the fork.
    """
    mask: Optional[torch.Tensor] = None
    if modulated:
        taps = offset_mask.shape[1] // 3
        mask = torch.sigmoid(offset_mask[:, 2 * taps :])
        offset_mask = offset_mask[:, : 2 * taps]
    return deform_conv2d(
        x,
        offset_mask,
        weight,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        mask=mask,
    )
