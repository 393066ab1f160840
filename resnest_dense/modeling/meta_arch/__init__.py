"""Meta architectures; importing registers them in META_ARCH_REGISTRY."""

from .multiscale_segmentor import MultiScaleSemanticSegmentor

__all__ = ["MultiScaleSemanticSegmentor"]
