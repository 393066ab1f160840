"""The start-up validation layer of every tool, and the run-time guards of training.

Every entry point (``tools/train_net.py`` train and ``--eval-only``, both demos,
``tools/reproduce.py``) builds its config through :func:`resnest_dense.engine.load_config`, which
calls :func:`validate` here; so each rule is written once. A failed check raises
:class:`StartupError` with one message naming the key / file / dataset, what was expected, what
was found and how to fix it, before any model is built or any output is written.

Start-up checks:

* :func:`resolve_device`: a CUDA config on a machine without CUDA runs on the CPU (one warning);
* :func:`adapt_norms_for_device`: ``SyncBN`` is ``nn.SyncBatchNorm``, which has no CPU/gloo
  implementation; CPU runs with several processes use detectron2's ``naiveSyncBN_N``, the same
  math computed with all-reduce, which also accepts empty batches (zero mask-head inputs);
* :func:`check_training_setup`: images per worker vs the backbone norm, batch vs processes,
  mixed-precision settings;
* :func:`check_dataset_files`: dataset names registered, their files present;
* :func:`check_weights`: ``MODEL.WEIGHTS`` exists; for evaluation and demos it must name a
  trained model (not empty, not an ImageNet backbone), unless random weights are allowed;
* the data itself (classes vs model, masks, labels, images, ground truth):
  :mod:`resnest_dense.data.validation`, called here for the test sets and by the trainer for
  the training set.

Run-time guards: :class:`SafeMapper` (an unreadable image fails naming the file, or with
``DATALOADER.SKIP_CORRUPT_IMAGES`` is skipped and counted) and :func:`check_finite_losses`.
"""

import logging
import os
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

import torch
import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from omegaconf import ListConfig

from ..config import is_semantic_segmentation
from ..checkpoint import CheckpointMismatchError, CheckpointReadError
from ..data.registration import datasets_root, is_generated
from ..data.validation import DataCheckError, UnreadableImageTracker
from ..data.validation import check_datasets as check_data
from ..errors import MissingFileError, StartupError, UnregisteredDatasetError
from ..export.files import ExportedFileError, exported_format
from ..model_zoo import (
    SCHEME,
    ChecksumMismatchError,
    WeightsNotFoundError,
    entry_for_url,
    get_entry,
)
from .amp import amp_dtype

__all__ = [
    "NON_FINITE_PREFIX",
    "PURPOSES",
    "SETUP_ERRORS",
    "StartupError",
    "SafeMapper",
    "adapt_norms_for_device",
    "check_dataset_files",
    "check_finite_losses",
    "check_test_aug",
    "check_training_setup",
    "check_weights",
    "non_finite_message",
    "MissingFileError",
    "UnregisteredDatasetError",
    "resolve_device",
    "use_registry_for_weights_url",
    "validate",
]

logger = logging.getLogger(__name__)

_BATCH_STAT_NORMS = {"BN", "SyncBN", "naiveSyncBN", "naiveSyncBN_N"}
_SYNC_NORMS = _BATCH_STAT_NORMS - {"BN"}
# What a tool does with the config: train; evaluate / run a demo / export a trained model;
# analyze (count FLOPs / parameters of a randomly initialised model: no data, no weights).
PURPOSES = ("train", "eval", "demo", "export", "analyze")
# Registry kinds of trained models, by the model family they fit (:func:`_model_family`); a
# segmenter of any dataset fits a segmentation config.
_TRAINED_KINDS = {
    "detection": ("coco_detector",),
    "panoptic": ("coco_panoptic",),
    "segmentation": ("ade20k_segmenter", "pcontext_segmenter"),
}
# What a tool reports as one line (exit code 2) when setting up fails: a wrong config, data or
# weights, never a bug.
SETUP_ERRORS = (
    StartupError,  # DataCheckError, MissingFileError, ... included
    CheckpointMismatchError,
    CheckpointReadError,
    ChecksumMismatchError,
    WeightsNotFoundError,
)


# Norm arguments: the YAML keys (MODEL.RESNETS.NORM, ...) and a LazyConfig's constructor
# arguments (norm=, conv_norm=).
_NORM_KEYS = {"NORM", "norm", "conv_norm"}


