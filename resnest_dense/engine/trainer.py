"""A thin detectron2 ``DefaultTrainer`` for every config of this project, and ``setup``."""

import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence

from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .. import data as _data  # noqa: F401  (registers the toy / ADE20K datasets)
from .. import model_zoo as _model_zoo  # noqa: F401  (resnest:// weights, all builders)
from ..config import add_resnest_config, resolve_fork_backbone_name
from ..config_segmentation import add_resnest_segmentation_config
from .config import add_resnest_engine_config, register_coco_format_datasets
from .evaluation import build_coco_evaluator
from .semseg import (
    build_semseg_evaluator,
    build_semseg_lr_scheduler,
    build_semseg_optimizer,
    build_semseg_train_loader,
    is_semseg_config,
)

__all__ = ["Trainer", "setup", "load_config", "check_datasets", "write_results"]

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` with the evaluator chosen by the dataset's
    ``evaluator_type`` and the segmentation recipe's loader / optimizer / LR schedule."""

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
        if is_semseg_config(cfg):
            return build_semseg_train_loader(cfg)
        return super().build_train_loader(cfg)

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


def _merge(cfg: CfgNode, config_file: str, opts: Sequence[str]) -> None:
    """``merge_from_file`` + ``merge_from_list`` with errors that name the key and its source."""
    if not config_file:
        raise ValueError("No config file given: pass --config-file configs/<...>.yaml")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"Config file {config_file!r} does not exist")
    try:
        cfg.merge_from_file(config_file)
    except KeyError as e:
        raise KeyError(f"{e.args[0] if e.args else e} (in config file {config_file})") from e
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as e:  # yacs asserts on unknown keys in a list
        raise KeyError(f"{e.args[0] if e.args else e} (in the command-line options)") from e


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
    cfg = get_cfg()
    add_resnest_config(cfg)
    add_resnest_segmentation_config(cfg)
    add_resnest_engine_config(cfg)
    _merge(cfg, config_file, opts)
    resolve_fork_backbone_name(cfg)
    register_coco_format_datasets(cfg.DATASETS.COCO_FORMAT)
    check_datasets(cfg, train=train)
    return cfg


def setup(args) -> CfgNode:
    """Frozen config from ``tools/train_net.py`` arguments, with detectron2's default setup
    (logging, ``config.yaml`` in ``OUTPUT_DIR``); see :func:`load_config`."""
    eval_only = getattr(args, "eval_only", False)
    cfg = load_config(args.config_file, args.opts, train=not eval_only)
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
