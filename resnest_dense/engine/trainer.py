"""A thin detectron2 ``DefaultTrainer`` for every config of this project.

It extends detectron2 through its public hooks only (``build_*`` overrides and its own
``__init__``); no detectron2 module attribute is replaced.
"""

import logging
import os
import random
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine import create_ddp_model as d2_create_ddp_model
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import setup_logger

from .. import data as _data  # noqa: F401  (registers the toy / ADE20K datasets)
from ..checkpoint import Checkpointer
from ..config import is_semantic_segmentation
from ..utils.io import remove_partial_writes
from .amp import build_amp_trainer
from ..data.validation import CheckedMapper, UnreadableImageTracker, load_checked_dataset_dicts
from .checks import NON_FINITE_PREFIX, SafeMapper, check_finite_losses, non_finite_message
from .class_names import checkpoint_metadata
from .evaluation import build_evaluator
from .history import LossHistoryHook, truncate_loss_history
from .semseg import (
    build_semseg_lr_scheduler,
    build_semseg_optimizer,
    build_semseg_train_mapper,
)
from .train_data import (
    PositionalDataset,
    ResumableTrainingSampler,
    SeededMapper,
    aspect_ratio_groups,
    iteration_seed,
)

__all__ = ["Trainer", "add_run_hooks", "create_ddp_model"]

logger = logging.getLogger(__name__)


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """detectron2's ``create_ddp_model``, with ``device_ids=None`` for a model on the CPU.

    detectron2 always passes ``device_ids=[local_rank]``, which ``DistributedDataParallel``
    rejects for CPU modules (gloo training on CPU-only machines).
    """
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return d2_create_ddp_model(model, **kwargs)


def _finite_loss_hook(module: torch.nn.Module, inputs, output) -> None:
    """Forward hook: a training forward's loss dict must be finite (before backward / step)."""
    if not module.training or not isinstance(output, Mapping) or not output:
        return
    if not all(isinstance(v, torch.Tensor) for v in output.values()):
        return
    try:
        iteration = get_event_storage().iter
    except AssertionError:  # called outside a trainer
        iteration = -1
    check_finite_losses(output, iteration)


