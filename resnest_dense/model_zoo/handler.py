"""``resnest://`` URIs in detectron2's ``PathManager``: ``MODEL.WEIGHTS resnest://resnest50``.

Importing this module registers :class:`ResNeStWeightsHandler`, so every tool that loads weights
through ``DetectionCheckpointer`` (or ``PathManager.get_local_path``) accepts
``resnest://<registry name or file name>``. Registration goes through iopath's public
``register_handler(..., allow_override=False)``: the first handler registered for the scheme
is kept, so importing or reloading this module again changes nothing. To serve ``resnest://``
differently, register your handler after importing ``resnest_dense`` with
``allow_override=True``.
"""

import logging
from typing import List

from detectron2.utils.file_io import PathHandler, PathManager
from iopath.common.file_io import PathManager as PathManagerBase

from .conversion import resolve_weights
from .registry import SCHEME

__all__ = ["ResNeStWeightsHandler", "register_handler"]

logger = logging.getLogger(__name__)


class ResNeStWeightsHandler(PathHandler):
    """``resnest://<registry name or file name>`` for detectron2's ``PathManager``.

    The methods are iopath's documented extension points of ``PathHandler``.
    """

    PREFIX = SCHEME

    def _get_supported_prefixes(self) -> List[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs) -> str:
        return resolve_weights(path)

    def _open(self, path: str, mode: str = "r", **kwargs):
        return open(resolve_weights(path), mode)


def register_handler(path_manager: PathManagerBase = PathManager) -> bool:
    """Register :class:`ResNeStWeightsHandler` unless ``resnest://`` already has a handler.

    Args:
        path_manager: the iopath ``PathManager``; default detectron2's.

    Returns:
        Whether a handler was registered (False: an earlier one, ours or another library's,
        is kept).
    """
    try:
        path_manager.register_handler(ResNeStWeightsHandler(), allow_override=False)
    except KeyError:
        # iopath's signal that the prefix is taken: by this module on an earlier import or
        # reload (the usual case), or by a handler someone registered on purpose.
        logger.debug("%s already has a handler in %r; keeping it", SCHEME, path_manager)
        return False
    return True


register_handler()
