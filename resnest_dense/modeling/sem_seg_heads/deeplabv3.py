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

__all__ = ["ASPP", "ASPPPooling", "FCNHead", "EncodingDeepLabV3Head"]

logger = logging.getLogger(__name__)


def _conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int, norm: str, dilation: int = 1
) -> List[nn.Module]:
    padding = dilation * (kernel_size // 2)
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
    )
    return [conv, get_norm(norm, out_channels), nn.ReLU(inplace=True)]


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
    ReLU + Dropout2d.
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
    ):
        """
        Args:
            in_channels: input channels (2048 for res5).
            out_channels: channels of every branch and of the output (256 in the reference).
            atrous_rates: the three dilation rates of ``b1..b3``.
            norm: a detectron2 norm name for ``get_norm``.
            dropout: Dropout2d probability after the projection.
            align_corners: of the pooling branch's upsampling.
        """
        super().__init__()
        if len(atrous_rates) != 3:
            raise ValueError(f"ASPP needs three atrous rates, got {list(atrous_rates)}")
        self.b0 = nn.Sequential(*_conv_norm_relu(in_channels, out_channels, 1, norm))
        for i, rate in enumerate(atrous_rates, start=1):
            branch = nn.Sequential(*_conv_norm_relu(in_channels, out_channels, 3, norm, rate))
            self.add_module(f"b{i}", branch)
        self.b4 = ASPPPooling(in_channels, out_channels, norm=norm, align_corners=align_corners)
        self.project = nn.Sequential(
            *_conv_norm_relu(5 * out_channels, out_channels, 1, norm), nn.Dropout2d(dropout)
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


@SEM_SEG_HEADS_REGISTRY.register()
class EncodingDeepLabV3Head(nn.Module):
    """DeepLabV3 (ASPP + 3x3 block + classifier) with an auxiliary FCN head, as in the reference.

    In training, both outputs are upsampled to the target size and trained with cross entropy
    (ignored pixels excluded); the auxiliary loss is weighted by ``aux_loss_weight``. In
    inference only the main branch runs and its logits are upsampled to the padded input size.
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
        super().__init__()
        self.in_feature = in_feature
        self.aux_in_feature = aux_in_feature or None
        self.common_stride = input_shape[in_feature].stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.align_corners = align_corners
        self.num_classes = num_classes
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

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        h = cfg.MODEL.SEM_SEG_HEAD
        if len(h.IN_FEATURES) != 1:
            raise ValueError(
                f"EncodingDeepLabV3Head takes one input feature (res5), got {h.IN_FEATURES}"
            )
        in_feature = h.IN_FEATURES[0]
        stride = input_shape[in_feature].stride
        if stride not in (8, 16):
            logger.warning(
                "EncodingDeepLabV3Head on a feature of stride %d; the reference uses 8.", stride
            )
        # Rates are specified at output stride 8 and scale with the feature resolution.
        rates = [max(1, int(r * 8 // stride)) for r in h.ATROUS_RATES]
        return {
            "input_shape": input_shape,
            "in_feature": in_feature,
            "num_classes": h.NUM_CLASSES,
            "aspp_channels": h.CONVS_DIM,
            "atrous_rates": rates,
            "norm": h.NORM,
            "aux_in_feature": h.AUX_IN_FEATURE,
            "aux_channels": h.AUX_CONVS_DIM,
            "aux_loss_weight": h.AUX_LOSS_WEIGHT,
            "loss_weight": h.LOSS_WEIGHT,
            "ignore_value": h.IGNORE_VALUE,
            "align_corners": h.ALIGN_CORNERS,
        }

    def _upsample(self, logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size, mode="bilinear", align_corners=self.align_corners)

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """
        Args:
            features: backbone outputs; ``features[in_feature]`` is ``(B, C, h, w)``.
            targets: ``(B, H, W)`` int64 labels (training only), ``H = h * stride``.

        Returns:
            In training ``(None, losses)`` with ``loss_sem_seg`` and (if enabled)
            ``loss_sem_seg_aux``; in inference ``((B, num_classes, h * stride, w * stride)
            logits, {})``.
        """
        x = features[self.in_feature]
        logits = self.block(self.aspp(x))
        if not self.training:
            size = (x.shape[-2] * self.common_stride, x.shape[-1] * self.common_stride)
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
