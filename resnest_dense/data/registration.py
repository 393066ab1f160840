"""The rule both config-registered dataset kinds (``DATASETS.COCO_FORMAT``,
``DATASETS.SEM_SEG_FORMAT``) share for names that are already registered."""

from typing import Mapping

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import StartupError

__all__ = ["already_registered"]


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
