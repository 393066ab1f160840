"""Registry of released ResNeSt weights, checksummed offline-first loading, ``resnest://`` URIs.

The registry is one data file, ``weights.json`` next to this module: per released file its name,
URL(s), published hash, kind (``imagenet_backbone`` / ``coco_detector`` / ``ade20k_segmenter``),
the config it belongs to and the public source it was copied from.

:func:`resolve_weights` turns a registry name, a file name or a local path into a local file
detectron2 can load. Files are looked for in the cache directory (``$RESNEST_DENSE_CACHE``,
default ``~/.cache/resnest_dense``), in the directories of ``$RESNEST_DENSE_WEIGHTS_DIRS``
(``os.pathsep``-separated), in torch.hub's checkpoint directory and in PyTorch-Encoding's
``~/.encoding/models``. A file is downloaded only when none is found, downloads are allowed
(not ``RESNEST_DENSE_OFFLINE=1``) and a URL answers; downloads go to a temporary file that is
renamed only after its checksum matched. ImageNet classifiers and Encoding DeepLabV3 files are
converted once into detectron2 names and the converted file is cached.

Importing this module registers :class:`ResNeStWeightsHandler` with detectron2's
``PathManager``, so ``MODEL.WEIGHTS resnest://resnest50`` (or ``resnest://<file name>``) works in
every tool that loads weights through ``DetectionCheckpointer``.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.utils.file_io import PathHandler, PathManager

__all__ = [
    "SCHEME",
    "ChecksumMismatchError",
    "WeightEntry",
    "WeightsNotFoundError",
    "ResNeStWeightsHandler",
    "cache_dir",
    "default_registry",
    "file_hash",
    "get_entry",
    "load_registry",
    "resolve_weights",
    "search_dirs",
    "verify_file",
    "weights_for_config",
]

logger = logging.getLogger(__name__)

SCHEME = "resnest://"
REGISTRY_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.json")
KINDS = ("imagenet_backbone", "coco_detector", "ade20k_segmenter")
# How a released file becomes a detectron2 checkpoint; "detectron2" files load as they are.
FORMATS = ("resnest_official", "encoding_resnet", "encoding_deeplab", "detectron2")
_TRUE = ("1", "true", "yes", "on")


class WeightsNotFoundError(FileNotFoundError):
    """A registry file is neither on disk nor downloadable; the message says where to put it."""


class ChecksumMismatchError(ValueError):
    """A file's hash differs from the published one; the message names file, expected, got."""


@dataclass(frozen=True)
class WeightEntry:
    """One released file of the registry (see ``weights.json`` for the field meanings)."""

    name: str
    file: str
    kind: str
    urls: Tuple[str, ...]
    hash_algorithm: str
    hash_value: Optional[str]
    format: str
    variant: Optional[str]
    config: Optional[str]
    source: str
    archive: Optional[str] = None

    @property
    def needs_conversion(self) -> bool:
        return self.format != "detectron2"

    def expected_hash(self) -> str:
        if not self.hash_value:
            return "unknown (no hash was published for this file)"
        what = "prefix" if len(self.hash_value) < 40 else "digest"
        return f"{self.hash_algorithm} {what} {self.hash_value}"


def _parse_entry(raw: Dict, sources: Dict) -> WeightEntry:
    h = raw.get("hash") or {}
    entry = WeightEntry(
        name=raw["name"],
        file=raw["file"],
        kind=raw["kind"],
        urls=tuple(raw.get("urls") or ()),
        hash_algorithm=h.get("algorithm", "sha256"),
        hash_value=(h.get("value") or None),
        format=raw["format"],
        variant=raw.get("variant"),
        config=raw.get("config"),
        source=raw["source"],
        archive=raw.get("archive"),
    )
    if entry.kind not in KINDS:
        raise ValueError(f"weights registry: {entry.name} has unknown kind {entry.kind!r}")
    if entry.format not in FORMATS:
        raise ValueError(f"weights registry: {entry.name} has unknown format {entry.format!r}")
    if entry.hash_algorithm not in ("sha256", "sha1"):
        raise ValueError(f"weights registry: {entry.name}: hash algorithm must be sha256/sha1")
    if entry.source not in sources:
        raise ValueError(f"weights registry: {entry.name} names unknown source {entry.source!r}")
    return entry


@lru_cache(maxsize=8)
def load_registry(path: str = REGISTRY_FILE) -> Dict[str, WeightEntry]:
    """Read a registry file; returns ``{name: WeightEntry}``."""
    with open(path) as f:
        data = json.load(f)
    sources = data.get("sources", {})
    entries = [_parse_entry(raw, sources) for raw in data["entries"]]
    registry = {e.name: e for e in entries}
    if len(registry) != len(entries):
        raise ValueError(f"{path}: duplicate entry names")
    return registry