def _norm_paths(node, prefix: Tuple = ()) -> Iterator[Tuple]:
    if isinstance(node, Mapping):
        items = node.items()
    elif isinstance(node, (list, tuple, ListConfig)):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        if key in _NORM_KEYS and isinstance(value, str):
            yield prefix + (key,)
        else:
            yield from _norm_paths(value, prefix + (key,))


def _replace_norms(cfg, old: Set[str], new: str) -> List[str]:
    """Set every norm name of ``cfg`` that is in ``old`` to ``new``; returns their dotted keys."""
    changed = []
    for path in _norm_paths(cfg):
        node = cfg
        for part in path[:-1]:
            node = node[part]
        if node[path[-1]] in old:
            node[path[-1]] = new
            changed.append(".".join(str(p) for p in path))
    return changed


def adapt_norms_for_device(
    cfg,
    world_size: Optional[int] = None,
    device: Optional[str] = None,
    purpose: str = "train",
) -> List[str]:
    """Replace ``SyncBN`` by ``naiveSyncBN_N`` for multi-process CPU runs (``cfg`` mutable).

    For export and analysis every synchronised norm becomes ``BN``: an exported graph and a
    counted pass are eval-only, where all of them are the same affine map of the running
    statistics (same state-dict keys), and ``nn.SyncBatchNorm`` / ``NaiveSyncBatchNorm`` call
    ``torch.distributed``, which ``torch.jit.script`` cannot compile.

    Args:
        cfg: a YAML config, or a LazyConfig's ``model`` (its ``norm`` / ``conv_norm``
            arguments are replaced).
        world_size: number of processes (default: detectron2's ``comm``).
        device: the run's device (default ``cfg.MODEL.DEVICE``).
        purpose: what the config is for (:data:`PURPOSES`).

    Returns:
        The keys that were changed (logged).
    """
    if purpose in ("export", "analyze"):
        changed = _replace_norms(cfg, _SYNC_NORMS, "BN")
        if changed:
            logger.info(
                "%s: eval-mode BN in place of synchronised norms for %s.", purpose.title(), changed
            )
        return changed
    world_size = comm.get_world_size() if world_size is None else world_size
    device = cfg.MODEL.DEVICE if device is None else device
    if device != "cpu" or world_size <= 1:
        return []
    changed = _replace_norms(cfg, {"SyncBN"}, "naiveSyncBN_N")
    if changed:
        logger.warning(
            "CPU with %d processes: nn.SyncBatchNorm has no gloo implementation; using "
            "naiveSyncBN_N (same statistics, all-reduced) for %s.",
            world_size,
            ", ".join(changed),
        )
    return changed


def check_test_aug(cfg: CfgNode) -> List[StartupError]:
    """``TEST.AUG`` is detectron2's R-CNN test-time augmentation (``GeneralizedRCNNWithTTA``)."""
    arch = cfg.MODEL.META_ARCHITECTURE
    # PanopticFPN configs (the fork's panoptic recipe enables TEST.AUG) pass: the evaluation
    # then skips TTA with a warning (Trainer.test_with_TTA).
    if not cfg.TEST.AUG.ENABLED or arch in ("GeneralizedRCNN", "PanopticFPN"):
        return []
    return [
        StartupError(
            f"TEST.AUG.ENABLED=True needs an R-CNN detector (MODEL.META_ARCHITECTURE "
            f"GeneralizedRCNN), got {arch}: detectron2's GeneralizedRCNNWithTTA wraps only that. "
            "Semantic segmentation has its own multi-scale + flip inference (TEST.SEM_SEG.SCALES, "
            "TEST.SEM_SEG.FLIP); set TEST.AUG.ENABLED False."
        )
    ]


def check_training_setup(cfg: CfgNode, world_size: Optional[int] = None) -> List[StartupError]:
    """Problems of a training set-up: batch vs processes, batch statistics of one image,
    mixed-precision settings (empty when fine)."""
    world_size = comm.get_world_size() if world_size is None else world_size
    problems = []
    batch = cfg.SOLVER.IMS_PER_BATCH
    if batch % world_size:
        problems.append(
            f"SOLVER.IMS_PER_BATCH={batch} is not divisible by the number of processes "
            f"({world_size})."
        )
    per_worker = batch // max(world_size, 1)
    norm = cfg.MODEL.RESNETS.NORM
    # A single process normalises each worker's batch alone; several processes with a
    # synchronised norm pool statistics across workers.
    synced = world_size > 1 and norm in {"SyncBN", "naiveSyncBN", "naiveSyncBN_N"}
    if per_worker == 1 and norm in _BATCH_STAT_NORMS and not synced:
        problems.append(
            f"SOLVER.IMS_PER_BATCH={batch} with {world_size} process(es) is 1 image per worker, "
            f"but MODEL.RESNETS.NORM={norm} needs batch statistics (split attention normalises "
            "one pooled value per channel). Use >= 2 images per worker, a synchronised norm "
            "across several processes, or MODEL.RESNETS.NORM FrozenBN."
        )
    if cfg.SOLVER.AMP.ENABLED:
        try:
            amp_dtype(cfg)
        except ValueError as e:
            problems.append(str(e))
    return [StartupError(p) for p in problems]


