"""Training and evaluation: one set-up path, one trainer, one evaluator factory.

* :func:`load_config` / :func:`setup` (:mod:`.entry`): the config of every tool, checked at
  start-up by :mod:`.checks` (device, norms, datasets, weights, batch) with clear errors;
* :class:`Trainer` (:mod:`.trainer`): detectron2's ``DefaultTrainer`` for every config of this
  project, on one or several processes (gloo on CPU-only machines), with atomic checkpoints, a
  data stream that makes ``--resume`` exact, a named non-finite loss check and mixed precision
  on any device (docs/training.md);
* :func:`build_evaluator` (:mod:`.evaluation`): COCO AP or mIoU / pixAcc by dataset type;
* :func:`build_predictor` (:mod:`.predictor`): the demos' predictor, weights loaded strictly;
* :func:`train` / :func:`evaluate_weights` / :func:`write_results` (:mod:`.runs`): what
  ``tools/train_net.py``, ``tools/lazyconfig_train_net.py`` and ``tools/reproduce.py`` run;
* :func:`count_flops` / :func:`count_activations` / :func:`count_parameters`
  (:mod:`.analysis`): model complexity as ``tools/analyze_model.py`` reports it;
* :class:`LazyTrainer` (:mod:`.lazy`): the same trainer for detectron2 LazyConfig files, whose
  YAML-key view goes through the same checks (docs/configs.md).
"""

from ..errors import StartupError
from .analysis import count_activations, count_flops, count_parameters
from .checks import SETUP_ERRORS
from .evaluation import build_coco_evaluator, build_evaluator, coco_eval_backend
from .predictor import build_predictor
from .runs import evaluate_weights, train, write_results
from .entry import argument_parser, load_config, run_from_args, setup
from .lazy import LazyTrainer
from .trainer import Trainer

__all__ = [
    "SETUP_ERRORS",
    "LazyTrainer",
    "StartupError",
    "Trainer",
    "argument_parser",
    "build_coco_evaluator",
    "build_evaluator",
    "build_predictor",
    "coco_eval_backend",
    "count_activations",
    "count_flops",
    "count_parameters",
    "evaluate_weights",
    "load_config",
    "run_from_args",
    "setup",
    "train",
    "write_results",
]
