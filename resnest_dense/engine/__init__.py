"""Training and evaluation entry points: a thin detectron2 ``DefaultTrainer`` and ``setup``.

:class:`Trainer` serves every config of this project: detection / instance segmentation
(detectron2's defaults, COCO evaluation) and semantic segmentation (the builders of
:mod:`resnest_dense.engine.semseg`), on one or several processes (gloo on CPU-only machines),
with atomic checkpoints, a data stream that makes ``--resume`` exact, a named non-finite loss
check and start-up validation (docs/training.md). :func:`setup` turns ``tools/train_net.py``
arguments into a frozen config with clear errors for unknown keys, missing files, unregistered
datasets, missing weights and batch / norm mismatches.
"""

from .evaluation import build_coco_evaluator, coco_eval_backend
from .trainer import Trainer, check_datasets, load_config, setup, write_results

__all__ = [
    "Trainer",
    "build_coco_evaluator",
    "check_datasets",
    "coco_eval_backend",
    "load_config",
    "setup",
    "write_results",
]
