"""The registry of released ResNeSt weights: one data file, ``weights.json``, next to this module.

Per released file it records the name, URL(s), published hash, kind (``imagenet_backbone`` /
``coco_detector`` / ``coco_panoptic`` / ``ade20k_segmenter`` / ``pcontext_segmenter``), the format it was published
in, the config it belongs to and the public source it was copied from.
``$RESNEST_DENSE_REGISTRY`` adds files of the same layout (mirrors, own models). This module only
reads and looks up entries; finding the files is :mod:`.store`, turning them into detectron2
checkpoints is :mod:`.conversion`.
"""

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

__all__ = [
    "FORMATS",
    "KINDS",
    "REGISTRY_FILE",
    "SCHEME",
    "WeightEntry",
    "default_registry",
    "get_entry",
    "load_registry",
    "weights_for_config",
]

# ``resnest://<registry name or file name>`` names a registry entry wherever a path is accepted.
SCHEME = "resnest://"
REGISTRY_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.json")
KINDS = (
    "imagenet_backbone",
    "coco_detector",
    "coco_panoptic",
    "ade20k_segmenter",
    "pcontext_segmenter",
)
# How a released file becomes a detectron2 checkpoint; "detectron2" files load as they are.
FORMATS = (
    "resnest_official",
    "encoding_resnet",
    "encoding_deeplab",
    "encoding_fcn",
    "detectron2",
)


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