def default_registry() -> Dict[str, WeightEntry]:
    """The built-in registry, extended (and overridden by name) by the files listed in
    ``$RESNEST_DENSE_REGISTRY`` (``os.pathsep``-separated), e.g. for mirrors or own models."""
    registry = dict(load_registry())
    for path in os.environ.get("RESNEST_DENSE_REGISTRY", "").split(os.pathsep):
        if path:
            registry.update(load_registry(os.path.abspath(os.path.expanduser(path))))
    return registry


def get_entry(name: str, registry: Optional[Dict[str, WeightEntry]] = None) -> WeightEntry:
    """Look up an entry by name, file name (with or without ``.pth``) or ``resnest://`` URI."""
    registry = registry if registry is not None else default_registry()
    key = name[len(SCHEME) :] if name.startswith(SCHEME) else name
    if key in registry:
        return registry[key]
    for entry in registry.values():
        if key in (entry.file, os.path.splitext(entry.file)[0]):
            return entry
    raise KeyError(
        f"{name!r} is not in the weights registry. Known names: {', '.join(sorted(registry))}"
    )


def weights_for_config(
    config_name: str, registry: Optional[Dict[str, WeightEntry]] = None
) -> List[WeightEntry]:
    """Released trained models (not ImageNet backbones) whose config is ``config_name``."""
    registry = registry if registry is not None else default_registry()
    return [
        e for e in registry.values() if e.config == config_name and e.kind != "imagenet_backbone"
    ]


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
        for chunk in iter(lambda: f.read(1 << 20), b""):
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


def _atomic_target(dst: str) -> str:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=os.path.basename(dst) + ".", suffix=".part", dir=os.path.dirname(dst)
    )
    os.close(fd)
    return tmp


def _extract_member(zip_path: str, member: str, dst: str, entry: WeightEntry) -> str:
    """Extract ``member`` of ``zip_path`` to ``dst`` (verified, atomically)."""
    tmp = _atomic_target(dst)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [n for n in zf.namelist() if os.path.basename(n) == member]
            if not names:
                raise WeightsNotFoundError(
                    f"{zip_path} does not contain {member} (it holds {zf.namelist()[:5]})"
                )
            with zf.open(names[0]) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        verify_file(tmp, entry)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst


def _find_local(entry: WeightEntry) -> Optional[str]:
    zip_name = os.path.splitext(entry.file)[0] + ".zip"
    for d in search_dirs():
        path = os.path.join(d, entry.file)
        if os.path.isfile(path):
            verify_file(path, entry)
            return path
        if entry.archive == "zip" and os.path.isfile(os.path.join(d, zip_name)):
            dst = os.path.join(cache_dir(), entry.file)
            logger.info("Extracting %s from %s", entry.file, os.path.join(d, zip_name))
            return _extract_member(os.path.join(d, zip_name), entry.file, dst, entry)
    return None


def _download(entry: WeightEntry, timeout: float = 30.0) -> Tuple[Optional[str], List[str]]:
    """Try every URL; returns the verified cached path (or None) and the errors met."""
    dst = os.path.join(cache_dir(), entry.file)
    errors = []
    for url in entry.urls:
        tmp = _atomic_target(dst)
        try:
            logger.info("Downloading %s from %s", entry.file, url)
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
            if entry.archive == "zip":
                return _extract_member(tmp, entry.file, dst, entry), errors
            verify_file(tmp, entry)
            os.replace(tmp, dst)
            return dst, errors
        except (urllib.error.URLError, OSError, zipfile.BadZipFile, ValueError) as e:
            if isinstance(e, ChecksumMismatchError):
                raise
            errors.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
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
    ]
    return "\n".join(lines)


def fetch(entry: WeightEntry, download: Optional[bool] = None, timeout: float = 30.0) -> str:
    """Local, checksum-verified path of the released file of ``entry`` (as published)."""
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


def _variant_backbone_state(entry: WeightEntry) -> Dict[str, torch.Tensor]:
    """Names and shapes (meta tensors) of the backbone an ImageNet entry initialises."""
    from detectron2.layers import ShapeSpec

    from ..checkpoint import build_variant_backbone
    from ..config import get_resnest_cfg
    from ..modeling.backbone.dilated import build_resnet_dilated_backbone

    with torch.device("meta"):
        if entry.format == "resnest_official":
            return build_variant_backbone(entry.variant).state_dict()
        depth = int(entry.variant.replace("resnet", "").rstrip("s"))
        cfg = get_resnest_cfg()
        cfg.MODEL.RESNETS.merge_from_list(
            ["DEPTH", depth, "DEEP_STEM", True, "STEM_WIDTH", 64, "NORM", "FrozenBN"]
        )
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        return build_resnet_dilated_backbone(cfg, ShapeSpec(channels=3)).state_dict()


