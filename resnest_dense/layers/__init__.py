"""Plain nn layers of ResNeSt: no config reading here."""

from .dropblock import DropBlock2d
from .split_attention import SplitAttentionConv2d, radix_softmax

__all__ = ["DropBlock2d", "SplitAttentionConv2d", "radix_softmax"]
