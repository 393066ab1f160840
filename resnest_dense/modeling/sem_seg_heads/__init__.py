"""Semantic segmentation heads; importing registers them in SEM_SEG_HEADS_REGISTRY."""

from .deeplabv3 import ASPP, ASPPPooling, AuxiliaryLossHead, EncodingDeepLabV3Head, FCNHead
from .deeplabv3plus import SeparableDeepLabV3PlusHead
from .fcn import EncodingFCNHead

__all__ = [
    "ASPP",
    "ASPPPooling",
    "AuxiliaryLossHead",
    "EncodingDeepLabV3Head",
    "EncodingFCNHead",
    "FCNHead",
    "SeparableDeepLabV3PlusHead",
]
