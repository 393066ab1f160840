"""Split attention (Zhang et al., "ResNeSt: Split-Attention Networks", arXiv:2004.08955).

One grouped 3x3 conv produces ``radix`` splits of every cardinal group at once
(``groups = cardinality * radix``); the splits are summed, globally pooled, passed through a
two-layer grouped MLP (fc1 -> norm -> ReLU -> fc2) and turned into per-split channel weights by a
softmax over the radix (a sigmoid gate when ``radix == 1``). The output is the weighted sum of the
splits. Channels are laid out radix-major (split ``r`` holds channels ``r*C .. (r+1)*C``), as in
the official implementation, so its weights load unchanged.

Everything is a fixed-shape reshape/sum: no Python loop over splits or groups, which keeps the
layer traceable, scriptable and exportable to ONNX.

With ``deformable=True`` the grouped 3x3 conv becomes a (modulated) deformable conv, as in the
detectron2-ResNeSt fork's DCN models: the same ``conv.weight`` is sampled at offsets that the
enclosing block predicts (its ``conv2_offset``) and passes to :meth:`SplitAttentionConv2d.forward`.
"""

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, NaiveSyncBatchNorm, get_norm
from detectron2.utils.logger import log_first_n
from torch import nn

from .deform_conv import deform_conv_from_offsets
from .dropblock import DropBlock2d

__all__ = ["SplitAttentionConv2d", "radix_softmax"]


def radix_softmax(logits: torch.Tensor, radix: int, cardinality: int) -> torch.Tensor:
    """Attention weights over the radix splits.

    Args:
        logits: ``(B, radix * C, 1, 1)`` output of fc2. A grouped fc2 lays channels out as
            ``(cardinality, radix, C / cardinality)``.
        radix: number of splits; 1 gives a sigmoid gate.
        cardinality: number of cardinal groups.

    Returns:
        ``(B, radix, C, 1, 1)`` weights, radix-major like the split features; they sum to one
        over dim 1 when ``radix > 1``.
    """
    batch = logits.shape[0]
    if radix == 1:
        return torch.sigmoid(logits).view(batch, 1, -1, 1, 1)
    attn = logits.view(batch, cardinality, radix, -1).softmax(dim=2)
    return attn.transpose(1, 2).reshape(batch, radix, -1, 1, 1)