def _config_model_state(config_name: str) -> Dict[str, torch.Tensor]:
    """Names and shapes (meta tensors) of the model built from one of our configs."""
    from detectron2.modeling import build_model

    from .model_zoo import get_config

    cfg = get_config(config_name)
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg).state_dict()


def convert(entry: WeightEntry, src: str, dst: str) -> str:
    """Convert the released file ``src`` of ``entry`` to a detectron2 checkpoint ``dst``.

    The result is checked (names and shapes, strictly) against the network it is meant for
    before it is written atomically.
    """
    from ..checkpoint import check_state_dict, convert_resnest_state_dict, load_torch_state_dict
    from ..checkpoint.encoding import (
        convert_encoding_backbone_state_dict,
        convert_encoding_deeplab_state_dict,
    )

    state = load_torch_state_dict(src)
    if entry.format == "encoding_deeplab":
        converted, _ = convert_encoding_deeplab_state_dict(state)
        if entry.config:
            check_state_dict(converted, _config_model_state(entry.config), what=src)
        # Full model names: load strictly.
        heuristics = False
    else:
        if entry.format == "resnest_official":
            converted, _ = convert_resnest_state_dict(state)
        else:
            converted, _ = convert_encoding_backbone_state_dict(state)
        check_state_dict(converted, _variant_backbone_state(entry), what=src)
        # Backbone names without a prefix: detectron2 matches them to backbone.bottom_up.*
        # (FPN) or backbone.* (dilated) by suffix, as it does for its own ImageNet models.
        heuristics = True
    tmp = _atomic_target(dst)
    try:
        torch.save(
            {
                "model": converted,
                "__author__": "resnest_dense",
                "matching_heuristics": heuristics,
                "converted_from": entry.file,
            },
            tmp,
        )
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("Converted %s (%s) to %s", src, entry.format, dst)
    return dst


def resolve_weights(
    name_or_path: str,
    download: Optional[bool] = None,
    registry: Optional[Dict[str, WeightEntry]] = None,
) -> str:
    """Local path of a detectron2-loadable checkpoint for a path, registry name or URI.

    Args:
        name_or_path: an existing local file (returned unchanged), a registry name
            (``resnest50``, ``faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x``), a published
            file name (``resnest50-528c19ca.pth``) or ``resnest://`` followed by either.
        download: allow downloading; None means "unless ``RESNEST_DENSE_OFFLINE`` is set".
        registry: an alternative registry (``load_registry(path)``); default
            :func:`default_registry`.

    Returns:
        For detectron2-format entries the verified released file; for ImageNet and
        PyTorch-Encoding entries the converted checkpoint cached as
        ``<cache>/converted/<file stem>.d2.pth``.

    Raises:
        WeightsNotFoundError: not on disk and not downloadable; the message gives the URL(s)
            and the exact path to put the file at.
        ChecksumMismatchError: a found or downloaded file has the wrong hash.
        KeyError: neither a file nor a registry name.
    """
    if not name_or_path.startswith(SCHEME) and os.path.isfile(os.path.expanduser(name_or_path)):
        return os.path.expanduser(name_or_path)
    try:
        entry = get_entry(name_or_path, registry)
    except KeyError as e:
        raise WeightsNotFoundError(f"{name_or_path} is not a file; {e.args[0]}") from None
    if not entry.needs_conversion:
        return fetch(entry, download)
    stem = os.path.splitext(entry.file)[0]
    dst = os.path.join(cache_dir(), "converted", f"{stem}.d2.pth")
    if os.path.isfile(dst):
        return dst
    return convert(entry, fetch(entry, download), dst)


class ResNeStWeightsHandler(PathHandler):
    """``resnest://<registry name or file name>`` for detectron2's ``PathManager``."""

    PREFIX = SCHEME

    def _get_supported_prefixes(self) -> List[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs) -> str:
        return resolve_weights(path)

    def _open(self, path: str, mode: str = "r", **kwargs):
        return open(resolve_weights(path), mode)


def _register_handler() -> None:
    # Once per process, also if this module is reloaded.
    if SCHEME not in PathManager._path_handlers:
        PathManager.register_handler(ResNeStWeightsHandler())


_register_handler()
