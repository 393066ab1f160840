"""detectron2 LazyConfig (Python) configs on the engine of the YAML configs.

A LazyConfig says how to build the model, loaders, optimizer and LR multiplier; the rules of a
run (start-up checks, exact resume, loss record, class names in checkpoints, evaluator choice,
results file) live in :mod:`resnest_dense.engine` and read YAML keys. :func:`lazy_run_config`
therefore derives a :class:`LazyRunConfig`: a YAML config (every key of this project at its
default) holding the values a LazyConfig also states, in their YAML keys (table below), with
the LazyConfig itself as ``.lazy``. The checks, :func:`~resnest_dense.engine.train`,
:func:`~resnest_dense.engine.evaluate_weights` and :func:`~resnest_dense.engine.write_results`
take it like any YAML config; :class:`LazyTrainer` is the project's :class:`Trainer` with the
model, optimizer, LR schedule and mappers instantiated from ``.lazy``.

==============================================  ==============================================
LazyConfig                                      YAML key
==============================================  ==============================================
``train.device``                                ``MODEL.DEVICE``
``train.init_checkpoint``                       ``MODEL.WEIGHTS`` (``resnest://`` names too)
``train.output_dir``                            ``OUTPUT_DIR``
``train.max_iter``                              ``SOLVER.MAX_ITER``
``train.checkpointer.period``                   ``SOLVER.CHECKPOINT_PERIOD``
``train.eval_period``                           ``TEST.EVAL_PERIOD``
``train.amp.enabled`` / ``.precision``          ``SOLVER.AMP.ENABLED`` / ``.PRECISION``
``train.seed``                                  ``SEED``
``train.precise_bn.enabled`` / ``.num_iter``    ``TEST.PRECISE_BN.ENABLED`` / ``.NUM_ITER``
``train.fast_inference``                        ``TEST.FAST_INFERENCE``
``train.check_finite_loss``                     ``SOLVER.CHECK_FINITE_LOSS``
``train.skip_corrupt_images``                   ``DATALOADER.SKIP_CORRUPT_IMAGES``
``dataloader.train.dataset.names``              ``DATASETS.TRAIN``
``dataloader.train.dataset.filter_empty``       ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``
``dataloader.train.total_batch_size``           ``SOLVER.IMS_PER_BATCH``
``dataloader.train.num_workers``                ``DATALOADER.NUM_WORKERS``
``dataloader.train.aspect_ratio_grouping``      ``DATALOADER.ASPECT_RATIO_GROUPING``
``dataloader.train.mapper.image_format``        ``INPUT.FORMAT``
``dataloader.test.dataset.names``               ``DATASETS.TEST``
``model`` class name                            ``MODEL.META_ARCHITECTURE``
``model.roi_heads.num_classes`` / mask head     ``MODEL.ROI_HEADS.NUM_CLASSES`` / ``MASK_ON``
``model.sem_seg_head.num_classes`` / ignore     ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` / ``IGNORE_VALUE``
RetinaNet ``model.num_classes``                 ``MODEL.RETINANET.NUM_CLASSES``
RetinaNet ``model.test_topk_candidates``        ``MODEL.RETINANET.TOPK_CANDIDATES_TEST``
RetinaNet ``model.test_nms_thresh``             ``MODEL.RETINANET.NMS_THRESH_TEST``
RetinaNet ``model.max_detections_per_image``    ``TEST.DETECTIONS_PER_IMAGE``
first ``norm`` of the backbone (bottom-up)      ``MODEL.RESNETS.NORM``; FPN ``norm``: ``FPN.NORM``
``model.roi_heads`` / ``.proposal_generator``   ``MODEL.ROI_HEADS.NAME`` / ``PROPOSAL_GENERATOR.NAME``
  class names; ``.keypoint_head``               ``MODEL.KEYPOINT_ON``
``test_score_thresh`` of the box predictor(s)   ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``
  (RetinaNet: of ``model``)                     (``MODEL.RETINANET.SCORE_THRESH_TEST``)
bottom-up ``deform_on_per_stage`` / ...         ``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` / ...
test mapper's ``ResizeShortestEdge`` (or none)  ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` (0)
segmentor's ``scales`` / ``flip`` / ...         ``TEST.SEM_SEG.SCALES`` / ``FLIP`` / ...
==============================================  ==============================================

The demos and the export tool read the test-time part of the view (input size, score threshold,
heads, deformable stages, segmentation test procedure) as they read a YAML config; they build the
model with :func:`lazy_test_model`, which writes the test-time values a tool set in the view (a
score threshold, a segmentor's test procedure) back into the LazyConfig's model. A test mapper whose augmentations are not one ``ResizeShortestEdge``
to one short side (or none) has no YAML counterpart: :func:`check_lazy_test_input` refuses it for
the demos and the export (``--eval-only`` uses the mapper itself).

The trainer builds its loaders from ``dataloader.train`` / ``dataloader.test`` (dataset names,
mapper, batch size, workers) as it does for YAML configs, so the data stream is resumable; a
``dataloader.evaluator`` is not used: the evaluator is chosen by the test set's
``evaluator_type`` (:func:`~resnest_dense.engine.build_evaluator`), as for YAML configs.
"""

