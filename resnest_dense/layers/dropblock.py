"""DropBlock (Ghiasi et al., "DropBlock: A regularization method for convolutional networks",
NeurIPS 2018), as used by ResNeSt in res4/res5 when ``MODEL.RESNETS.DROPBLOCK_PROB > 0``."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DropBlock2d"]


class DropBlock2d(nn.Module):
    """Zero out ``block_size x block_size`` squares of a feature map during training.

    Args:
        drop_prob: expected fraction of dropped activations (0 <= p < 1).
        block_size: side of a dropped square (odd).
    """

    def __init__(self, drop_prob: float, block_size: int = 3):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropBlock2d: drop_prob must be in [0, 1), got {drop_prob}")
        if block_size % 2 != 1:
            raise ValueError(f"DropBlock2d: block_size must be odd, got {block_size}")
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        height, width = x.shape[-2:]
        bs = min(self.block_size, height, width)
        valid = max((height - bs + 1) * (width - bs + 1), 1)
        # Seed rate such that the dropped area (seeds grown into blocks) is about drop_prob.
        gamma = self.drop_prob * height * width / (bs * bs * valid)
        seeds = (torch.rand_like(x) < gamma).to(x.dtype)
        dropped = F.max_pool2d(seeds, kernel_size=bs, stride=1, padding=bs // 2)
        keep = 1.0 - dropped[..., :height, :width]
        scale = keep.numel() / keep.sum().clamp(min=1.0)
        return x * keep * scale
