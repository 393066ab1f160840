"""resnest_dense: ResNeSt (Split-Attention) backbones, detectors and DeepLabV3 for detectron2.

Importing the package registers everything in detectron2's registries: the ResNeSt backbones
(plain, FPN, RetinaNet FPN, dilated), the DeepLabV3 head and multi-scale segmentor, the
datasets (toy sets, ADE20K) and the ``resnest://`` weight handler. Call
:func:`add_resnest_config` on a detectron2 config before merging a YAML file of this project,
or build one with :func:`get_resnest_cfg`.
"""

from . import data  # noqa: F401  (registers datasets)
from . import modeling  # noqa: F401  (registers backbones, heads, meta-architectures)
from . import model_zoo  # noqa: F401  (registers the resnest:// path handler)
from .config import (
    add_resnest_config,
    add_resnest_segmentation_config,
    get_resnest_cfg,
    resolve_fork_backbone_name,
)

__version__ = "0.1.0"

__all__ = [
    "add_resnest_config",
    "add_resnest_segmentation_config",
    "get_resnest_cfg",
    "resolve_fork_backbone_name",
]
