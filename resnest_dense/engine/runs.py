"""What a tool runs once its config is set up: train, or evaluate named weights, and write the
results file. ``tools/train_net.py``, ``tools/lazyconfig_train_net.py`` and ``tools/reproduce.py``
are thin compositions of these; a config from a LazyConfig file runs on :class:`LazyTrainer`,
the same trainer with the model, optimizer and mappers built from the LazyConfig."""

import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Type

from detectron2.config import CfgNode
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..checkpoint import Checkpointer
from ..export import ExportedModel, check_matches_config, exported_format
from ..utils import optimize_for_inference
from ..utils.io import atomic_write_json
from .lazy import LazyTrainer, is_lazy_run
from .trainer import Trainer

__all__ = ["evaluate_weights", "train", "trainer_class", "write_results"]

logger = logging.getLogger(__name__)


def trainer_class(cfg: CfgNode) -> Type[Trainer]:
    """The trainer of ``cfg``: :class:`LazyTrainer` for a LazyConfig, else :class:`Trainer`."""
    return LazyTrainer if is_lazy_run(cfg) else Trainer


def train(cfg: CfgNode, resume: bool = False) -> Optional[Mapping]:
    """Train ``cfg`` (resuming from ``OUTPUT_DIR`` if asked); returns the final evaluation's
    results, which are also written to ``<OUTPUT_DIR>/results.json``."""
    trainer = trainer_class(cfg)(cfg)
    trainer.resume_or_load(resume=resume)
    results = trainer.train()
    if results:
        write_results(cfg, results, weights=os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    return results


def evaluate_weights(
    cfg: CfgNode, resume: bool = False, allow_random_weights: bool = False
) -> Mapping:
    """Evaluate ``MODEL.WEIGHTS`` (or, with ``resume``, the run's last checkpoint) on
    ``DATASETS.TEST``; writes ``<OUTPUT_DIR>/results.json``.

    The weights are loaded strictly: a file that does not cover the model exactly (another
    architecture, a backbone-only file, another ``NUM_CLASSES``) raises
    :class:`~resnest_dense.checkpoint.CheckpointMismatchError` naming the keys, unless
    ``allow_random_weights``. Batch norms are folded when ``TEST.FAST_INFERENCE``. With
    ``TEST.AUG.ENABLED`` the detector is evaluated a second time with test-time augmentation
    (:meth:`Trainer.test_with_TTA`) and the ``*_TTA`` results are added.
    """
    if exported_format(cfg.MODEL.WEIGHTS) and not resume:
        # An exported file is the whole model: onnxruntime / TorchScript behind detectron2's
        # model interface, evaluated by the same loader and evaluator as the PyTorch model.
        model = ExportedModel(cfg.MODEL.WEIGHTS)
        check_matches_config(model.metadata, cfg, cfg.MODEL.WEIGHTS)
        results = trainer_class(cfg).test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
            write_results(cfg, results, weights=cfg.MODEL.WEIGHTS)
        return results
    model = trainer_class(cfg).build_model(cfg)
    checkpointer = Checkpointer(model, save_dir=cfg.OUTPUT_DIR)
    weights = cfg.MODEL.WEIGHTS
    if resume and checkpointer.has_checkpoint():
        weights = checkpointer.get_checkpoint_file()
    report, _ = checkpointer.load_checked(weights, strict=not allow_random_weights)
    if weights and report is not None and not report.clean:
        logger.warning("Evaluating %s as asked although %s", weights, report.summary())
    if cfg.TEST.FAST_INFERENCE:
        optimize_for_inference(model)
    trainer = trainer_class(cfg)
    results = trainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        # Both numbers, as detectron2's train_net reports them: bbox, ..., bbox_TTA, ...
        results.update(trainer.test_with_TTA(cfg, model))
    if comm.is_main_process():
        verify_results(cfg, results)
        write_results(cfg, results, weights=weights)
    return results


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
    """Write evaluation results to ``<OUTPUT_DIR>/results.json`` (main process only, atomic).

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
        record = {"weights": weights or cfg.MODEL.WEIGHTS, "results": first}
        record["per_dataset"] = per_dataset
        atomic_write_json(path, _jsonable(record))
        logger.info("Wrote %s", path)
    return path
