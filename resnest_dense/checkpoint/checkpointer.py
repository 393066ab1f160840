"""The one checkpointer of resnest_dense: atomic saves, loads that say what they loaded.

:class:`Checkpointer` is detectron2's ``DetectionCheckpointer`` (so ``resnest://`` URIs, URLs and
detectron2's name-matching heuristics work as usual) with:

* atomic writes of checkpoints and ``last_checkpoint`` (:func:`resnest_dense.utils.io.atomic_write`):
  a run killed during a save leaves the previous checkpoint and tag intact;
* a :class:`LoadReport` of every load (missing / unexpected / mis-shaped keys). detectron2 only
  logs them, and a silently half-random model is the most common cause of "0 instances
  detected"; ``strict`` loads raise :class:`CheckpointMismatchError` instead;
* unreadable files (truncated, not a PyTorch file) raise :class:`CheckpointReadError` naming the
  file; on ``--resume`` the message names the intact checkpoints of the run to go back to.
"""

import logging
import os
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from ..utils.io import atomic_write
from .convert import CheckpointMismatchError, _format_keys

__all__ = ["CheckpointReadError", "Checkpointer", "LoadReport", "load_checked"]

logger = logging.getLogger(__name__)


class CheckpointReadError(RuntimeError):
    """A checkpoint file exists but cannot be read; the message names it and what to do."""


class LoadReport(NamedTuple):
    """Keys left out of a load (``num_batches_tracked`` counters are not reported)."""

    missing: List[str]
    unexpected: List[str]
    wrong_shape: List[str]

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    @classmethod
    def from_incompatible(cls, incompatible) -> "LoadReport":
        """From fvcore's ``_IncompatibleKeys`` (None: nothing was left out)."""
        if incompatible is None:
            return cls([], [], [])

        def keep(keys):
            return sorted(k for k in keys if not k.endswith("num_batches_tracked"))

        return cls(
            missing=keep(incompatible.missing_keys),
            unexpected=keep(incompatible.unexpected_keys),
            wrong_shape=[
                f"{k}: {tuple(a)} in the file vs {tuple(b)} in the model"
                for k, a, b in incompatible.incorrect_shapes
            ],
        )

    def summary(self) -> str:
        """One line: the counts and the first keys of each kind."""
        if self.clean:
            return "every parameter of the model loaded"
        return (
            f"missing {len(self.missing)} ({_format_keys(self.missing, 4)}), "
            f"unexpected {len(self.unexpected)} ({_format_keys(self.unexpected, 4)}), "
            f"wrong shape {len(self.wrong_shape)} ({_format_keys(self.wrong_shape, 3)})"
        )


_ITER_RE = re.compile(r"model_(\d+)\.pth$")


class Checkpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves and checked loads.

    Args:
        model, save_dir, save_to_disk, **checkpointables: as for ``DetectionCheckpointer``.

        extra_data: written into every checkpoint this object saves (e.g. the class names of
            the training data, :func:`resnest_dense.engine.class_names.checkpoint_metadata`).

    Attributes:
        last_report: the :class:`LoadReport` of the latest load (None before any load).
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        extra_data: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ):
        super().__init__(model, save_dir, **kwargs)
        self.extra_data: Dict[str, Any] = dict(extra_data or {})
        self.last_report: Optional[LoadReport] = None
        self._strict = False
        self._resuming = False
        self._path = ""

    # ------------------------------------------------------------------ saving

    def _local(self) -> bool:
        return "://" not in str(self.save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        kwargs = {**self.extra_data, **kwargs}
        if not self.save_dir or not self.save_to_disk or not self._local():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        bad = [
            k for k, v in data["model"].items() if v.is_floating_point() and not v.isfinite().all()
        ]
        if bad:
            raise FloatingPointError(
                f"Non-finite values in {len(bad)} tensors of the model ({_format_keys(bad, 4)}): "
                f"checkpoint {name} is not written, so the last checkpoint stays a good one."
            )
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local():
            return super().tag_last_checkpoint(last_filename_basename)
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")

    # ----------------------------------------------------------------- loading

    def load_checked(
        self, path: str, strict: bool = True, checkpointables: Optional[List[str]] = None
    ) -> Tuple[LoadReport, Dict[str, Any]]:
        """Load ``path`` (file, URL or ``resnest://`` URI) and report what was left out.

        Args:
            path: the weights.
            strict: raise :class:`CheckpointMismatchError` unless every parameter and buffer
                of the model was loaded with its shape and nothing else was in the file.
            checkpointables: as for ``load`` (None: all that the file holds).

        Returns:
            The :class:`LoadReport` and the rest of the checkpoint (``iteration``, ...).
        """
        self._strict = strict
        try:
            extra = self.load(path, checkpointables=checkpointables)
        finally:
            self._strict = False
        return self.last_report, extra

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        self._path = path  # named in the messages of _load_file / _load_model
        return super().load(path, *args, **kwargs)

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """As detectron2's, but a resumed checkpoint must fit the model exactly (a changed
        ``NUM_CLASSES`` is named before the optimizer state is touched)."""
        self._resuming = resume and self.has_checkpoint()
        self._strict = self._resuming
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._strict = self._resuming = False

    # _load_file and _load_model are fvcore's hooks for subclasses (detectron2's own
    # DetectionCheckpointer overrides both).

    def _load_file(self, f: str) -> Dict[str, Any]:
        try:
            return super()._load_file(f)
        except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
            raise CheckpointReadError(self._unreadable_message(f, e)) from e

    def _unreadable_message(self, path: str, error: Exception) -> str:
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        message = (
            f"Cannot read checkpoint {path}: {type(error).__name__}: {reason}. The file is "
            "truncated, corrupt or not a PyTorch checkpoint."
        )
        if self._resuming:
            intact = self.intact_checkpoints(exclude=path)
            if intact:
                message += (
                    f" Intact checkpoints of this run: {', '.join(intact[-3:])}. To resume from "
                    f"the latest, run: echo {intact[-1]} > "
                    f"{os.path.join(self.save_dir, 'last_checkpoint')}"
                )
            else:
                message += " No other checkpoint of this run can be read; start without --resume."
        else:
            message += " Download or copy it again, or point MODEL.WEIGHTS at another file."
        return message

    def intact_checkpoints(self, exclude: str = "") -> List[str]:
        """``model_*.pth`` files of ``save_dir`` that torch can read, oldest first."""
        names = []
        for name in sorted(os.listdir(self.save_dir)) if os.path.isdir(self.save_dir) else []:
            path = os.path.join(self.save_dir, name)
            if not _ITER_RE.search(name) or os.path.abspath(path) == os.path.abspath(exclude):
                continue
            try:
                torch.load(path, map_location="cpu", weights_only=False)
            except Exception:  # noqa: BLE001 - any failure means "not intact"
                continue
            names.append(name)
        return names

    def _load_model(self, checkpoint: Dict[str, Any]):
        incompatible = super()._load_model(checkpoint)
        self.last_report = LoadReport.from_incompatible(incompatible)
        if self._strict and not self.last_report.clean:
            what = "The checkpoint to resume from" if self._resuming else "The weights"
            what += f" {self._path}"
            fix = (
                "The model's config changed since this checkpoint was written (e.g. "
                "NUM_CLASSES): use a new OUTPUT_DIR, or train without --resume and MODEL.WEIGHTS "
                "pointing at the checkpoint to fine-tune from it."
                if self._resuming
                else "Use the config the weights were trained with, or weights trained for "
                "this config."
            )
            raise CheckpointMismatchError(
                f"{what} do(es) not fit the model: {self.last_report.summary()}. {fix}"
            )
        return incompatible


def load_checked(model: nn.Module, weights: str, strict: bool = True) -> LoadReport:
    """Load ``weights`` (path, URL or ``resnest://`` URI) into ``model``; see
    :meth:`Checkpointer.load_checked`."""
    report, _ = Checkpointer(model).load_checked(weights, strict=strict)
    return report
