"""The config files of the model zoo, by name: the one module that knows where they live.

Names are paths relative to ``configs/`` (for example
``"COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml"``). The files are read
from ``resnest_dense/model_zoo/configs`` (a link to the repository's ``configs/`` in a source
checkout, a copy in an installed wheel) or, failing that, from ``configs/`` next to the package.
This module imports nothing of the weight code, so both the model zoo and the weight conversion
can depend on it.
"""

import os
from typing import List

__all__ = ["config_root", "list_configs", "get_config_file"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def config_root() -> str:
    """The directory holding the config tree (``COCO-Detection/``, ``ADE20K-.../``, ...)."""
    for candidate in (
        os.path.join(_HERE, "configs"),
        os.path.join(os.path.dirname(os.path.dirname(_HERE)), "configs"),
    ):
        if os.path.isdir(candidate):
            return candidate
    raise RuntimeError(
        "resnest_dense configs not found: neither resnest_dense/model_zoo/configs nor the "
        "repository's configs/ exists. Reinstall the package (package_data) or run from a "
        "source checkout."
    )


def list_configs() -> List[str]:
    """All config names (relative paths), sorted; ``Base-*`` files excluded."""
    root = config_root()
    names = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            if f.endswith(".yaml") and not f.startswith("Base-"):
                names.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(n.replace(os.sep, "/") for n in names)


def get_config_file(config_path: str) -> str:
    """Absolute path of a config given its name relative to ``configs/``.

    Raises:
        RuntimeError: no such config; the message lists the available ones.
    """
    path = os.path.join(config_root(), config_path)
    if not os.path.isfile(path):
        raise RuntimeError(
            f"{config_path} not available in the resnest_dense model zoo. Available: "
            + ", ".join(list_configs())
        )
    return path
