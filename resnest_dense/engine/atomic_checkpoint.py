"""A DetectionCheckpointer whose files are never seen half-written.

detectron2 writes ``model_XXXXXXX.pth`` in place and then points ``last_checkpoint`` at it, so a
run killed during the write leaves a truncated file that ``--resume`` then tries to load. Here
both files are written to a temporary name in the same directory, flushed to disk and renamed
over the target (atomic on POSIX file systems): ``last_checkpoint`` only ever names a complete
checkpoint.
"""

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.io import atomic_write

__all__ = ["AtomicDetectionCheckpointer", "atomic_write"]


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` with atomic checkpoint and ``last_checkpoint`` writes.

    Only local directories are written atomically; other storage falls back to detectron2.
    """

    def _local(self) -> bool:
        return "://" not in str(self.save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk or not self._local():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
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
