"""Model zoo: our configs by name, the registry of released weights, and ``resnest://`` URIs.

Importing this package registers the ``resnest://`` handler with detectron2's ``PathManager``,
so ``MODEL.WEIGHTS resnest://resnest50`` works in every tool.

Modules, each depending only on those listed before it:

* :mod:`.config_files`: where the config files are, by name;
* :mod:`.registry`: the released files (``weights.json``) and lookups by name or config;
* :mod:`.store`: finding, downloading and checksumming a released file offline-first;
* :mod:`.conversion`: a released file as a detectron2 checkpoint (:func:`resolve_weights`);
* :mod:`.handler`: the ``resnest://`` path handler;
* :mod:`.model_zoo`, :mod:`.loading`: a config or a model by name, checked weight loading.

Example::

    from resnest_dense import model_zoo
    name = "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml"
    cfg = model_zoo.get_config(name)
    model = model_zoo.get("ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml",
                          trained=True, device="cpu")
"""

from ..checkpoint import LoadReport, load_checked
from .config_files import config_root, get_config_file, list_configs
from .conversion import resolve_weights
from .handler import ResNeStWeightsHandler
from .model_zoo import get, get_config
from .registry import (
    SCHEME,
    WeightEntry,
    default_registry,
    entry_for_url,
    get_entry,
    load_registry,
    weights_for_config,
)
from .store import ChecksumMismatchError, WeightsNotFoundError, cache_dir, search_dirs

__all__ = [
    "SCHEME",
    "ChecksumMismatchError",
    "LoadReport",
    "ResNeStWeightsHandler",
    "WeightEntry",
    "WeightsNotFoundError",
    "cache_dir",
    "config_root",
    "default_registry",
    "entry_for_url",
    "get",
    "get_config",
    "get_config_file",
    "get_entry",
    "list_configs",
    "load_checked",
    "load_registry",
    "resolve_weights",
    "search_dirs",
    "weights_for_config",
]
