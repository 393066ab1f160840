"""Models; importing registers the backbones, segmentation heads and meta-architectures."""

from . import meta_arch, sem_seg_heads  # noqa: F401  (registration)
from .backbone import *  # noqa: F401,F403
