"""Semantic segmentation heads; importing registers them in SEM_SEG_HEADS_REGISTRY."""

from .deeplabv3 import ASPP, ASPPPooling, EncodingDeepLabV3Head, FCNHead

__all__ = ["ASPP", "ASPPPooling", "EncodingDeepLabV3Head", "FCNHead"]
