"""Rules every dataset registration shares: where ``$DETECTRON2_DATASETS`` points, how a set
generated on first use is marked, and what a name that is already registered may hold
(``DATASETS.COCO_FORMAT`` / ``DATASETS.SEM_SEG_FORMAT``)."""

import os
from typing import Mapping

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import StartupError

__all__ = ["GENERATED_KEY", "already_registered", "datasets_root", "is_generated"]

# Metadata key holding the generation arguments of a set written on first use (the toy sets):
# its files need not exist before it is loaded.
GENERATED_KEY = "toy_generate_kwargs"


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``./datasets``, as detectron2 reads it), read now."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def is_generated(meta) -> bool:
    """True for the metadata of a set generated on first use (:data:`GENERATED_KEY`)."""
    return bool(meta.get(GENERATED_KEY))


def already_registered(key: str, name: str, files: Mapping[str, str]) -> bool:
    """True if ``name`` is registered with exactly ``files`` (metadata field -> path), so
    registering again (e.g. in every worker of a launch) is harmless; False if it is free.

    Raises:
        StartupError: ``name`` is taken by a dataset with other files.
    """
    if name not in DatasetCatalog.list():
        return False
    meta = MetadataCatalog.get(name)
    if all(meta.get(field) == path for field, path in files.items()):
        return True
    raise StartupError(
        f"{key}: dataset name {name!r} is already registered with other files; choose another "
        "name"
    )