def _unregistered(key: str, name: str, registered: Iterable[str]) -> str:
    close = sorted(n for n in registered if n.split("_")[0] == name.split("_")[0])
    examples = sorted(n for n in registered if n.startswith("toy_"))
    examples += sorted(n for n in registered if n.startswith("coco_2017"))
    hint = f" Similar registered names: {', '.join(close[:8])}." if close else ""
    return (
        f"Dataset {name!r} is not registered (named in DATASETS.{key}).{hint} Registered names "
        f"include: {', '.join(examples[:8])}, ... ({len(registered)} in total). Register your "
        "own COCO-format data with DATASETS.COCO_FORMAT [[name, json_file, image_root]] (see "
        "docs/detection.md)."
    )


# Metadata fields of registered data sets that name files or folders: detectron2's COCO, COCO
# panoptic, semantic-segmentation and Cityscapes (image_dir / gt_dir) registrations; the PASCAL
# Context split file.
_DATA_FILE_FIELDS = (
    "json_file",
    "image_root",
    "sem_seg_root",
    "panoptic_json",
    "panoptic_root",
    "split_file",
    "image_dir",
    "gt_dir",
)


def check_dataset_files(cfg: CfgNode, train: bool = True) -> List[StartupError]:
    """Problems of the datasets named by ``cfg``: unregistered names, missing files.

    Args:
        cfg: the merged config.
        train: also check ``DATASETS.TRAIN`` (``DATASETS.TEST`` is always checked).

    Returns:
        The problems (empty when fine). Generated toy sets are exempt from the file checks:
        they are written on first use.
    """
    registered = set(DatasetCatalog.list())
    problems = []
    seen = set()
    for key in ("TRAIN", "TEST") if train else ("TEST",):
        for name in cfg.DATASETS[key]:
            if name in seen:
                continue
            seen.add(name)
            if name not in registered:
                problems.append(UnregisteredDatasetError(_unregistered(key, name, registered)))
                continue
            meta = MetadataCatalog.get(name)
            if is_generated(meta):
                continue
            missing = [
                f"{field} {meta.get(field)!r}"
                for field in _DATA_FILE_FIELDS
                if meta.get(field) and not os.path.exists(meta.get(field))
            ]
            if missing:
                root = datasets_root()
                problems.append(
                    MissingFileError(
                        f"Dataset {name!r}: {' and '.join(missing)} do(es) not exist. Put the "
                        "data there (see datasets/README.md; builtin names look under "
                        f"$DETECTRON2_DATASETS, now {root!r})."
                    )
                )
    return problems


def use_registry_for_weights_url(cfg: CfgNode) -> Optional[str]:
    """Load a released file that ``MODEL.WEIGHTS`` names by URL through the registry.

    The fork's YAML files name their weights by URL (``.../resnest50_detectron-255b5649.pth``).
    detectron2 would download such a URL unverified, and fail offline with a bare ``URLError``
    even when the file is on disk. A URL of a registry file is therefore replaced by its
    ``resnest://`` name (``cfg`` mutable): the file is then looked up offline first,
    checksummed, and a missing one is reported with where to put it.

    Returns:
        The registry name used, or None (not a URL of a registry file; left unchanged).
    """
    weights = cfg.MODEL.WEIGHTS
    if not weights.startswith(("http://", "https://")):
        return None
    entry = entry_for_url(weights)
    if entry is None:
        return None
    cfg.MODEL.WEIGHTS = SCHEME + entry.name
    logger.info(
        "MODEL.WEIGHTS %s is the released file %s: loading it as %s (local copies first, "
        "checksummed).",
        weights,
        entry.file,
        cfg.MODEL.WEIGHTS,
    )
    return entry.name


