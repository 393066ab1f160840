"""The predictor of both demos and of the export tool: detectron2's ``DefaultPredictor`` with
strictly loaded weights, the class names stored with them, and the inference fast path; or, when
``MODEL.WEIGHTS`` is a file written by ``tools/deploy/export_model.py``, the same interface on
onnxruntime / TorchScript (:class:`resnest_dense.export.ExportedPredictor`).

A YAML config's model is built by detectron2's ``build_model``, a LazyConfig's by instantiating
its ``model`` (:func:`resnest_dense.engine.lazy.lazy_test_model`); both then run through the same
``DefaultPredictor.__call__`` (input format, test resize of the config, inference)."""

import logging

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from ..checkpoint import Checkpointer
from ..config import cfg_value, score_thresh_key
from ..export import ExportedPredictor, check_matches_config, exported_format
from ..utils import optimize_for_inference
from .class_names import CHECKPOINT_KEY, class_metadata
from .lazy import is_lazy_run, lazy_test_model

__all__ = ["build_predictor", "build_test_model"]

logger = logging.getLogger(__name__)


class _Predictor(DefaultPredictor):
    """``DefaultPredictor`` around a model that is already built. (Its own ``__init__`` builds the
    model from YAML keys, which a LazyConfig's view does not describe; ``__call__`` is
    detectron2's.)"""

    def __init__(self, cfg: CfgNode, model: torch.nn.Module):
        self.cfg = cfg
        self.model = model.eval()
        # The test resize of DefaultPredictor; a LazyConfig's test mapper resize is in the view
        # (resnest_dense.engine.lazy, check_lazy_test_input).
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        assert self.input_format in ("RGB", "BGR"), self.input_format


def build_test_model(cfg: CfgNode) -> torch.nn.Module:
    """The model of ``cfg`` as the test-time tools run it, randomly initialised: detectron2's
    ``build_model`` for a YAML config; for a LazyConfig its ``model`` with the view's test-time
    values (:func:`resnest_dense.engine.lazy.lazy_test_model`), on ``MODEL.DEVICE``."""
    if not is_lazy_run(cfg):
        return build_model(cfg)
    return instantiate(lazy_test_model(cfg)).to(torch.device(cfg.MODEL.DEVICE))


def build_predictor(cfg: CfgNode, allow_random_weights: bool = False) -> DefaultPredictor:
    """A ``DefaultPredictor`` for ``cfg`` whose ``MODEL.WEIGHTS`` must cover the whole model.

    With an exported file as ``MODEL.WEIGHTS`` it is an :class:`ExportedPredictor` (class names
    from the file; detections below ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, for RetinaNet
    ``MODEL.RETINANET.SCORE_THRESH_TEST``, dropped).

    Its ``metadata`` holds the class names the predictions are labelled with: those stored in
    the checkpoint by the trainer, else those of ``DATASETS.TEST[0]``, else ``class N``
    (:func:`resnest_dense.engine.class_names.class_metadata`).

    Args:
        cfg: a config from :func:`resnest_dense.engine.load_config` (purpose ``"demo"`` or
            ``"export"``), YAML or LazyConfig.
        allow_random_weights: load non-strictly (missing keys stay random, with a warning).

    Raises:
        CheckpointMismatchError: the weights do not fit the model (keys named).
        CheckpointReadError: the file cannot be read.
        ExportedFileError: an exported file made from another config (family, classes).
    """
    if exported_format(cfg.MODEL.WEIGHTS):
        predictor = ExportedPredictor(
            cfg.MODEL.WEIGHTS, score_thresh=cfg_value(cfg, score_thresh_key(cfg))
        )
        check_matches_config(predictor.model.metadata, cfg, cfg.MODEL.WEIGHTS)
        return predictor
    predictor = _Predictor(cfg, build_test_model(cfg))
    stored = None
    if cfg.MODEL.WEIGHTS:
        report, extra = Checkpointer(predictor.model).load_checked(
            cfg.MODEL.WEIGHTS, strict=not allow_random_weights
        )
        if not report.clean:
            logger.warning("Running %s as asked although %s", cfg.MODEL.WEIGHTS, report.summary())
        stored = extra.get(CHECKPOINT_KEY)
    predictor.metadata = class_metadata(cfg, stored, cfg.MODEL.WEIGHTS)
    if cfg.TEST.FAST_INFERENCE:
        optimize_for_inference(predictor.model)
    return predictor