class _IterationSeed:
    """Forward pre-hook: in training, seed the RNGs from ``(SEED, iteration, rank)``.

    The model's own randomness (anchor / proposal sampling) then depends only on the iteration,
    so a resumed run draws what the uninterrupted run drew. It runs after the batch is loaded:
    starting a data loader iterator also draws from torch's RNG, and a resumed run starts its
    iterator at another iteration.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, module: torch.nn.Module, inputs) -> None:
        if not module.training:
            return
        try:
            iteration = get_event_storage().iter
        except AssertionError:  # called outside a trainer
            return
        seed = iteration_seed(self.seed, iteration, comm.get_rank())
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


def add_run_hooks(model: torch.nn.Module, cfg: CfgNode) -> torch.nn.Module:
    """The model hooks of a training run (every config kind): the RNG seeded per iteration when
    ``SEED >= 0`` (exact resume) and the named non-finite loss check."""
    if cfg.SEED >= 0:
        model.register_forward_pre_hook(_IterationSeed(cfg.SEED))
    if cfg.SOLVER.CHECK_FINITE_LOSS:
        model.register_forward_hook(_finite_loss_hook)
    return model


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` with the evaluator chosen by the dataset's
    ``evaluator_type``, the segmentation recipe's loader / optimizer / LR schedule, and:

    * CPU multi-process training (gloo): DDP without device ids;
    * atomic checkpoints (:class:`AtomicDetectionCheckpointer`);
    * the class names of the training data in every checkpoint (read by the demos,
      :mod:`resnest_dense.engine.class_names`);
    * a train loader whose batches and augmentations are a function of the iteration
      (:mod:`resnest_dense.engine.train_data`), so ``--resume`` continues the same stream and the
      global batch does not depend on the number of processes;
    * the model's RNG seeded per iteration when ``SEED >= 0``;
    * start-up checks of the training images and a corrupt-image policy
      (``DATALOADER.SKIP_CORRUPT_IMAGES``);
    * a non-finite loss check naming the iteration and loss terms
      (``SOLVER.CHECK_FINITE_LOSS``); no checkpoint is written after it fires;
    * mixed precision on the CPU as well as CUDA (``SOLVER.AMP.ENABLED``, bfloat16 or float16
      autocast, :mod:`resnest_dense.engine.amp`).
    """

    def __init__(self, cfg: CfgNode):
        # detectron2 0.7.2's DefaultTrainer.__init__ with three objects of ours in place of
        # detectron2's: the CPU-aware create_ddp_model, the device-aware AutocastTrainer for
        # SOLVER.AMP and the atomic Checkpointer (tests/test_trainer_mirror.py pins that source).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # Set by build_train_loader for the resumable stream; resume_or_load moves it.
        self.data_sampler = getattr(data_loader, "resumable_sampler", None)

        model = create_ddp_model(model, **self.ddp_options(cfg))
        trainer_cls = build_amp_trainer(cfg) if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        # Class names travel with the model (the demos read them); the data were loaded above.
        self.checkpointer.extra_data = checkpoint_metadata(cfg)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg

        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        return add_run_hooks(super().build_model(cfg), cfg)

    @classmethod
    def ddp_options(cls, cfg: CfgNode) -> Dict[str, Any]:
        """Keyword arguments of ``DistributedDataParallel`` (detectron2's trainer's)."""
        return {"broadcast_buffers": False}

    def build_hooks(self):
        """detectron2's hooks, the loss record first: written right after each step, before
        PreciseBN, checkpoints and evaluation."""
        built = super().build_hooks()
        if comm.is_main_process():
            built.insert(0, LossHistoryHook(self._loss_history_path()))
        return built

    def resume_or_load(self, resume: bool = True) -> None:
        """detectron2's resume-or-load, then: every worker resumed at the same iteration, the
        data stream continues there, partial writes and loss records past the checkpoint are
        dropped; a fine-tuning load logs what it did not cover."""
        super().resume_or_load(resume=resume)
        resumed = resume and self.checkpointer.has_checkpoint()
        report = self.checkpointer.last_report
        if not resumed and self.cfg.MODEL.WEIGHTS and report is not None:
            logger.info("Loaded %s for fine-tuning: %s", self.cfg.MODEL.WEIGHTS, report.summary())
        # DDP broadcast the weights when it was built, before this load: every worker must have
        # loaded the same checkpoint (OUTPUT_DIR on a file system all machines share).
        start_iters = comm.all_gather(self.start_iter)
        if len(set(start_iters)) > 1:
            raise RuntimeError(
                f"Workers resumed at different iterations {start_iters} (index = rank): "
                f"{self.cfg.OUTPUT_DIR} must be on a file system shared by all machines, or "
                "hold the same last_checkpoint on each."
            )
        if comm.is_main_process():
            remove_partial_writes(self.cfg.OUTPUT_DIR)
            truncate_loss_history(self._loss_history_path(), self.start_iter)
        if self.data_sampler is not None:
            self.data_sampler.set_start_iter(self.start_iter)

    def _loss_history_path(self) -> str:
        return os.path.join(self.cfg.OUTPUT_DIR, "losses.jsonl")

    def train(self) -> Optional[Mapping]:
        """Train; returns the results of the final evaluation (None without test sets)."""
        super().train()
        # Set by the EvalHook that DefaultTrainer.build_hooks registers on this trainer.
        return getattr(self, "_last_eval_results", None)

    def run_step(self) -> None:
        try:
            super().run_step()
        except FloatingPointError as e:
            # The after_train hooks still run: write no checkpoint of this state.
            self.checkpointer.save_to_disk = False
            if str(e).startswith(NON_FINITE_PREFIX):
                raise
            # detectron2's own checks (e.g. "Predicted boxes or scores contain Inf/NaN. Training
            # has diverged." in the RPN) fire inside the forward, before the loss check.
            raise FloatingPointError(non_finite_message(self.iter, str(e))) from e

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model) -> "OrderedDict[str, Mapping]":
        """Evaluate with detectron2's test-time augmentation (``TEST.AUG``: the image at every
        short side of ``MIN_SIZES`` capped at ``MAX_SIZE``, plus its mirror when ``FLIP``;
        boxes merged by NMS, masks averaged), as detectron2's ``tools/train_net.py`` does.

        Args:
            cfg: an R-CNN config (``GeneralizedRCNNWithTTA`` wraps ``GeneralizedRCNN``; for
                ``PanopticFPN`` nothing is run, with a warning, see below).
            model: the (possibly BN-folded) detector.

        Returns:
            detectron2's ``test`` results with ``_TTA`` appended to every top-level key
            (``bbox_TTA``, ``segm_TTA``; or ``<dataset>_TTA`` for several test sets). The
            evaluator files go to ``<OUTPUT_DIR>/inference_TTA``. Empty for ``PanopticFPN``,
            which detectron2's wrapper cannot call.
        """
        if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
            # detectron2 0.7.2's wrapper calls model.inference(inputs, detected_instances,
            # do_postprocess=False); PanopticFPN.inference takes no detected_instances.
            logger.warning(
                "TEST.AUG.ENABLED: detectron2's GeneralizedRCNNWithTTA cannot wrap PanopticFPN "
                "(its inference() has no detected_instances argument); evaluated without TTA."
            )
            return OrderedDict()
        logger.info(
            "Running inference with test-time augmentation: short sides %s, max %d, flip %s",
            tuple(cfg.TEST.AUG.MIN_SIZES),
            cfg.TEST.AUG.MAX_SIZE,
            cfg.TEST.AUG.FLIP,
        )
        tta_model = GeneralizedRCNNWithTTA(cfg, model)
        folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [cls.build_evaluator(cfg, name, folder) for name in cfg.DATASETS.TEST]
        results = cls.test(cfg, tta_model, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in results.items())

    @classmethod
    def train_dataset_dicts(cls, cfg: CfgNode) -> List[Dict]:
        """The training dicts the train loader samples from: ``DATASETS.TRAIN`` checked
        (:func:`~resnest_dense.data.validation.load_checked_dataset_dicts`) and filtered as
        detectron2's loader filters them (empty images, few keypoints)."""
        return load_checked_dataset_dicts(
            cfg,
            cfg.DATASETS.TRAIN,
            is_train=True,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=(
                cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
            ),
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, mapper: Optional[Callable] = None):
        """detectron2's train loader with the image checks, the corrupt-image policy and, for
        ``DATALOADER.SAMPLER_TRAIN TrainingSampler``, the resumable data stream.

        Args:
            cfg: the run's config.
            mapper: the dataset mapper (a LazyConfig's); default: built from ``cfg``.
        """
        dicts = cls.train_dataset_dicts(cfg)
        if mapper is None and is_semantic_segmentation(cfg):
            mapper = build_semseg_train_mapper(cfg)
        elif mapper is None:
            mapper = DatasetMapper(cfg, True)
        mapper = SafeMapper(
            CheckedMapper.from_config(cfg, mapper, cfg.DATASETS.TRAIN),
            skip=cfg.DATALOADER.SKIP_CORRUPT_IMAGES,
            tracker=UnreadableImageTracker(dicts, cfg.DATASETS.TRAIN),
        )
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            logger.warning(
                "DATALOADER.SAMPLER_TRAIN %s: detectron2's sampler restarts its stream on "
                "--resume (the resumed data order differs from an uninterrupted run).",
                cfg.DATALOADER.SAMPLER_TRAIN,
            )
            return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        grouping = cfg.DATALOADER.ASPECT_RATIO_GROUPING
        groups = aspect_ratio_groups(dicts) if grouping else [0] * len(dicts)
        sampler = ResumableTrainingSampler(groups, cfg.SOLVER.IMS_PER_BATCH, seed)
        loader = build_detection_train_loader(
            PositionalDataset(dicts, seed),
            mapper=SeededMapper(mapper),
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=grouping,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
        loader.resumable_sampler = sampler  # read by resume_or_load
        return loader

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str, mapper: Optional[Callable] = None):
        """detectron2's test loader, each image and label checked as it is read (``mapper``
        default: detectron2's test ``DatasetMapper`` of ``cfg``)."""
        mapper = DatasetMapper(cfg, False) if mapper is None else mapper
        mapper = CheckedMapper.from_config(cfg, mapper, [dataset_name])
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model):
        if is_semantic_segmentation(cfg):
            return build_semseg_optimizer(cfg, model)
        return super().build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer):
        if is_semantic_segmentation(cfg):
            return build_semseg_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)
