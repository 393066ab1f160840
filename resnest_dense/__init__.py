"""resnest_dense: ResNeSt (Split-Attention) backbones, detectors and DeepLabV3 for detectron2.

Importing the package registers the backbones in detectron2's registries. Call
:func:`add_resnest_config` on a detectron2 config before merging a ResNeSt YAML file.
"""

from . import modeling  # noqa: F401  (registers backbones)
from .config import add_resnest_config, resolve_fork_backbone_name

__version__ = "0.1.0"

__all__ = ["add_resnest_config", "resolve_fork_backbone_name"]
