"""A DetectionCheckpointer whose files are never seen half-written.

detectron2 writes ``model_XXXXXXX.pth`` in place and then points ``last_checkpoint`` at it, so a
run killed during the write leaves a truncated file that ``--resume`` then tries to load. Here
both files are written to a temporary name in the same directory, flushed to disk and renamed
over the target (atomic on POSIX file systems): ``last_checkpoint`` only ever names a complete
checkpoint.
"""

import os
import tempfile
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicDetectionCheckpointer", "atomic_write"]


def atomic_write(path: str, write_fn, mode: str = "wb") -> None:
    """Call ``write_fn(file)`` on a temporary file, fsync it and rename it to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
