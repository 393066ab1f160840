"""DeepLabV3 head laid out as in PyTorch-Encoding (Chen et al., "Rethinking Atrous Convolution for
Semantic Image Segmentation", 2017), the head behind the ResNeSt paper's ADE20K results.

It differs from detectron2's ``DeepLabV3Head`` (projects/DeepLab): the ASPP output goes through a
second 3x3 conv block before the classifier, the ASPP projection has Dropout2d(0.5), an auxiliary
FCN head on res4 adds a 0.2-weighted loss, and logits are upsampled bilinearly with
``align_corners=True`` to the input size before the cross-entropy.

Submodules are ``nn.Sequential`` with the reference's indices, so a PyTorch-Encoding DeepLabV3
state dict converts by renaming prefixes only:

================================  ==========================================
PyTorch-Encoding                  resnest_dense
================================  ==========================================
``head.aspp.b0.{0,1}``            ``sem_seg_head.aspp.b0.{0,1}`` (1x1 conv, norm)
``head.aspp.b{1,2,3}.{0,1}``      ``sem_seg_head.aspp.b{1,2,3}.{0,1}`` (atrous 3x3, norm)
``head.aspp.b4.gap.{1,2}``        ``sem_seg_head.aspp.b4.gap.{1,2}`` (pooling branch)
``head.aspp.project.{0,1}``       ``sem_seg_head.aspp.project.{0,1}``
``head.block.{0,1,4}``            ``sem_seg_head.block.{0,1,4}`` (3x3, norm, classifier)
``auxlayer.conv5.{0,1,4}``        ``sem_seg_head.auxlayer.conv5.{0,1,4}``
``pretrained.*``                  ``backbone.*`` (backbone converter)
================================  ==========================================
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

__all__ = [
    "ASPP",
    "ASPPPooling",
    "AuxiliaryLossHead",
    "FCNHead",
    "EncodingDeepLabV3Head",
    "common_head_kwargs",
    "scaled_atrous_rates",
    "single_in_feature",
]

logger = logging.getLogger(__name__)


def _conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int, norm: str, dilation: int = 1
) -> List[nn.Module]:
    padding = dilation * (kernel_size // 2)
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
    )
    return [conv, get_norm(norm, out_channels), nn.ReLU(inplace=True)]


def _separable_conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int, norm: str, dilation: int = 1
) -> List[nn.Module]:
    """Depthwise ``k x k`` conv -> norm -> ReLU -> pointwise 1x1 conv -> norm -> ReLU.

    The layout of mmcv's ``DepthwiseSeparableConvModule`` (norm and activation after both
    convs), which mmsegmentation's DeepLabV3+ head uses for its ASPP and decoder.
    """
    padding = dilation * (kernel_size // 2)
    depthwise = nn.Conv2d(
        in_channels,
        in_channels,
        kernel_size,
        padding=padding,
        dilation=dilation,
        groups=in_channels,
        bias=False,
    )
    return [
        depthwise,
        get_norm(norm, in_channels),
        nn.ReLU(inplace=True),
        *_conv_norm_relu(in_channels, out_channels, 1, norm),
    ]


class ASPPPooling(nn.Module):
    """Image-level branch: global average pool -> 1x1 conv -> norm -> ReLU -> upsample."""

    def __init__(
        self, in_channels: int, out_channels: int, *, norm: str, align_corners: bool = True
    ):
        """
        Args:
            in_channels: input channels.
            out_channels: output channels.
            norm: a detectron2 norm name for ``get_norm``.
            align_corners: of the bilinear upsampling back to the input size.
        """
        super().__init__()
        self.align_corners = align_corners
        self.gap = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), *_conv_norm_relu(in_channels, out_channels, 1, norm)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``, constant over H, W."""
        pooled = self.gap(x)
        return F.interpolate(
            pooled, x.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: five parallel branches, concatenated and projected.

    ``b0`` is a 1x1 conv, ``b1..b3`` are 3x3 convs at the three atrous rates, ``b4`` is
    :class:`ASPPPooling`; each ends in norm + ReLU. ``project`` is 1x1 conv (5C -> C) + norm +
    ReLU + Dropout2d. That is PyTorch-Encoding's layout (the default). With ``separable`` the
    atrous branches are depthwise-separable and with ``project_kernel_size=3`` the projection is
    a separable 3x3 conv: mmsegmentation's ``DepthwiseSeparableASPPHead`` (DeepLabV3+).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        atrous_rates: Sequence[int],
        norm: str,
        dropout: float = 0.5,
        align_corners: bool = True,
        separable: bool = False,
        project_kernel_size: int = 1,
    ):
        """
        Args:
            in_channels: input channels (2048 for res5).
            out_channels: channels of every branch and of the output (256 in the reference).
            atrous_rates: the three dilation rates of ``b1..b3``.
            norm: a detectron2 norm name for ``get_norm``.
            dropout: Dropout2d probability after the projection (0: no dropout layer).
            align_corners: of the pooling branch's upsampling.
            separable: depthwise-separable atrous branches (and projection, if 3x3).
            project_kernel_size: 1 (PyTorch-Encoding) or 3 (mmsegmentation's DeepLabV3+).
        """
        super().__init__()
        if len(atrous_rates) != 3:
            raise ValueError(f"ASPP needs three atrous rates, got {list(atrous_rates)}")
        if project_kernel_size not in (1, 3):
            raise ValueError(f"ASPP projection kernel must be 1 or 3, got {project_kernel_size}")
        layers = _separable_conv_norm_relu if separable else _conv_norm_relu
        self.b0 = nn.Sequential(*_conv_norm_relu(in_channels, out_channels, 1, norm))
        for i, rate in enumerate(atrous_rates, start=1):
            branch = nn.Sequential(*layers(in_channels, out_channels, 3, norm, rate))
            self.add_module(f"b{i}", branch)
        self.b4 = ASPPPooling(in_channels, out_channels, norm=norm, align_corners=align_corners)
        project = _conv_norm_relu if project_kernel_size == 1 else layers
        tail = [nn.Dropout2d(dropout)] if dropout > 0 else []
        self.project = nn.Sequential(
            *project(5 * out_channels, out_channels, project_kernel_size, norm), *tail
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        branches = [self.b0(x), self.b1(x), self.b2(x), self.b3(x), self.b4(x)]
        return self.project(torch.cat(branches, dim=1))


class FCNHead(nn.Module):
    """3x3 conv -> norm -> ReLU -> Dropout(0.1) -> 1x1 classifier: the reference auxiliary head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int,
        norm: str,
        dropout: float = 0.1,
    ):
        """
        Args:
            in_channels: input channels (1024 for res4).
            num_classes: number of classes.
            channels: width of the 3x3 conv (``in_channels // 4`` in the reference).
            norm: a detectron2 norm name for ``get_norm``.
            dropout: Dropout2d probability before the classifier.
        """
        super().__init__()
        self.conv5 = nn.Sequential(
            *_conv_norm_relu(in_channels, channels, 3, norm),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, num_classes, H, W)`` logits."""
        return self.conv5(x)


class AuxiliaryLossHead(nn.Module):
    """Loss and inference of the heads of this package (PyTorch-Encoding / mmsegmentation style).

    A subclass computes logits at the stride ``common_stride`` in :meth:`layers`. In training
    they (and those of the optional auxiliary FCN head on ``aux_in_feature``) are upsampled to the
    target size and trained with cross entropy (ignored pixels excluded), the auxiliary loss
    weighted by ``aux_loss_weight``. In inference only the main branch runs and its logits are
    upsampled to the padded input size.
    """

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        common_stride: int,
        num_classes: int,
        norm: str,
        aux_in_feature: Optional[str],
        aux_channels: int,
        aux_loss_weight: float,
        loss_weight: float,
        ignore_value: int,
        head_dropout: float,
        align_corners: bool,
    ):
        super().__init__()
        self.common_stride = common_stride
        self.num_classes = num_classes
        self.aux_in_feature = aux_in_feature or None
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.align_corners = align_corners
        if self.aux_in_feature is not None:
            self.auxlayer = FCNHead(
                input_shape[self.aux_in_feature].channels,
                num_classes,
                channels=aux_channels,
                norm=norm,
                dropout=head_dropout,
            )
        else:
            self.auxlayer = None

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Main-branch logits ``(B, num_classes, H / common_stride, W / common_stride)``."""
        raise NotImplementedError

    def _upsample(self, logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size, mode="bilinear", align_corners=self.align_corners)

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """
        Args:
            features: backbone outputs, ``(B, C, h, w)`` per name.
            targets: ``(B, H, W)`` int64 labels (training only), ``H = h * stride``.

        Returns:
            In training ``(None, losses)`` with ``loss_sem_seg`` and (if enabled)
            ``loss_sem_seg_aux``; in inference ``((B, num_classes, H, W) logits, {})`` at
            ``common_stride`` times the logits' size.
        """
        logits = self.layers(features)
        if not self.training:
            size = (logits.shape[-2] * self.common_stride, logits.shape[-1] * self.common_stride)
            return self._upsample(logits, size), {}
        losses = {"loss_sem_seg": self.loss_weight * self._loss(logits, targets)}
        if self.auxlayer is not None:
            aux_logits = self.auxlayer(features[self.aux_in_feature])
            losses["loss_sem_seg_aux"] = self.aux_loss_weight * self._loss(aux_logits, targets)
        return None, losses

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self._upsample(logits, targets.shape[-2:])
        loss = F.cross_entropy(logits, targets, ignore_index=self.ignore_value, reduction="sum")
        # Mean over labelled pixels; a batch whose pixels are all ignored gives 0, not NaN.
        num_valid = (targets != self.ignore_value).sum().clamp(min=1)
        return loss / num_valid


def scaled_atrous_rates(cfg, stride: int, head: str) -> List[int]:
    """``MODEL.SEM_SEG_HEAD.ATROUS_RATES`` (given at output stride 8) for a feature of
    ``stride``: the rates scale with the feature resolution (halved at OS16)."""
    if stride not in (8, 16):
        logger.warning("%s on a feature of stride %d; the reference uses 8.", head, stride)
    return [max(1, int(r * 8 // stride)) for r in cfg.MODEL.SEM_SEG_HEAD.ATROUS_RATES]


def common_head_kwargs(cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
    """Keyword arguments of :class:`AuxiliaryLossHead` read from ``MODEL.SEM_SEG_HEAD``."""
    h = cfg.MODEL.SEM_SEG_HEAD
    return {
        "input_shape": input_shape,
        "num_classes": h.NUM_CLASSES,
        "norm": h.NORM,
        "aux_in_feature": h.AUX_IN_FEATURE,
        "aux_channels": h.AUX_CONVS_DIM,
        "aux_loss_weight": h.AUX_LOSS_WEIGHT,
        "loss_weight": h.LOSS_WEIGHT,
        "ignore_value": h.IGNORE_VALUE,
        "align_corners": h.ALIGN_CORNERS,
    }


def single_in_feature(cfg, head: str) -> str:
    """The one entry of ``MODEL.SEM_SEG_HEAD.IN_FEATURES`` (``res5``) of a single-input head."""
    features = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
    if len(features) != 1:
        raise ValueError(
            f"{head} takes one input feature: set MODEL.SEM_SEG_HEAD.IN_FEATURES ['res5'], "
            f"got {list(features)}"
        )
    return features[0]


@SEM_SEG_HEADS_REGISTRY.register()
class EncodingDeepLabV3Head(AuxiliaryLossHead):
    """DeepLabV3 (ASPP + 3x3 block + classifier) with an auxiliary FCN head, as in the reference.

    Losses and inference are those of :class:`AuxiliaryLossHead`.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_feature: str,
        num_classes: int,
        aspp_channels: int = 256,
        atrous_rates: Sequence[int] = (12, 24, 36),
        norm: str = "BN",
        aux_in_feature: Optional[str] = "res4",
        aux_channels: int = 256,
        aux_loss_weight: float = 0.2,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
        aspp_dropout: float = 0.5,
        head_dropout: float = 0.1,
        align_corners: bool = True,
    ):
        """
        Args:
            input_shape: backbone output shapes (channels and stride per feature).
            in_feature: feature fed to the ASPP (``"res5"``).
            num_classes: number of classes (150 for ADE20K).
            aspp_channels: width of the ASPP branches and of the 3x3 block.
            atrous_rates: ASPP rates as used (already scaled to the feature's stride).
            norm: a detectron2 norm name for ``get_norm`` (``"SyncBN"`` in the recipe).
            aux_in_feature: feature for the auxiliary head; None or "" disables it.
            aux_channels: width of the auxiliary head's 3x3 conv.
            aux_loss_weight: weight of the auxiliary loss.
            loss_weight: weight of the main loss.
            ignore_value: label ignored by the loss.
            aspp_dropout: Dropout2d after the ASPP projection (0.5).
            head_dropout: Dropout2d before each classifier (0.1).
            align_corners: of every bilinear upsampling.
        """
        super().__init__(
            input_shape,
            common_stride=input_shape[in_feature].stride,
            num_classes=num_classes,
            norm=norm,
            aux_in_feature=aux_in_feature,
            aux_channels=aux_channels,
            aux_loss_weight=aux_loss_weight,
            loss_weight=loss_weight,
            ignore_value=ignore_value,
            head_dropout=head_dropout,
            align_corners=align_corners,
        )
        self.in_feature = in_feature
        self.aspp = ASPP(
            input_shape[in_feature].channels,
            aspp_channels,
            atrous_rates=atrous_rates,
            norm=norm,
            dropout=aspp_dropout,
            align_corners=align_corners,
        )
        self.block = nn.Sequential(
            *_conv_norm_relu(aspp_channels, aspp_channels, 3, norm),
            nn.Dropout2d(head_dropout),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        in_feature = single_in_feature(cfg, "EncodingDeepLabV3Head")
        stride = input_shape[in_feature].stride
        return {
            **common_head_kwargs(cfg, input_shape),
            "in_feature": in_feature,
            "aspp_channels": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "atrous_rates": scaled_atrous_rates(cfg, stride, "EncodingDeepLabV3Head"),
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.block(self.aspp(features[self.in_feature]))