import copy
import inspect
import logging
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.solver import LRMultiplier
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config import cfg_value, get_resnest_cfg, is_semantic_segmentation, score_thresh_key
from ..errors import StartupError
from .checks import adapt_norms_for_device
from .trainer import Trainer, add_run_hooks

__all__ = [
    "LAZY_KEYS",
    "LazyRunConfig",
    "LazyTrainer",
    "check_lazy_test_input",
    "in_lazy_terms",
    "is_lazy_run",
    "lazy_run_config",
    "lazy_test_model",
    "sync_to_lazy",
]

logger = logging.getLogger(__name__)

_REQUIRED = (
    "model",
    "optimizer",
    "lr_multiplier",
    "train.output_dir",
    "train.max_iter",
    "dataloader.train.dataset.names",
    "dataloader.train.mapper",
    "dataloader.train.total_batch_size",
    "dataloader.test.dataset.names",
    "dataloader.test.mapper",
)
_MISSING = object()

# The YAML keys a start-up message may name, in a LazyConfig's terms (the table above).
LAZY_KEYS = {
    "MODEL.WEIGHTS": "train.init_checkpoint",
    "MODEL.DEVICE": "train.device",
    "SOLVER.IMS_PER_BATCH": "dataloader.train.total_batch_size",
    "SOLVER.AMP.PRECISION": "train.amp.precision",
    "DATASETS.TRAIN": "dataloader.train.dataset.names",
    "DATASETS.TEST": "dataloader.test.dataset.names",
    "MODEL.RESNETS.NORM": "the backbone's norm",
    "MODEL.ROI_HEADS.NUM_CLASSES": "model.roi_heads.num_classes",
    "MODEL.RETINANET.NUM_CLASSES": "model.num_classes",
    "MODEL.RETINANET.SCORE_THRESH_TEST": "model.test_score_thresh",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": "model.sem_seg_head.num_classes",
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": "model.sem_seg_head.ignore_value",
    "MODEL.MASK_ON": "model.roi_heads.mask_head",
    "DATALOADER.SKIP_CORRUPT_IMAGES": "train.skip_corrupt_images",
}


def in_lazy_terms(message: str) -> str:
    """``message`` of a start-up check with the YAML keys it names replaced by the LazyConfig
    keys they were derived from (a LazyConfig user never wrote ``MODEL.WEIGHTS``)."""
    for yaml_key, lazy_key in LAZY_KEYS.items():
        message = message.replace(yaml_key, lazy_key)
    return message


