"""Utilities: inference fast path."""

from .fast_inference import fold_batch_norms, optimize_for_inference

__all__ = ["fold_batch_norms", "optimize_for_inference"]
