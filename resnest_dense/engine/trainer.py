"""A thin detectron2 ``DefaultTrainer`` for every config of this project, and ``setup``."""

import json
import logging
import math
import os
import random
from collections import OrderedDict, defaultdict
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.events import EventWriter, get_event_storage
from detectron2.utils.logger import setup_logger

from .. import data as _data  # noqa: F401  (registers the toy / ADE20K datasets)
from .. import model_zoo as _model_zoo  # noqa: F401  (resnest:// weights, all builders)
from ..config import get_resnest_cfg
from ..data.coco_format import register_coco_format_datasets
from .amp import build_amp_trainer
from .atomic_checkpoint import AtomicDetectionCheckpointer, atomic_write
from .evaluation import build_coco_evaluator
from .robustness import (
    SafeMapper,
    StartupError,
    adapt_norms_for_device,
    check_finite_losses,
    check_image_files,
    validate_training_config,
)
from .semseg import (
    build_semseg_evaluator,
    build_semseg_lr_scheduler,
    build_semseg_optimizer,
    build_semseg_train_augmentations,
    is_semseg_config,
)
from .train_data import (
    PositionalDataset,
    ResumableTrainingSampler,
    SeededMapper,
    aspect_ratio_groups,
    iteration_seed,
)

__all__ = [
    "Trainer",
    "check_datasets",
    "check_weights_file",
    "create_ddp_model",
    "LossHistoryWriter",
    "load_config",
    "read_loss_history",
    "setup",
    "write_results",
]

logger = logging.getLogger(__name__)

_d2_create_ddp_model = d2_defaults.create_ddp_model
_d2_amp_trainer = d2_defaults.AMPTrainer


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """detectron2's ``create_ddp_model``, with ``device_ids=None`` for a model on the CPU.

    detectron2 always passes ``device_ids=[local_rank]``, which ``DistributedDataParallel``
    rejects for CPU modules (gloo training on CPU-only machines).
    """
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, **kwargs)


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


class LossHistoryWriter(EventWriter):
    """Every iteration's loss terms, unsmoothed, as JSON lines (``<OUTPUT_DIR>/losses.jsonl``).

    ``metrics.json`` holds the latest value of each period (losses as a 20-iteration median), so
    it cannot show whether two runs trained identically; this file can.
    """

    def __init__(self, path: str):
        self._path = path
        self._last = -1

    def write(self) -> None:
        rows = defaultdict(dict)
        for key, history in get_event_storage().histories().items():
            if "loss" in key:
                for value, iteration in reversed(history.values()):  # newest first
                    if iteration <= self._last:
                        break
                    rows[int(iteration)][key] = value
        if not rows:
            return
        with open(self._path, "a") as f:
            for iteration in sorted(rows):
                f.write(json.dumps({"iteration": iteration, **rows[iteration]}) + "\n")
        self._last = max(rows)


