"""Offline-first, checksummed local copies of released weight files.

A registry file is looked for in the cache directory (``$RESNEST_DENSE_CACHE``, default
``~/.cache/resnest_dense``), in the directories of ``$RESNEST_DENSE_WEIGHTS_DIRS``
(``os.pathsep``-separated), in torch.hub's checkpoint directory and in PyTorch-Encoding's
``~/.encoding/models``, as the published ``.pth`` or, for entries served zipped, as the ``.zip``.
It is downloaded only when none is found, downloads are allowed (not ``RESNEST_DENSE_OFFLINE=1``)
and a URL answers. Every file written to the cache (download, extraction) goes through
:func:`resnest_dense.utils.io.atomic_write` with the checksum as its ``verify`` step, so a file
appears under its final name only once its hash matched.
"""

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import List, Optional, Tuple

import torch

from ..utils.io import TMP_PREFIX, atomic_write
from .registry import SCHEME, WeightEntry

__all__ = [
    "ChecksumMismatchError",
    "WeightsNotFoundError",
    "cache_dir",
    "downloads_allowed",
    "fetch",
    "file_hash",
    "search_dirs",
    "verify_file",
]

logger = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
_CHUNK = 1 << 20


class WeightsNotFoundError(FileNotFoundError):
    """A registry file is neither on disk nor downloadable; the message says where to put it."""


class ChecksumMismatchError(ValueError):
    """A file's hash differs from the published one; the message names file, expected, got."""


def cache_dir() -> str:
    """``$RESNEST_DENSE_CACHE``, default ``~/.cache/resnest_dense`` (not created here)."""
    return os.path.expanduser(
        os.environ.get("RESNEST_DENSE_CACHE") or os.path.join("~", ".cache", "resnest_dense")
    )


def search_dirs() -> List[str]:
    """Directories searched for a registry file, in order; the cache directory first."""
    dirs = [cache_dir()]
    extra = os.environ.get("RESNEST_DENSE_WEIGHTS_DIRS", "")
    dirs += [os.path.expanduser(d) for d in extra.split(os.pathsep) if d]
    # Where the upstream tools put the same files: torch.hub (official ResNeSt) and
    # PyTorch-Encoding's model store.
    dirs.append(os.path.join(torch.hub.get_dir(), "checkpoints"))
    dirs.append(os.path.expanduser(os.path.join("~", ".encoding", "models")))
    return list(dict.fromkeys(dirs))


def file_hash(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str, entry: WeightEntry) -> None:
    """Raise :class:`ChecksumMismatchError` unless ``path`` has the entry's published hash.

    Entries without a published hash are accepted with a warning.
    """
    if not entry.hash_value:
        logger.warning(
            "%s: no checksum was published for %s; using %s unverified.",
            entry.name,
            entry.file,
            path,
        )
        return
    got = file_hash(path, entry.hash_algorithm)
    if not got.startswith(entry.hash_value.lower()):
        raise ChecksumMismatchError(
            f"Checksum mismatch for {path} ({entry.name}): expected {entry.expected_hash()}, "
            f"got {entry.hash_algorithm} {got}. The file is truncated, corrupt or another "
            f"release; delete it and fetch {entry.file} again from: {', '.join(entry.urls)}"
        )


def downloads_allowed(download: Optional[bool] = None) -> bool:
    """``download`` if given, else False when ``RESNEST_DENSE_OFFLINE`` is set true."""
    if download is not None:
        return download
    return os.environ.get("RESNEST_DENSE_OFFLINE", "").lower() not in _TRUE


def _write_verified(dst: str, entry: WeightEntry, write_fn) -> str:
    return atomic_write(dst, write_fn, mode="wb", verify=lambda tmp: verify_file(tmp, entry))