class LazyRunConfig(CfgNode):
    """A YAML config derived from a LazyConfig (module docstring); ``.lazy`` is the LazyConfig
    (``DictConfig``) the model, optimizer, LR multiplier and mappers are built from."""

    @property
    def lazy(self) -> DictConfig:
        return self.__dict__["_lazy"]

    def attach(self, lazy: DictConfig) -> "LazyRunConfig":
        self.__dict__["_lazy"] = lazy
        return self


def is_lazy_run(cfg) -> bool:
    """True when ``cfg`` came from a LazyConfig file."""
    return isinstance(cfg, LazyRunConfig)


def _get(lazy: DictConfig, key: str, default: Any = _MISSING) -> Any:
    value = OmegaConf.select(lazy, key, default=_MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise StartupError(f"The LazyConfig has no {key!r} (needed by the trainer).")
        return default
    return value


def _names(value) -> tuple:
    return (value,) if isinstance(value, str) else tuple(value)


def _target_name(node) -> str:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target is None:
        return ""
    return getattr(target, "__name__", str(target).rsplit(".", 1)[-1])


def _first_norm(node) -> Optional[str]:
    """The first ``norm`` argument in ``node`` (depth first), e.g. the backbone's stem norm."""
    if isinstance(node, DictConfig):
        if isinstance(node.get("norm"), str):
            return node.norm
        children = node.values()
    elif isinstance(node, ListConfig):
        children = node
    else:
        return None
    for child in children:
        norm = _first_norm(child)
        if norm is not None:
            return norm
    return None


def _argument(node: DictConfig, name: str, default: Any = None) -> Any:
    """Argument ``name`` of the ``LazyCall`` ``node``: as set, else the default in its target's
    signature (what ``instantiate`` passes), else ``default``."""
    if name in node:
        return node[name]
    target = node.get("_target_")
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        target = locate(target)
    try:
        param = inspect.signature(target).parameters.get(name)
    except (TypeError, ValueError):
        param = None
    if param is None or param.default is inspect.Parameter.empty:
        return default
    return param.default


def _score_thresh_nodes(model: DictConfig) -> List[DictConfig]:
    """The ``LazyCall`` nodes whose ``test_score_thresh`` filters the detections: RetinaNet
    itself, or the R-CNN box predictor (every stage's in a cascade: the last one's is used)."""
    if _target_name(model) == "RetinaNet":
        return [model]
    roi_heads = model.get("roi_heads")
    if not isinstance(roi_heads, DictConfig):
        return []
    predictors = roi_heads.get("box_predictors")
    if predictors is None:
        predictors = [roi_heads.get("box_predictor")]
    return [p for p in predictors if isinstance(p, DictConfig)]


def _test_resize(mapper: DictConfig) -> Optional[Tuple[int, int]]:
    """``(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)`` of a test mapper, or None when its
    augmentations are not one ``ResizeShortestEdge`` to one short side, or none at all."""
    augs = list(mapper.get("augmentations") or [])
    if not augs:
        return 0, get_resnest_cfg(None).INPUT.MAX_SIZE_TEST  # no resize: the max is not used
    if len(augs) != 1 or _target_name(augs[0]) != "ResizeShortestEdge":
        return None
    short = _argument(augs[0], "short_edge_length")
    shorts = {int(short)} if isinstance(short, (int, float)) else {int(s) for s in short}
    if len(shorts) != 1:
        return None
    return shorts.pop(), int(_argument(augs[0], "max_size", sys.maxsize))


def _view_test_time(cfg: CfgNode, lazy: DictConfig) -> Dict[str, str]:
    """Fill the test-time keys of the view (module docstring) from ``lazy``; returns the keys it
    cannot state, each with the reason."""
    model = lazy.model
    roi_heads = model.get("roi_heads")
    if isinstance(roi_heads, DictConfig):
        cfg.MODEL.ROI_HEADS.NAME = _target_name(roi_heads)
        cfg.MODEL.KEYPOINT_ON = roi_heads.get("keypoint_head") is not None
    proposals = model.get("proposal_generator")
    if isinstance(proposals, DictConfig):
        cfg.MODEL.PROPOSAL_GENERATOR.NAME = _target_name(proposals)
    nodes = _score_thresh_nodes(model)
    if nodes:
        key = score_thresh_key(cfg).split(".")
        cfg.MODEL[key[1]][key[2]] = float(_argument(nodes[-1], "test_score_thresh", 0.0))
    backbone = model.get("backbone")
    bottom_up = backbone.get("bottom_up", backbone) if isinstance(backbone, DictConfig) else None
    if isinstance(bottom_up, DictConfig):
        deform = _argument(bottom_up, "deform_on_per_stage")
        if deform is not None:
            r = cfg.MODEL.RESNETS
            r.DEFORM_ON_PER_STAGE = [bool(on) for on in deform]
            r.DEFORM_MODULATED = bool(_argument(bottom_up, "deform_modulated", False))
            r.DEFORM_NUM_GROUPS = int(_argument(bottom_up, "deform_num_groups", 1))
    if is_semantic_segmentation(cfg):
        t = cfg.TEST.SEM_SEG
        t.SCALES = [float(s) for s in _argument(model, "scales", t.SCALES)]
        t.FLIP = bool(_argument(model, "flip", t.FLIP))
        t.BASE_SIZE = int(_argument(model, "base_size", t.BASE_SIZE))
        t.CROP_SIZE = int(_argument(model, "crop_size", t.CROP_SIZE))
        t.STRIDE_RATE = float(_argument(model, "stride_rate", t.STRIDE_RATE))
    resize = _test_resize(lazy.dataloader.test.mapper)
    if resize is None:
        augs = OmegaConf.to_yaml(lazy.dataloader.test.mapper.get("augmentations")).strip()
        return {
            "INPUT.MIN_SIZE_TEST": "dataloader.test.mapper.augmentations is not one "
            f"ResizeShortestEdge to one short side (or none): {augs}"
        }
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = resize
    return {}


def _set_retinanet_keys(cfg: CfgNode, model: DictConfig) -> None:
    """RetinaNet's classes (the start-up class-count check) and test settings in its
    ``MODEL.RETINANET`` keys (its score threshold: :func:`_view_test_time`)."""
    r = cfg.MODEL.RETINANET
    r.NUM_CLASSES = int(model.num_classes)
    r.TOPK_CANDIDATES_TEST = int(_argument(model, "test_topk_candidates"))
    r.NMS_THRESH_TEST = float(_argument(model, "test_nms_thresh"))
    cfg.TEST.DETECTIONS_PER_IMAGE = int(_argument(model, "max_detections_per_image"))


def lazy_run_config(lazy: DictConfig) -> LazyRunConfig:
    """The :class:`LazyRunConfig` of ``lazy`` (a loaded LazyConfig with overrides applied).

    Raises:
        StartupError: ``lazy`` lacks a key the trainer needs (named).
    """
    missing = [k for k in _REQUIRED if OmegaConf.select(lazy, k, default=_MISSING) is _MISSING]
    if missing:
        raise StartupError(
            f"The LazyConfig lacks {', '.join(missing)}: the tools read a LazyConfig in "
            "detectron2's layout (as its lazyconfig_train_net.py does): model, optimizer, lr_multiplier, train (detectron2's common/train.py) and "
            "dataloader.train / .test built like detectron2's common/data/coco.py (see "
            "configs/lazy/ and docs/configs.md)."
        )
    cfg = LazyRunConfig(get_resnest_cfg(None))
    model, train, loader = lazy.model, lazy.train, lazy.dataloader.train
    cfg.MODEL.DEVICE = _get(lazy, "train.device", "cuda")
    cfg.MODEL.WEIGHTS = _get(lazy, "train.init_checkpoint", "") or ""
    cfg.MODEL.META_ARCHITECTURE = _target_name(model)
    roi_heads = model.get("roi_heads")
    if isinstance(roi_heads, DictConfig):
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = int(roi_heads.num_classes)
        cfg.MODEL.MASK_ON = roi_heads.get("mask_head") is not None
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        _set_retinanet_keys(cfg, model)
    head = model.get("sem_seg_head")
    if isinstance(head, DictConfig):
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = int(head.num_classes)
        cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = int(head.get("ignore_value", 255))
    backbone = model.get("backbone")
    bottom_up = backbone.get("bottom_up", backbone) if isinstance(backbone, DictConfig) else None
    cfg.MODEL.RESNETS.NORM = _first_norm(bottom_up) or ""
    if bottom_up is not backbone and isinstance(backbone, DictConfig):
        cfg.MODEL.FPN.NORM = backbone.get("norm", "") or ""
    cfg.OUTPUT_DIR = train.output_dir
    cfg.SEED = int(_get(lazy, "train.seed", -1))
    cfg.SOLVER.MAX_ITER = int(train.max_iter)
    cfg.SOLVER.CHECKPOINT_PERIOD = int(_get(lazy, "train.checkpointer.period", 5000))
    cfg.SOLVER.IMS_PER_BATCH = int(loader.total_batch_size)
    cfg.SOLVER.AMP.ENABLED = bool(_get(lazy, "train.amp.enabled", False))
    cfg.SOLVER.AMP.PRECISION = _get(lazy, "train.amp.precision", "") or ""
    cfg.SOLVER.CHECK_FINITE_LOSS = bool(_get(lazy, "train.check_finite_loss", True))
    cfg.TEST.EVAL_PERIOD = int(_get(lazy, "train.eval_period", 0))
    cfg.TEST.PRECISE_BN.ENABLED = bool(_get(lazy, "train.precise_bn.enabled", False))
    cfg.TEST.PRECISE_BN.NUM_ITER = int(_get(lazy, "train.precise_bn.num_iter", 200))
    cfg.TEST.FAST_INFERENCE = bool(_get(lazy, "train.fast_inference", True))
    cfg.DATASETS.TRAIN = _names(loader.dataset.names)
    cfg.DATASETS.TEST = _names(lazy.dataloader.test.dataset.names)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = bool(loader.dataset.get("filter_empty", True))
    cfg.DATALOADER.NUM_WORKERS = int(loader.get("num_workers", 0))
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = bool(loader.get("aspect_ratio_grouping", True))
    cfg.DATALOADER.SKIP_CORRUPT_IMAGES = bool(_get(lazy, "train.skip_corrupt_images", False))
    cfg.INPUT.FORMAT = loader.mapper.get("image_format", cfg.INPUT.FORMAT)
    cfg.__dict__["_view_gaps"] = _view_test_time(cfg, lazy)
    if lazy.dataloader.get("evaluator") is not None:
        logger.warning(
            "dataloader.evaluator is not used: the evaluator is chosen by the test set's "
            "evaluator_type (COCO AP or mIoU), as for YAML configs."
        )
    return cfg.attach(lazy)


def sync_to_lazy(cfg: LazyRunConfig, world_size: Optional[int] = None) -> List[str]:
    """Carry what the start-up checks adapted back into the LazyConfig: the device (a CUDA
    config without CUDA runs on the CPU) and ``SyncBN`` on multi-process CPU runs (the same
    rule, :func:`~resnest_dense.engine.checks.adapt_norms_for_device`, on ``model``).

    Returns:
        The ``model`` keys whose norm was replaced.
    """
    lazy = cfg.lazy
    lazy.train.device = cfg.MODEL.DEVICE
    return adapt_norms_for_device(lazy.model, world_size, device=cfg.MODEL.DEVICE)


def check_lazy_test_input(cfg: LazyRunConfig) -> None:
    """Refuse a LazyConfig whose test-time input the demos and the export cannot reproduce
    (they resize as detectron2's ``DefaultPredictor``: one short side, a maximum long side).

    Raises:
        StartupError: naming the LazyConfig key and what to set.
    """
    for key, reason in cfg.__dict__.get("_view_gaps", {}).items():
        raise StartupError(
            f"{reason}. The demos and the export resize a test image to one short side with a "
            f"maximum long side ({key} / INPUT.MAX_SIZE_TEST of a YAML config): set "
            "dataloader.test.mapper.augmentations=[L(ResizeShortestEdge)(short_edge_length=S, "
            "max_size=M)] in the LazyConfig, or use --eval-only, which runs the mapper as written."
        )


def lazy_test_model(cfg: LazyRunConfig) -> DictConfig:
    """A copy of the LazyConfig's ``model`` with the test-time values of the view a tool may have
    set written back: the test score threshold (e.g. the demo's ``--confidence-threshold``) in
    its box predictor(s) / RetinaNet, and a segmentor's test procedure (``TEST.SEM_SEG``: scales,
    flip, base size, crop size, stride rate) where its class takes them.

    Raises:
        StartupError: a detector whose LazyConfig has no place for the threshold.
    """
    model = copy.deepcopy(cfg.lazy.model)
    if is_semantic_segmentation(cfg):
        t = cfg.TEST.SEM_SEG
        procedure = {
            "scales": list(t.SCALES),
            "flip": t.FLIP,
            "base_size": t.BASE_SIZE,
            "crop_size": t.CROP_SIZE,
            "stride_rate": t.STRIDE_RATE,
        }
        model.update({k: v for k, v in procedure.items() if _argument(model, k) is not None})
        return model
    nodes = _score_thresh_nodes(model)
    if not nodes:
        raise StartupError(
            f"The LazyConfig's model ({cfg.MODEL.META_ARCHITECTURE}) has no box predictor "
            "(model.roi_heads.box_predictor / .box_predictors) or RetinaNet test_score_thresh to "
            "set the score threshold in."
        )
    value = float(cfg_value(cfg, score_thresh_key(cfg)))
    for node in nodes:
        node.test_score_thresh = value
    return model


class LazyTrainer(Trainer):
    """:class:`Trainer` for a :class:`LazyRunConfig`: model, optimizer, LR multiplier and the
    loaders' mappers from ``cfg.lazy``; everything else (resumable data stream, seeded
    iterations, checks, atomic checkpoints with class names, hooks, evaluation) as for YAML."""

    @classmethod
    def build_model(cls, cfg: LazyRunConfig) -> torch.nn.Module:
        model = instantiate(cfg.lazy.model)
        model.to(torch.device(cfg.MODEL.DEVICE))
        logging.getLogger("detectron2").info("Model:\n%s", model)
        return add_run_hooks(model, cfg)

    @classmethod
    def ddp_options(cls, cfg: LazyRunConfig) -> Dict[str, Any]:
        """``train.ddp`` (detectron2's ``broadcast_buffers``, ``fp16_compression``, ...)."""
        return dict(OmegaConf.to_container(cfg.lazy.train.get("ddp") or {}, resolve=True))

    @classmethod
    def build_optimizer(cls, cfg: LazyRunConfig, model: torch.nn.Module):
        optimizer = cfg.lazy.optimizer
        # detectron2's convention: the optimizer's parameter groups are built from params.model.
        optimizer.params.model = model
        try:
            return instantiate(optimizer)
        finally:
            optimizer.params.model = None

    @classmethod
    def build_lr_scheduler(cls, cfg: LazyRunConfig, optimizer):
        return LRMultiplier(
            optimizer, multiplier=instantiate(cfg.lazy.lr_multiplier), max_iter=cfg.SOLVER.MAX_ITER
        )

    @classmethod
    def build_train_loader(cls, cfg: LazyRunConfig):
        return super().build_train_loader(cfg, mapper=instantiate(cfg.lazy.dataloader.train.mapper))

    @classmethod
    def build_test_loader(cls, cfg: LazyRunConfig, dataset_name: str):
        return super().build_test_loader(
            cfg, dataset_name, mapper=instantiate(cfg.lazy.dataloader.test.mapper)
        )