def read_loss_history(path: str) -> Dict[int, Dict[str, float]]:
    """``{iteration: {loss name: value}}`` from a ``losses.jsonl`` file."""
    history = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            history[row.pop("iteration")] = row
    return history


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` with the evaluator chosen by the dataset's
    ``evaluator_type``, the segmentation recipe's loader / optimizer / LR schedule, and:

    * CPU multi-process training (gloo): DDP without device ids;
    * atomic checkpoints (:class:`AtomicDetectionCheckpointer`);
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
        # DefaultTrainer.__init__ wraps the model with detectron2's create_ddp_model; swap in the
        # CPU-aware one for the duration of the call rather than copying that __init__.
        # The same for the mixed-precision trainer: detectron2's AMPTrainer needs CUDA and
        # float16; ours autocasts on the model's device in SOLVER.AMP.PRECISION.
        d2_defaults.create_ddp_model = create_ddp_model
        d2_defaults.AMPTrainer = build_amp_trainer(cfg)
        try:
            super().__init__(cfg)
        finally:
            d2_defaults.create_ddp_model = _d2_create_ddp_model
            d2_defaults.AMPTrainer = _d2_amp_trainer

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        model = super().build_model(cfg)
        if cfg.SEED >= 0:
            model.register_forward_pre_hook(_IterationSeed(cfg.SEED))
        if cfg.SOLVER.CHECK_FINITE_LOSS:
            model.register_forward_hook(_finite_loss_hook)
        return model

    def build_hooks(self):
        # Called at the end of DefaultTrainer.__init__, after it created self.checkpointer and
        # before the PeriodicCheckpointer hook takes it: same model and checkpointables.
        old = self.checkpointer
        self.checkpointer = AtomicDetectionCheckpointer(
            old.model, old.save_dir, save_to_disk=old.save_to_disk, **old.checkpointables
        )
        return super().build_hooks()

    def build_writers(self):
        return super().build_writers() + [
            LossHistoryWriter(os.path.join(self.cfg.OUTPUT_DIR, "losses.jsonl"))
        ]

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
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
            self._clean_output_dir()
        sampler = getattr(self._trainer.data_loader, "resumable_sampler", None)
        if sampler is not None:
            sampler.set_start_iter(self.start_iter)

    def _clean_output_dir(self) -> None:
        """Drop what an interrupted run left behind: temporary checkpoint files, and loss
        history lines of iterations that will be trained again."""
        out = self.cfg.OUTPUT_DIR
        if not os.path.isdir(out):
            return
        for name in os.listdir(out):
            if name.startswith(".tmp_"):
                logger.warning("Removing %s, a partial write of an interrupted run", name)
                os.remove(os.path.join(out, name))
        path = os.path.join(out, "losses.jsonl")
        if os.path.isfile(path):
            kept = {i: v for i, v in read_loss_history(path).items() if i < self.start_iter}
            lines = "".join(json.dumps({"iteration": i, **v}) + "\n" for i, v in kept.items())
            atomic_write(path, lambda f: f.write(lines), mode="w")

    def run_step(self) -> None:
        try:
            super().run_step()
        except FloatingPointError:
            # The after_train hooks still run: write no checkpoint of this state.
            self.checkpointer.save_to_disk = False
            raise

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if kind == "coco":
            tasks = ["bbox"]
            if cfg.MODEL.MASK_ON:
                tasks.append("segm")
            if cfg.MODEL.KEYPOINT_ON:
                tasks.append("keypoints")
            return build_coco_evaluator(dataset_name, output_folder, tasks=tasks)
        if kind == "sem_seg":
            return build_semseg_evaluator(cfg, dataset_name, output_folder)
        raise NotImplementedError(
            f"No evaluator for dataset {dataset_name!r} with evaluator_type {kind!r} "
            "(supported: 'coco', 'sem_seg')"
        )

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        """detectron2's train loader with the image checks, the corrupt-image policy and, for
        ``DATALOADER.SAMPLER_TRAIN TrainingSampler``, the resumable data stream."""
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=(
                cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
            ),
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        check_image_files(dicts, cfg.DATASETS.TRAIN)
        if is_semseg_config(cfg):
            augs = build_semseg_train_augmentations(cfg)
            logger.info("Segmentation training augmentations: %s", augs)
            mapper = DatasetMapper(cfg, is_train=True, augmentations=augs)
        else:
            mapper = DatasetMapper(cfg, True)
        mapper = SafeMapper(mapper, skip=cfg.DATALOADER.SKIP_CORRUPT_IMAGES)
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
    def build_optimizer(cls, cfg: CfgNode, model):
        if is_semseg_config(cfg):
            return build_semseg_optimizer(cfg, model)
        return super().build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer):
        if is_semseg_config(cfg):
            return build_semseg_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)


def check_datasets(cfg: CfgNode, train: bool = True) -> None:
    """Fail early, naming the dataset, when a dataset of ``cfg`` cannot be loaded.

    Args:
        cfg: the merged config.
        train: also check ``DATASETS.TRAIN`` (``DATASETS.TEST`` is always checked).

    Raises:
        KeyError: a name is not registered (the message lists registered names).
        FileNotFoundError: a registered COCO-style dataset's json file or image folder is
            missing (generated toy sets are exempt: they are written on first use).
    """
    names = list(cfg.DATASETS.TEST) + (list(cfg.DATASETS.TRAIN) if train else [])
    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            toy = [n for n in registered if n.startswith("toy_")]
            examples = sorted(toy) + sorted(n for n in registered if n.startswith("coco_2017"))
            raise KeyError(
                f"Dataset {name!r} is not registered. Registered names include: "
                f"{', '.join(examples[:8])}, ... ({len(registered)} in total). Register your "
                "own COCO-format data with DATASETS.COCO_FORMAT [[name, json_file, image_root]] "
                "(see docs/detection.md)."
            )
        meta = MetadataCatalog.get(name)
        if meta.get("toy_coco_generate_kwargs") or meta.get("evaluator_type") != "coco":
            continue
        for key in ("json_file", "image_root"):
            path = meta.get(key)
            if path and not os.path.exists(path):
                raise FileNotFoundError(
                    f"Dataset {name!r}: {key} {path!r} does not exist. Put the data there (see "
                    "datasets/README.md; builtin COCO names look under $DETECTRON2_DATASETS, "
                    f"now {os.getenv('DETECTRON2_DATASETS', 'datasets')!r})."
                )


def load_config(config_file: str, opts: Sequence[str] = (), train: bool = True) -> CfgNode:
    """The merged (not yet frozen) config of ``config_file`` + ``KEY VALUE`` options.

    get_cfg -> ResNeSt, segmentation and tool keys -> the file -> the options -> fork
    backbone names -> ``DATASETS.COCO_FORMAT`` registration -> dataset checks.

    Args:
        config_file: a YAML file (e.g. ``configs/COCO-Detection/...yaml``).
        opts: trailing ``KEY VALUE`` overrides.
        train: also check that ``DATASETS.TRAIN`` can be loaded.

    Raises:
        FileNotFoundError: missing config file or dataset files.
        KeyError: unknown config key (naming the key and where it came from) or unregistered
            dataset name.
    """
    cfg = get_resnest_cfg(config_file, opts)
    register_coco_format_datasets(cfg.DATASETS.COCO_FORMAT)
    check_datasets(cfg, train=train)
    return cfg


def setup(args) -> CfgNode:
    """Frozen config from ``tools/train_net.py`` arguments, with detectron2's default setup
    (logging, ``config.yaml`` in ``OUTPUT_DIR``); see :func:`load_config`."""
    eval_only = getattr(args, "eval_only", False)
    cfg = load_config(args.config_file, args.opts, train=not eval_only)
    # Each launched worker runs setup, so the world size is known here.
    adapt_norms_for_device(cfg, comm.get_world_size())
    if eval_only:
        check_weights_file(cfg)
    else:
        validate_training_config(cfg, comm.get_world_size())
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup configures detectron2's loggers; ours (evaluator choice, checks) too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="resnest_dense")
    logger.info(
        "Effective batch %d images (%d per process), backbone norm %s, FPN norm %r",
        cfg.SOLVER.IMS_PER_BATCH,
        cfg.SOLVER.IMS_PER_BATCH // max(1, comm.get_world_size()),
        cfg.MODEL.RESNETS.NORM,
        cfg.MODEL.FPN.NORM,
    )
    if not cfg.MODEL.WEIGHTS:
        logger.warning(
            "MODEL.WEIGHTS is empty: %s a randomly initialised model.",
            "evaluating" if eval_only else "training",
        )
    return cfg


def check_weights_file(cfg: CfgNode) -> None:
    """Raise :class:`StartupError` if ``MODEL.WEIGHTS`` is a local path that does not exist."""
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise StartupError(f"MODEL.WEIGHTS={weights!r}: no such file.")


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # NaN AP (e.g. no predictions) is not valid JSON
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return obj


def write_results(
    cfg: CfgNode, results: Dict, path: Optional[str] = None, weights: Optional[str] = None
) -> str:
    """Write evaluation results to ``<OUTPUT_DIR>/results.json`` (main process only).

    The file holds ``results`` (the first test dataset's ``{task: {metric: value}}``, what
    ``tools/reproduce.py`` reads), ``per_dataset`` and the evaluated weights (``weights``,
    default ``MODEL.WEIGHTS``). NaN values become null.
    """
    path = path or os.path.join(cfg.OUTPUT_DIR, "results.json")
    names = list(cfg.DATASETS.TEST)
    # DefaultTrainer.test returns the bare dict when there is a single test dataset.
    per_dataset = (
        OrderedDict([(names[0], results)])
        if len(names) == 1 or not all(n in results for n in names)
        else results
    )
    first = per_dataset[next(iter(per_dataset))] if per_dataset else {}
    if comm.is_main_process():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(
                _jsonable(
                    {
                        "weights": weights or cfg.MODEL.WEIGHTS,
                        "results": first,
                        "per_dataset": per_dataset,
                    }
                ),
                f,
                indent=1,
            )
        logger.info("Wrote %s", path)
    return path
