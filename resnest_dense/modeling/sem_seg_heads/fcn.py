"""FCN head laid out as in PyTorch-Encoding (Long et al., "Fully Convolutional Networks for
Semantic Segmentation", 2015), the head of Encoding's released ``fcn_resnest50_ade``.

The main head is Encoding's ``FCNHead`` on res5 (3x3 conv 2048 -> 512, norm, ReLU, dropout 0.1,
1x1 classifier), the auxiliary head the same on res4 (1024 -> 256), loss weight 0.2 in our configs;
logits are upsampled bilinearly with ``align_corners=True``. The submodules keep Encoding's
``nn.Sequential`` indices, so a checkpoint converts by renaming prefixes only:

================================  ==========================================
PyTorch-Encoding                  resnest_dense
================================  ==========================================
``head.conv5.{0,1,4}``            ``sem_seg_head.fcn.conv5.{0,1,4}``
``auxlayer.conv5.{0,1,4}``        ``sem_seg_head.auxlayer.conv5.{0,1,4}``
``pretrained.*``                  ``backbone.*`` (backbone converter)
================================  ==========================================
"""

from typing import Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .deeplabv3 import AuxiliaryLossHead, FCNHead, common_head_kwargs, single_in_feature

__all__ = ["EncodingFCNHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class EncodingFCNHead(AuxiliaryLossHead):
    """FCN head (one 3x3 conv block + classifier on res5) with the auxiliary FCN head on res4.

    Losses and inference are those of
    :class:`~resnest_dense.modeling.sem_seg_heads.deeplabv3.AuxiliaryLossHead`.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_feature: str,
        num_classes: int,
        channels: int = 0,
        norm: str = "BN",
        aux_in_feature: Optional[str] = "res4",
        aux_channels: int = 256,
        aux_loss_weight: float = 0.2,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
        head_dropout: float = 0.1,
        align_corners: bool = True,
    ):
        """
        Args:
            input_shape: backbone output shapes (channels and stride per feature).
            in_feature: feature fed to the head (``"res5"``).
            num_classes: number of classes (150 for ADE20K).
            channels: width of the 3x3 conv; 0 = ``in_channels // 4`` (512 on res5), as in
                Encoding.
            norm: a detectron2 norm name for ``get_norm`` (``"SyncBN"`` in the recipe).
            aux_in_feature: feature for the auxiliary head; None or "" disables it.
            aux_channels: width of the auxiliary head's 3x3 conv.
            aux_loss_weight: weight of the auxiliary loss.
            loss_weight: weight of the main loss.
            ignore_value: label ignored by the loss.
            head_dropout: dropout before each classifier (0.1).
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
        in_channels = input_shape[in_feature].channels
        self.fcn = FCNHead(
            in_channels,
            num_classes,
            channels=channels or in_channels // 4,
            norm=norm,
            dropout=head_dropout,
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        return {
            **common_head_kwargs(cfg, input_shape),
            "in_feature": single_in_feature(cfg, "EncodingFCNHead"),
            "channels": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fcn(features[self.in_feature])
