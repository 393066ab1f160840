"""Models; importing registers the backbones, segmentation heads, meta-architectures and the
proposal generator."""

from . import meta_arch, proposal_generator, sem_seg_heads  # noqa: F401  (registration)
from .backbone import *  # noqa: F401,F403
