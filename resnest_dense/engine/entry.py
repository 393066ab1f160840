"""The one set-up path of every tool: config, data registration, start-up checks, logging.

``tools/train_net.py``, ``tools/lazyconfig_train_net.py``, both demos, ``tools/reproduce.py``
and the export tool call :func:`load_config` (and the train tools :func:`setup` on top of it),
so a config is always built the same way: :func:`resnest_dense.config.get_resnest_cfg` (keys,
file, options, fork names) -> ``DATASETS.COCO_FORMAT`` / ``SEM_SEG_FORMAT`` registration ->
:func:`resnest_dense.engine.checks.validate` (device, norms, datasets, weights, batch), which
fails with one clear message before any work is done.

A LazyConfig file (``.py``, ``a.b=c`` overrides) takes the same path in every tool (training,
``--eval-only``, both demos, the export):
:func:`resnest_dense.config.get_lazy_cfg` -> its YAML-key view
(:func:`resnest_dense.engine.lazy.lazy_run_config`) -> the same :func:`validate` -> what the
checks adapted (device, norms) written back into the LazyConfig; for the demos and the export,
a test input the view can state (:func:`resnest_dense.engine.lazy.check_lazy_test_input`).
"""

import argparse
import contextlib
import logging
from typing import Iterator, List, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import get_lazy_cfg, get_resnest_cfg, is_lazy_config_file
from ..data.coco_format import register_coco_format_datasets
from ..data.sem_seg_format import register_sem_seg_format_datasets
from ..errors import StartupError
from .checks import validate
from .lazy import (
    check_lazy_test_input,
    in_lazy_terms,
    is_lazy_run,
    lazy_run_config,
    sync_to_lazy,
)
from .runs import evaluate_weights, train

__all__ = ["argument_parser", "load_config", "run_from_args", "setup"]

logger = logging.getLogger(__name__)

_PACKAGE_LOGGER = "resnest_dense"


def argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` plus ``--allow-random-weights``."""
    parser = default_argument_parser(epilog=epilog)
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="with --eval-only: evaluate even when MODEL.WEIGHTS (LazyConfig: "
        "train.init_checkpoint) is empty, an ImageNet backbone or does not cover the whole model "
        "(the numbers are then meaningless)",
    )
    return parser


def load_config(
    config_file: Optional[str],
    opts: Sequence[str] = (),
    purpose: str = "train",
    allow_random_weights: bool = False,
    world_size: Optional[int] = None,
) -> CfgNode:
    """The checked, mutable config of a tool.

    Args:
        config_file: a YAML file (e.g. ``configs/COCO-Detection/...yaml``), or a LazyConfig
            file (``configs/lazy/...py``): then the result is a
            :class:`~resnest_dense.engine.lazy.LazyRunConfig` whose ``.lazy`` is the LazyConfig.
        opts: trailing ``KEY VALUE`` overrides (``a.b=c`` for a LazyConfig).
        purpose: ``"train"``, ``"eval"``, ``"demo"``, ``"export"`` or ``"analyze"``: which
            checks apply (see :func:`resnest_dense.engine.checks.validate`).
        allow_random_weights: let evaluation / demos run without trained weights.
        world_size: number of processes (default: detectron2's ``comm``).

    Raises:
        FileNotFoundError, KeyError: missing config file, unknown key (naming the key and where
            it came from).
        StartupError: a check failed (subclasses are also ``KeyError`` / ``FileNotFoundError``
            for unregistered datasets / missing files).
    """
    if is_lazy_config_file(config_file):
        cfg = lazy_run_config(get_lazy_cfg(config_file, opts))
    else:
        cfg = get_resnest_cfg(config_file, opts)
    register_coco_format_datasets(
        cfg.DATASETS.COCO_FORMAT, missing_ok=purpose in ("demo", "export", "analyze")
    )
    register_sem_seg_format_datasets(
        cfg.DATASETS.SEM_SEG_FORMAT, missing_ok=purpose in ("demo", "export", "analyze")
    )
    if not is_lazy_run(cfg):
        validate(cfg, purpose, world_size=world_size, allow_random_weights=allow_random_weights)
        return cfg
    try:
        validate(cfg, purpose, world_size=world_size, allow_random_weights=allow_random_weights)
    except StartupError as e:
        raise type(e)(in_lazy_terms(str(e))) from e
    sync_to_lazy(cfg, world_size)
    if purpose in ("demo", "export", "analyze"):
        check_lazy_test_input(cfg)
    return cfg


class _Buffer(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _held_log_records() -> Iterator[List[logging.LogRecord]]:
    """Hold the package's log records (e.g. the fork-YAML warning) until the run's log file
    exists; the caller replays them."""
    package = logging.getLogger(_PACKAGE_LOGGER)
    buffer = _Buffer()
    package.addHandler(buffer)
    try:
        yield buffer.records
    finally:
        package.removeHandler(buffer)


def setup(args: argparse.Namespace) -> CfgNode:
    """Frozen config from ``tools/train_net.py`` / ``tools/lazyconfig_train_net.py`` arguments,
    with detectron2's default setup (logging, ``config.yaml`` in ``OUTPUT_DIR``: the YAML
    config, or the LazyConfig as detectron2's ``LazyConfig.save`` writes it); see
    :func:`load_config`."""
    eval_only = getattr(args, "eval_only", False)
    with _held_log_records() as records:
        cfg = load_config(
            args.config_file,
            args.opts,
            purpose="eval" if eval_only else "train",
            allow_random_weights=getattr(args, "allow_random_weights", False),
        )
    cfg.freeze()
    default_setup(cfg.lazy if is_lazy_run(cfg) else cfg, args)
    # default_setup configures detectron2's loggers; ours (checks, evaluator choice) too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=_PACKAGE_LOGGER)
    for record in records:
        logging.getLogger(record.name).handle(record)
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


def run_from_args(args: argparse.Namespace):
    """One process of ``tools/train_net.py`` / ``tools/lazyconfig_train_net.py``: set up, then
    evaluate (``--eval-only``) or train; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        return evaluate_weights(
            cfg, resume=args.resume, allow_random_weights=args.allow_random_weights
        )
    return train(cfg, resume=args.resume)