def _extract_member(zip_path: str, entry: WeightEntry, dst: str) -> str:
    """Extract the entry's file from ``zip_path`` to ``dst`` (verified, atomically)."""
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if os.path.basename(n) == entry.file]
        if not names:
            raise WeightsNotFoundError(
                f"{zip_path} does not contain {entry.file} (it holds {zf.namelist()[:5]})"
            )
        with zf.open(names[0]) as src:
            return _write_verified(dst, entry, lambda out: shutil.copyfileobj(src, out, _CHUNK))


def _find_local(entry: WeightEntry) -> Optional[str]:
    zip_name = os.path.splitext(entry.file)[0] + ".zip"
    for d in search_dirs():
        path = os.path.join(d, entry.file)
        if os.path.isfile(path):
            verify_file(path, entry)
            return path
        if entry.archive == "zip" and os.path.isfile(os.path.join(d, zip_name)):
            logger.info("Extracting %s from %s", entry.file, os.path.join(d, zip_name))
            dst = os.path.join(cache_dir(), entry.file)
            return _extract_member(os.path.join(d, zip_name), entry, dst)
    return None


def _download_one(url: str, entry: WeightEntry, dst: str, timeout: float) -> str:
    def copy_response(out):
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, _CHUNK)

    logger.info("Downloading %s from %s", entry.file, url)
    if entry.archive != "zip":
        return _write_verified(dst, entry, copy_response)
    # The archive itself is not kept: it lives under a temporary name in the cache (removed on
    # exit, or by remove_partial_writes after a kill) while the member is extracted.
    with tempfile.NamedTemporaryFile(
        prefix=TMP_PREFIX + os.path.basename(dst), suffix=".zip", dir=os.path.dirname(dst)
    ) as archive:
        copy_response(archive)
        archive.flush()
        return _extract_member(archive.name, entry, dst)


def _download(entry: WeightEntry, timeout: float = 30.0) -> Tuple[Optional[str], List[str]]:
    """Try every URL; returns the verified cached path (or None) and the errors met."""
    dst = os.path.join(cache_dir(), entry.file)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    errors = []
    for url in entry.urls:
        try:
            return _download_one(url, entry, dst, timeout), errors
        except ChecksumMismatchError:
            raise
        except (urllib.error.URLError, OSError, zipfile.BadZipFile, ValueError) as e:
            errors.append(f"{url}: {e}")
    return None, errors


def _missing_message(entry: WeightEntry, why: str) -> str:
    put = os.path.join(cache_dir(), entry.file)
    lines = [
        f"Weights {entry.name!r} ({entry.kind}) are not available offline: {why}.",
        f"Download {entry.file} from: {' or '.join(entry.urls)}",
    ]
    if entry.archive == "zip":
        lines.append("(the URL serves a .zip; put the .zip or the extracted .pth there)")
    lines += [
        f"and put it at: {put}",
        f"(or in a directory listed in RESNEST_DENSE_WEIGHTS_DIRS). Expected "
        f"{entry.expected_hash()}. Searched: {', '.join(search_dirs())}",
        f"A config names it as MODEL.WEIGHTS {SCHEME}{entry.name} (or by its URL).",
    ]
    return "\n".join(lines)


def fetch(entry: WeightEntry, download: Optional[bool] = None, timeout: float = 30.0) -> str:
    """Local, checksum-verified path of the released file of ``entry`` (as published).

    Raises:
        WeightsNotFoundError: not on disk and not downloadable; the message gives the URL(s)
            and the exact path to put the file at.
        ChecksumMismatchError: a found or downloaded file has the wrong hash.
    """
    path = _find_local(entry)
    if path is not None:
        return path
    if not downloads_allowed(download):
        raise WeightsNotFoundError(
            _missing_message(
                entry,
                "not found locally and downloads are off "
                "(RESNEST_DENSE_OFFLINE or download=False)",
            )
        )
    path, errors = _download(entry, timeout=timeout)
    if path is None:
        raise WeightsNotFoundError(
            _missing_message(
                entry, "not found locally and no URL answered (" + "; ".join(errors) + ")"
            )
        )
    return path