def _model_family(cfg: CfgNode) -> str:
    if is_semantic_segmentation(cfg):
        return "segmentation"
    return "panoptic" if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN" else "detection"


def check_weights(
    cfg: CfgNode, purpose: str = "train", allow_random: bool = False
) -> List[StartupError]:
    """Problems of ``MODEL.WEIGHTS`` for ``purpose`` (see :data:`PURPOSES`).

    Training accepts empty weights and ImageNet backbones (fine-tuning). Evaluation, demos and
    export need a trained model: empty weights, an ImageNet backbone-only registry entry, or a
    registry model of the other task (detector vs segmenter) are refused unless
    ``allow_random``. Whether a local file fits the model exactly is checked when it is loaded
    (:meth:`resnest_dense.checkpoint.Checkpointer.load_checked`, strict for these purposes).
    """
    weights = cfg.MODEL.WEIGHTS
    needs_trained = purpose != "train" and not allow_random
    override = (
        " Pass the trained model with MODEL.WEIGHTS path/to/model_final.pth (or "
        "resnest://<released model>), or --allow-random-weights to run anyway."
    )
    if not weights:
        if not needs_trained:
            return []
        return [
            StartupError(
                "MODEL.WEIGHTS is empty: the model would be randomly initialised." + override
            )
        ]
    if weights.startswith(SCHEME):
        try:
            entry = get_entry(weights)
        except KeyError as e:
            return [StartupError(f"MODEL.WEIGHTS={weights!r}: {e.args[0]}")]
        family = _model_family(cfg)
        wanted = _TRAINED_KINDS[family]
        if needs_trained and entry.kind == "imagenet_backbone":
            return [
                StartupError(
                    f"MODEL.WEIGHTS={weights!r} holds ImageNet backbone weights only; the "
                    f"{family} heads would be random." + override
                )
            ]
        if entry.kind != "imagenet_backbone" and entry.kind not in wanted:
            return [
                StartupError(
                    f"MODEL.WEIGHTS={weights!r} is a {entry.kind} but the config builds a "
                    f"{cfg.MODEL.META_ARCHITECTURE} (expected a {' or '.join(wanted)}). Use the "
                    f"config the model was released with: configs/{entry.config}."
                )
            ]
        return []
    if "://" in weights:
        return []
    exported = exported_format(weights)
    if exported and purpose in ("train", "export"):
        return [
            ExportedFileError(
                f"MODEL.WEIGHTS={weights!r} is an exported {exported} model, not a PyTorch "
                f"checkpoint: it can be evaluated (--eval-only) or run by the demos, but not "
                f"{'trained from' if purpose == 'train' else 'exported again'}. Point "
                "MODEL.WEIGHTS at the .pth checkpoint it was exported from."
            )
        ]
    if exported:
        return []
    if not os.path.isfile(weights):
        return [
            MissingFileError(
                f"MODEL.WEIGHTS={weights!r}: no such file. The path does not exist (relative "
                f"paths start at {os.getcwd()})." + (override if needs_trained else "")
            )
        ]
    if not os.access(weights, os.R_OK):
        return [StartupError(f"MODEL.WEIGHTS={weights!r}: the file is not readable (permissions).")]
    return []


def resolve_device(cfg: CfgNode) -> Optional[str]:
    """Run a CUDA config on the CPU when CUDA is unavailable (``cfg`` mutable; one warning).

    Returns:
        The device that was replaced, or None.
    """
    device = cfg.MODEL.DEVICE
    if not device.startswith("cuda") or torch.cuda.is_available():
        return None
    cfg.MODEL.DEVICE = "cpu"
    logger.warning("MODEL.DEVICE=%s but CUDA is not available: running on the CPU.", device)
    return device


