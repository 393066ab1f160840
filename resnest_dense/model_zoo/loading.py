"""Load weights into a model through ``DetectionCheckpointer`` and check what was loaded.

``DetectionCheckpointer`` only logs missing / unexpected / mis-shaped keys; a model that is
silently half random is the most common cause of "0 instances detected". :func:`load_checked`
loads exactly as detectron2 does (so ``resnest://`` URIs, URLs and matching heuristics work)
and raises when the checkpoint does not cover the model.
"""

import logging
from typing import List, NamedTuple

from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from ..checkpoint import CheckpointMismatchError
from ..checkpoint.convert import _format_keys

__all__ = ["LoadReport", "load_checked"]

logger = logging.getLogger(__name__)


class LoadReport(NamedTuple):
    """Keys left out of a load (``num_batches_tracked`` counters are not reported)."""

    missing: List[str]
    unexpected: List[str]
    wrong_shape: List[str]

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)


class _RecordingCheckpointer(DetectionCheckpointer):
    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def load_checked(model: nn.Module, weights: str, strict: bool = True) -> LoadReport:
    """Load ``weights`` (path, URL or ``resnest://`` URI) into ``model``.

    Args:
        model: the detectron2 model.
        weights: anything ``DetectionCheckpointer.load`` accepts.
        strict: raise :class:`CheckpointMismatchError` unless the load is clean.

    Returns:
        What was missing, unexpected or of the wrong shape.
    """
    checkpointer = _RecordingCheckpointer(model)
    checkpointer.incompatible = None
    checkpointer.load(weights)
    inc = checkpointer.incompatible

    def keep(keys):
        return sorted(k for k in keys if not k.endswith("num_batches_tracked"))

    report = LoadReport(
        missing=keep(inc.missing_keys) if inc else [],
        unexpected=keep(inc.unexpected_keys) if inc else [],
        wrong_shape=[f"{k}: {a} vs model {b}" for k, a, b in (inc.incorrect_shapes if inc else [])],
    )
    if strict and not report.clean:
        raise CheckpointMismatchError(
            f"{weights} does not fit the model: missing {len(report.missing)} "
            f"({_format_keys(report.missing, 6)}), unexpected {len(report.unexpected)} "
            f"({_format_keys(report.unexpected, 6)}), wrong shape {len(report.wrong_shape)} "
            f"({_format_keys(report.wrong_shape, 4)})"
        )
    return report
