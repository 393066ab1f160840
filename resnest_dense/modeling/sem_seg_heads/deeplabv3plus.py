"""DeepLabV3+ head: ASPP on res5 plus a decoder that fuses low-level res2 features (Chen et al.,
"Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018).

Laid out as mmsegmentation's ``DepthwiseSeparableASPPHead``, the head behind its ResNeSt-101
DeepLabV3+ results (ADE20K 46.47, Cityscapes 79.62 mIoU single scale):

* ASPP (:class:`~.deeplabv3.ASPP` with ``separable=True, project_kernel_size=3, dropout=0``):
  1x1 branch, three depthwise-separable 3x3 branches at rates 12/24/36 (OS8), image pooling,
  concatenation projected by a separable 3x3 conv (5C -> C);
* ``low_level``: 1x1 conv + norm + ReLU on res2 (256 -> 48);
* ``decoder``: the ASPP output upsampled to res2's size, concatenated with ``low_level``'s, two
  separable 3x3 conv blocks (C + 48 -> C -> C);
* ``predictor``: Dropout2d(0.1) + 1x1 classifier; logits at stride 4;
* an auxiliary FCN head on res4 (loss weight 0.4 in mmsegmentation's configs).

It differs from detectron2's ``DeepLabV3PlusHead`` (projects/DeepLab, a distinct registry name):
that one has plain 3x3 convs unless asked otherwise, 1x1 ASPP projection with dropout 0.1, a
256-wide decoder without auxiliary head, and can fuse several low-level features.
"""

from typing import Dict, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from .deeplabv3 import (
    ASPP,
    AuxiliaryLossHead,
    _conv_norm_relu,
    _separable_conv_norm_relu,
    common_head_kwargs,
    scaled_atrous_rates,
    single_in_feature,
)

__all__ = ["SeparableDeepLabV3PlusHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class SeparableDeepLabV3PlusHead(AuxiliaryLossHead):
    """DeepLabV3+ (separable ASPP + res2 decoder) with an auxiliary FCN head.

    Losses and inference are those of :class:`~.deeplabv3.AuxiliaryLossHead`; the logits are at
    the stride of the low-level feature (4 for res2).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_feature: str,
        low_level_feature: str,
        num_classes: int,
        channels: int = 512,
        low_level_channels: int = 48,
        atrous_rates: Sequence[int] = (12, 24, 36),
        separable: bool = True,
        norm: str = "BN",
        aux_in_feature: Optional[str] = "res4",
        aux_channels: int = 256,
        aux_loss_weight: float = 0.4,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
        head_dropout: float = 0.1,
        align_corners: bool = False,
    ):
        """
        Args:
            input_shape: backbone output shapes (channels and stride per feature).
            in_feature: feature fed to the ASPP (``"res5"``).
            low_level_feature: feature fused by the decoder (``"res2"``).
            num_classes: number of classes (150 for ADE20K, 19 for Cityscapes).
            channels: width of the ASPP and of the decoder (512 in mmsegmentation).
            low_level_channels: width of the low-level projection (48).
            atrous_rates: ASPP rates as used (already scaled to the feature's stride).
            separable: depthwise-separable 3x3 convs in the ASPP, its projection and the
                decoder (False: plain 3x3 convs).
            norm: a detectron2 norm name for ``get_norm`` (``"SyncBN"`` in the recipe).
            aux_in_feature: feature for the auxiliary head; None or "" disables it.
            aux_channels: width of the auxiliary head's 3x3 conv.
            aux_loss_weight: weight of the auxiliary loss.
            loss_weight: weight of the main loss.
            ignore_value: label ignored by the loss.
            head_dropout: Dropout2d before each classifier (0.1).
            align_corners: of every bilinear upsampling (False in mmsegmentation).
        """
        super().__init__(
            input_shape,
            common_stride=input_shape[low_level_feature].stride,
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
        if input_shape[low_level_feature].stride >= input_shape[in_feature].stride:
            raise ValueError(
                f"The DeepLabV3+ decoder fuses a finer feature: {low_level_feature} (stride "
                f"{input_shape[low_level_feature].stride}) is not finer than {in_feature} "
                f"(stride {input_shape[in_feature].stride}); set "
                "MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE to 'res2'."
            )
        self.in_feature = in_feature
        self.low_level_feature = low_level_feature
        self.aspp = ASPP(
            input_shape[in_feature].channels,
            channels,
            atrous_rates=atrous_rates,
            norm=norm,
            dropout=0.0,
            align_corners=align_corners,
            separable=separable,
            project_kernel_size=3,
        )
        self.low_level = nn.Sequential(
            *_conv_norm_relu(input_shape[low_level_feature].channels, low_level_channels, 1, norm)
        )
        block = _separable_conv_norm_relu if separable else _conv_norm_relu
        self.decoder = nn.Sequential(
            *block(channels + low_level_channels, channels, 3, norm),
            *block(channels, channels, 3, norm),
        )
        self.predictor = nn.Sequential(
            nn.Dropout2d(head_dropout), nn.Conv2d(channels, num_classes, 1)
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        h = cfg.MODEL.SEM_SEG_HEAD
        in_feature = single_in_feature(cfg, "SeparableDeepLabV3PlusHead")
        if h.LOW_LEVEL_FEATURE not in input_shape:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE {h.LOW_LEVEL_FEATURE!r} is not a backbone "
                f"output; add it to MODEL.RESNETS.OUT_FEATURES (now {sorted(input_shape)})"
            )
        stride = input_shape[in_feature].stride
        return {
            **common_head_kwargs(cfg, input_shape),
            "in_feature": in_feature,
            "low_level_feature": h.LOW_LEVEL_FEATURE,
            "channels": h.CONVS_DIM,
            "low_level_channels": h.LOW_LEVEL_CHANNELS,
            "atrous_rates": scaled_atrous_rates(cfg, stride, "SeparableDeepLabV3PlusHead"),
            "separable": h.USE_DEPTHWISE_SEPARABLE_CONV,
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.low_level(features[self.low_level_feature])
        x = self._upsample(self.aspp(features[self.in_feature]), low.shape[-2:])
        return self.predictor(self.decoder(torch.cat([x, low], dim=1)))