def validate(
    cfg: CfgNode,
    purpose: str = "train",
    world_size: Optional[int] = None,
    allow_random_weights: bool = False,
) -> None:
    """Every start-up check of ``purpose`` (``cfg`` mutable: device and norms are adapted).

    Raises:
        StartupError: the problem found (a subclass such as :class:`UnregisteredDatasetError`
            or :class:`MissingFileError` names its kind), or all problems, one per line.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    world_size = comm.get_world_size() if world_size is None else world_size
    resolve_device(cfg)
    adapt_norms_for_device(cfg, world_size, purpose=purpose)
    use_registry_for_weights_url(cfg)
    if purpose == "analyze":
        # Counting needs neither data nor weights (random weights, synthetic or given images).
        problems = []
    else:
        problems = check_dataset_files(cfg, train=purpose == "train") if purpose != "demo" else []
        problems += check_weights(cfg, purpose, allow_random_weights)
    if purpose == "eval":
        problems += check_test_aug(cfg)
    if purpose == "train":
        problems += check_training_setup(cfg, world_size)
    if not problems and purpose in ("train", "eval"):
        # The data must fit the model (classes, masks, labels, images, ground truth): the test
        # sets now, so a training run does not fail at its first evaluation; the training set
        # when its loader is built (Trainer.build_train_loader), also before any iteration.
        check_data(cfg, cfg.DATASETS.TEST, is_train=False)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        lines = "\n  - ".join(str(p) for p in problems)
        # One kind of problem keeps its type (e.g. FileNotFoundError for missing data).
        kind = type(problems[0]) if len({type(p) for p in problems}) == 1 else StartupError
        raise kind(f"Invalid set-up for {purpose}:\n  - {lines}")


class SafeMapper:
    """Wrap a dataset mapper so unreadable images fail clearly or are skipped and counted.

    A :class:`~resnest_dense.data.validation.DataCheckError` (an image or label that reads but
    holds the wrong thing) is never skipped.

    Args:
        mapper: e.g. detectron2's ``DatasetMapper`` (wrapped in ``CheckedMapper``).
        skip: return None for an unreadable image (detectron2's ``MapDataset`` then draws
            another one) instead of raising.
        tracker: counts distinct skipped files and raises once every image of the dataset is
            unreadable (``UnreadableImageTracker``).
    """

    def __init__(
        self,
        mapper: Callable[[Dict], Optional[Dict]],
        skip: bool = False,
        tracker: Optional[UnreadableImageTracker] = None,
    ):
        self.mapper = mapper
        self.skip = skip
        self.tracker = tracker
        self.num_skipped = 0

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        try:
            return self.mapper(dataset_dict)
        except DataCheckError:
            raise
        except (OSError, ValueError, SyntaxError) as e:
            # PIL raises OSError/SyntaxError/ValueError for truncated or corrupt files.
            file_name = dataset_dict.get("file_name", "?")
            if not self.skip:
                raise RuntimeError(
                    f"Cannot read training image {file_name}: {e}. Fix or remove the file, or "
                    "set DATALOADER.SKIP_CORRUPT_IMAGES True to skip unreadable images."
                ) from e
            self.num_skipped += 1
            logger.warning(
                "Skipping unreadable image %s (%s); %d skipped so far in this loader worker.",
                file_name,
                e,
                self.num_skipped,
            )
            if self.tracker is not None:
                self.tracker.record_failure(file_name, e)
            return None


NON_FINITE_PREFIX = "Non-finite"


def non_finite_message(iteration: int, what: str, kind: str = "values") -> str:
    """The one message of a diverged run: iteration, what was found, what is intact, fixes."""
    return (
        f"{NON_FINITE_PREFIX} {kind} at iteration {iteration}: {what}. Training stopped before "
        "the optimizer step; the last checkpoint written before this iteration is intact (no "
        "checkpoint with non-finite weights is ever written). Lower SOLVER.BASE_LR, add warm-up "
        "(SOLVER.WARMUP_ITERS) or gradient clipping (SOLVER.CLIP_GRADIENTS), or check the "
        "annotations of this batch."
    )


def check_finite_losses(loss_dict: Dict, iteration: int) -> None:
    """Raise ``FloatingPointError`` naming the iteration and every non-finite loss term.

    With several processes the flags are all-reduced first, so every worker raises together
    (one worker failing alone would leave the others blocked in the gradient all-reduce).
    """
    names = sorted(loss_dict)
    bad = torch.tensor([0.0 if torch.isfinite(loss_dict[k].detach()).all() else 1.0 for k in names])
    if comm.get_world_size() > 1:
        dist.all_reduce(bad)
    if bad.any():
        terms = [k for k, flag in zip(names, bad.tolist()) if flag]
        values = {k: float(loss_dict[k].detach()) for k in terms}
        raise FloatingPointError(
            non_finite_message(iteration, f"{', '.join(terms)} (this process: {values})", "loss")
        )