class SplitAttentionConv2d(nn.Module):
    """A 3x3 split-attention conv: the ``conv2`` of a ResNeSt bottleneck.

    Submodule names (``conv``, ``bn0``, ``fc1``, ``bn1``, ``fc2``) equal the official ResNeSt,
    timm and detectron2-ResNeSt ones, so their state dicts load without renaming.

    The layer compiles with ``torch.jit.script`` (and its scripted forward equals the eager one,
    NHWC path included) with BN, FrozenBN and GN. SyncBN (``nn.SyncBatchNorm``, detectron2's
    ``NaiveSyncBatchNorm``) does not: its forward asks ``torch.distributed`` for the process
    group, which TorchScript cannot compile. Scripting then raises an error that says how to
    convert the norms for export.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        cardinality: int = 1,
        radix: int = 2,
        reduction_factor: int = 4,
        min_inter_channels: int = 32,
        norm: str = "BN",
        dropblock_prob: float = 0.0,
        deformable: bool = False,
        deform_modulated: bool = True,
    ):
        """
        Args:
            in_channels: input channels.
            out_channels: output channels ``C`` (each split has ``C`` channels).
            stride: stride of the 3x3 conv.
            dilation: dilation (and padding) of the 3x3 conv.
            cardinality: number of cardinal groups.
            radix: number of splits per cardinal group (>= 1).
            reduction_factor: fc1 width is ``max(C * radix / reduction_factor, 32)``.
            min_inter_channels: the 32 above.
            norm: a detectron2 norm name for ``get_norm`` (BN, SyncBN, FrozenBN, GN, ...).
            dropblock_prob: DropBlock probability after ``bn0`` (0 = off).
            deformable: the 3x3 conv is deformable; :meth:`forward` then needs the offsets.
                Its weight keeps the name and shape of the plain conv (``conv.weight``), as in
                the fork, whose deformable conv there was created with ``bias=False`` too.
            deform_modulated: DCNv2 (offsets + sigmoid mask) rather than DCNv1 (offsets only).
        """
        super().__init__()
        if radix < 1:
            raise ValueError(f"SplitAttentionConv2d: radix must be >= 1, got {radix}")
        if out_channels % cardinality:
            raise ValueError(
                f"SplitAttentionConv2d: out_channels={out_channels} is not divisible by "
                f"cardinality={cardinality}"
            )
        self.radix = radix
        self.cardinality = cardinality
        self.deformable = deformable
        self.deform_modulated = deform_modulated
        inter_channels = max(out_channels * radix // reduction_factor, min_inter_channels)
        self.conv = Conv2d(
            in_channels,
            out_channels * radix,
            kernel_size=3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            groups=cardinality * radix,
            bias=False,
        )
        self.bn0 = get_norm(norm, out_channels * radix)
        self.dropblock = DropBlock2d(dropblock_prob, 3) if dropblock_prob > 0 else None
        self.fc1 = Conv2d(out_channels, inter_channels, kernel_size=1, groups=cardinality)
        self.bn1 = get_norm(norm, inter_channels)
        self.fc2 = Conv2d(inter_channels, out_channels * radix, kernel_size=1, groups=cardinality)
        # BN over the pooled (B, C, 1, 1) features has one value per channel when B == 1.
        # NaiveSyncBN is exempt: across several processes it pools statistics over all of them.
        batch_norm = isinstance(self.bn1, nn.BatchNorm2d)
        batch_norm = batch_norm and not isinstance(self.bn1, NaiveSyncBatchNorm)
        # GN with one channel per group sees a single value per group on 1x1 features: it
        # maps everything to its bias (and fails outright when B == 1).
        single_gn = isinstance(self.bn1, nn.GroupNorm) and self.bn1.num_groups == inter_channels
        if single_gn:
            log_first_n(
                logging.WARNING,
                f"GN on {inter_channels} pooled split-attention channels has one channel per "
                "group and outputs a constant; prefer BN/SyncBN/FrozenBN in ResNeSt backbones.",
                n=1,
            )
        self._needs_batch = batch_norm or single_gn
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def __prepare_scriptable__(self) -> "SplitAttentionConv2d":
        # torch.jit.script calls this on every submodule before compiling anything, so a SyncBN
        # model fails here with a fix instead of deep inside torch.distributed.
        for name in ("bn0", "bn1"):
            norm = getattr(self, name)
            if isinstance(norm, (nn.SyncBatchNorm, NaiveSyncBatchNorm)):
                raise RuntimeError(
                    f"SplitAttentionConv2d.{name} is {type(norm).__name__}, which torch.jit.script "
                    "cannot compile (its forward queries torch.distributed). For export, convert "
                    "SyncBN to a plain norm first: model = detectron2.layers.FrozenBatchNorm2d."
                    "convert_frozen_batchnorm(model) (same weights, same eval-mode outputs), or "
                    "build the model with MODEL.RESNETS.NORM BN or FrozenBN and load the same "
                    "checkpoint (SyncBN and BN share parameter names)."
                )
        return self

    def forward(self, x: torch.Tensor, offset: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, H, W)``.
            offset: deformable layers only: the offset conv output, ``(B, 3 * G * 9, H / stride,
                W / stride)`` (offsets then mask logits) for DCNv2, ``(B, 2 * G * 9, ...)`` for
                DCNv1, with ``G`` deformable groups (see :mod:`.deform_conv`).

        Returns:
            ``(B, out_channels, H / stride, W / stride)``.
        """
        if offset is None:
            if self.deformable:
                raise ValueError(
                    "This SplitAttentionConv2d is deformable: pass the offsets predicted by its "
                    "block's conv2_offset as forward(x, offset)."
                )
            x = self.conv(x)
        else:
            if not self.deformable:
                raise ValueError(
                    "This SplitAttentionConv2d is not deformable (deformable=False) but got "
                    "offsets; build it with deformable=True to use them."
                )
            x = deform_conv_from_offsets(
                x,
                offset,
                self.conv.weight,
                self.conv.bias,
                self.conv.stride,
                self.conv.padding,
                self.conv.dilation,
                self.deform_modulated,
            )
        x = self.bn0(x)
        if self.dropblock is not None:
            x = self.dropblock(x)
        x = F.relu_(x)
        batch, channels, height, width = x.shape
        # Pool first, then sum the splits: the same value without writing a summed feature map.
        gap = x.mean(dim=(2, 3)).view(batch, self.radix, -1).sum(dim=1).view(batch, -1, 1, 1)
        if self.training and self._needs_batch and batch == 1:
            raise ValueError(
                "Split attention normalises pooled (B, C, 1, 1) features; with batch norm it "
                "needs more than one image per device in training (got 1). Use at least 2 "
                "images per device (SOLVER.IMS_PER_BATCH), or a norm that does not need batch "
                "statistics: MODEL.RESNETS.NORM FrozenBN."
            )
        attn = self.fc2(F.relu_(self.bn1(self.fc1(gap))))
        attn = radix_softmax(attn, self.radix, self.cardinality)
        if self.radix == 1:
            return x * attn.view(batch, channels, 1, 1)
        if x.is_contiguous(memory_format=torch.channels_last):
            # NHWC: every pixel's (radix, C) channels are contiguous; reducing over the radix
            # there is ~4x faster than over dim 1 of an NCHW view, and the output stays
            # channels_last for the next conv.
            splits = x.permute(0, 2, 3, 1).view(batch, height, width, self.radix, -1)
            out = (splits * attn.view(batch, 1, 1, self.radix, -1)).sum(dim=3)
            return out.permute(0, 3, 1, 2)
        splits = x.view(batch, self.radix, channels // self.radix, height, width)
        return (splits * attn).sum(dim=1)
