"""Start-up validation and fault handling for training (the checks users trip over most).

* :func:`validate_training_config`: images per worker vs the backbone norm, dataset names,
  ``MODEL.WEIGHTS`` — each a clear error that names the key and what to change.
* :func:`check_image_files`: every training image exists (one ``stat`` per image).
* :class:`SafeMapper`: an unreadable/corrupt image either fails naming the file or, with
  ``DATALOADER.SKIP_CORRUPT_IMAGES``, is skipped with a counted warning (detectron2's
  ``MapDataset`` then draws another image).
* :func:`adapt_norms_for_device`: ``SyncBN`` is ``nn.SyncBatchNorm``, which has no CPU/gloo
  implementation; CPU runs with several processes use detectron2's ``naiveSyncBN_N``, the same
  math computed with all-reduce, which also accepts empty batches (zero mask-head inputs).
"""

import logging
import os
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .amp import amp_dtype

__all__ = [
    "StartupError",
    "adapt_norms_for_device",
    "check_finite_losses",
    "check_image_files",
    "validate_training_config",
    "SafeMapper",
]

logger = logging.getLogger(__name__)

_BATCH_STAT_NORMS = {"BN", "SyncBN", "naiveSyncBN", "naiveSyncBN_N"}
_URL_SCHEMES = ("http://", "https://", "detectron2://", "resnest://", "catalog://", "manifold://")


class StartupError(ValueError):
    """A configuration or dataset problem found before training starts."""


def _norm_keys(cfg: CfgNode, prefix: str = "") -> Iterable[str]:
    for key, value in cfg.items():
        if isinstance(value, CfgNode):
            yield from _norm_keys(value, f"{prefix}{key}.")
        elif key == "NORM":
            yield f"{prefix}{key}"


def _get(cfg: CfgNode, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, dotted: str, value) -> None:
    *path, leaf = dotted.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[leaf] = value


def adapt_norms_for_device(cfg: CfgNode, world_size: Optional[int] = None) -> List[str]:
    """Replace ``SyncBN`` by ``naiveSyncBN_N`` for multi-process CPU runs (``cfg`` mutable).

    Returns:
        The keys that were changed (logged).
    """
    world_size = comm.get_world_size() if world_size is None else world_size
    if cfg.MODEL.DEVICE != "cpu" or world_size <= 1:
        return []
    changed = [k for k in _norm_keys(cfg) if _get(cfg, k) == "SyncBN"]
    for key in changed:
        _set(cfg, key, "naiveSyncBN_N")
    if changed:
        logger.warning(
            "CPU with %d processes: nn.SyncBatchNorm has no gloo implementation; using "
            "naiveSyncBN_N (same statistics, all-reduced) for %s.",
            world_size,
            ", ".join(changed),
        )
    return changed


def validate_training_config(cfg: CfgNode, world_size: Optional[int] = None) -> None:
    """Fail early, with a message that says what to change, on the common set-up mistakes."""
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
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                close = sorted(n for n in registered if n.split("_")[0] == name.split("_")[0])
                hint = f" Similar registered names: {', '.join(close[:8])}." if close else ""
                problems.append(f"DATASETS.{key} names {name!r}, which is not registered.{hint}")
    weights = cfg.MODEL.WEIGHTS
    if weights and not weights.startswith(_URL_SCHEMES) and not os.path.isfile(weights):
        problems.append(f"MODEL.WEIGHTS={weights!r}: no such file.")
    if cfg.SOLVER.AMP.ENABLED:
        try:
            amp_dtype(cfg)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise StartupError("Invalid training set-up:\n  - " + "\n  - ".join(problems))


def check_image_files(dataset_dicts: List[Dict], dataset_names: Iterable[str] = ()) -> None:
    """Raise naming the first missing image files of the training set (all are checked)."""
    missing = [d["file_name"] for d in dataset_dicts if not PathManager.exists(d["file_name"])]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        names = ", ".join(dataset_names) or "the training set"
        raise StartupError(
            f"{len(missing)} of {len(dataset_dicts)} images of {names} are missing: {shown}. "
            "Check $DETECTRON2_DATASETS (datasets/README.md)."
        )


class SafeMapper:
    """Wrap a dataset mapper so unreadable images fail clearly or are skipped and counted.

    Args:
        mapper: e.g. detectron2's ``DatasetMapper``.
        skip: return None for an unreadable image (detectron2's ``MapDataset`` then draws
            another one) instead of raising.
    """

    def __init__(self, mapper: Callable[[Dict], Optional[Dict]], skip: bool = False):
        self.mapper = mapper
        self.skip = skip
        self.num_skipped = 0

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        try:
            return self.mapper(dataset_dict)
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
            return None


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
            f"Non-finite loss at iteration {iteration}: {', '.join(terms)} "
            f"(this process: {values}). Training stopped before the optimizer step; the last "
            "checkpoint written before this iteration is intact. Lower SOLVER.BASE_LR, add "
            "warm-up (SOLVER.WARMUP_ITERS) or gradient clipping (SOLVER.CLIP_GRADIENTS), or "
            "check the annotations of this batch."
        )
