"""Atomic file writes: a reader never sees a half-written checkpoint, result or weight file.

The file is written to a temporary name in the target's directory, optionally checked, flushed
to disk and renamed over the target (atomic on POSIX file systems). A run killed at any moment
leaves either the old file or the new one, plus at most a ``.tmp_*`` file that
:func:`remove_partial_writes` cleans up. The file gets the permissions an ordinary ``open``
would give it (``0o666`` minus the process umask), not ``mkstemp``'s owner-only ``0o600``, so
checkpoints and results stay readable by a cluster's other users as detectron2's are.
"""

import json
import logging
import os
import tempfile
from typing import IO, Any, Callable, Optional

__all__ = ["TMP_PREFIX", "atomic_write", "atomic_write_json", "remove_partial_writes"]

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp_"


def _file_mode() -> int:
    """``0o666`` minus the umask: what ``open(path, "w")`` creates (the umask is read by
    setting it, so it is set straight back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(
    path: str,
    write_fn: Callable[[IO], Any],
    mode: str = "wb",
    verify: Optional[Callable[[str], None]] = None,
) -> str:
    """Call ``write_fn(file)`` on a temporary file, then rename it to ``path``.

    Args:
        path: the target file; its directory is created if needed.
        write_fn: writes the content into the open file object.
        mode: ``"wb"`` or ``"w"``.
        verify: called with the temporary file's path once it is complete; an exception it
            raises aborts the write (the target is left untouched), e.g. a checksum check.

    Returns:
        ``path``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_json(path: str, obj: Any, indent: int = 1) -> str:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=indent), mode="w")


def remove_partial_writes(directory: str) -> None:
    """Delete the temporary files an interrupted :func:`atomic_write` left in ``directory``."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(TMP_PREFIX):
            logger.warning("Removing %s, a partial write of an interrupted run", name)
            os.remove(os.path.join(directory, name))
