"""A training data stream that is a function of the iteration: exact resume, any world size.

detectron2's ``TrainingSampler`` restarts its shuffled stream after ``--resume``, its aspect-ratio
grouping buffers images across iterations, and augmentations draw from the process-global RNGs,
so a resumed run sees other batches than the uninterrupted one. Here:

* :class:`ResumableTrainingSampler` builds *global* batches (the whole ``IMS_PER_BATCH``) from
  a seeded permutation per epoch, grouped by aspect ratio inside the sampler, and gives rank
  ``r`` the slice ``[r * b, (r + 1) * b)`` of each. Batch ``k`` is therefore the same for 1, 2 or
  N processes, and resuming at iteration ``k`` replays only the index stream (no images read).
* :class:`PositionalDataset` + :class:`SeededMapper` seed the augmentation of each image from
  ``(seed, position in the stream)``, in a forked RNG state, so augmentations are independent of
  the number of processes, of ``DATALOADER.NUM_WORKERS`` and of where the run was resumed.

Randomness inside the model (anchor / proposal sampling) uses torch's global RNG; the trainer
reseeds it per iteration (:func:`iteration_seed`).
"""

import logging
import random
from collections import defaultdict
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from detectron2.utils import comm
from torch.utils.data import Dataset, Sampler

__all__ = [
    "PositionalDataset",
    "ResumableTrainingSampler",
    "SeededMapper",
    "aspect_ratio_groups",
    "iteration_seed",
]

logger = logging.getLogger(__name__)

_SEED_KEY = "_resnest_sample_seed"


def iteration_seed(*keys: int) -> int:
    """A 32-bit seed from integer keys, e.g. ``(SEED, iteration, rank)``."""
    return int(np.random.SeedSequence([int(k) % (2**63) for k in keys]).generate_state(1)[0])


def aspect_ratio_groups(dataset_dicts: Sequence[Dict]) -> List[int]:
    """detectron2's grouping (``AspectRatioGroupedDataset``): 0 if width > height, else 1."""
    return [0 if d.get("width", 1) > d.get("height", 1) else 1 for d in dataset_dicts]


class ResumableTrainingSampler(Sampler):
    """Infinite per-rank index stream of global batches that can start at any iteration.

    Args:
        groups: aspect-ratio group of each dataset item (all 0 to disable grouping).
        total_batch_size: images per iteration over all processes (``SOLVER.IMS_PER_BATCH``).
        seed: shared by all processes; the permutation of epoch ``e`` uses ``seed + e``.
        shuffle: shuffle each epoch.
        rank, world_size: default from ``detectron2.utils.comm``.

    Yields ints ``position * len(groups) + index`` (decoded by :class:`PositionalDataset`), where
    ``position`` counts the images of the global stream.
    """

    def __init__(
        self,
        groups: Sequence[int],
        total_batch_size: int,
        seed: int,
        shuffle: bool = True,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        self._groups = list(groups)
        self._size = len(self._groups)
        if self._size == 0:
            raise ValueError("ResumableTrainingSampler: the training set is empty")
        self._world_size = comm.get_world_size() if world_size is None else world_size
        self._rank = comm.get_rank() if rank is None else rank
        if total_batch_size % self._world_size:
            raise ValueError(
                f"Total batch size {total_batch_size} is not divisible by the number of "
                f"processes ({self._world_size})"
            )
        self._batch = total_batch_size
        self._per_rank = total_batch_size // self._world_size
        self._seed = int(seed)
        self._shuffle = shuffle
        self._start_iter = 0

    def set_start_iter(self, start_iter: int) -> None:
        """Make the next ``iter()`` begin with the batch of iteration ``start_iter``."""
        self._start_iter = int(start_iter)

    def _global_batches(self) -> Iterator[List[int]]:
        buckets = defaultdict(list)
        epoch = 0
        while True:
            if self._shuffle:
                g = torch.Generator()
                g.manual_seed(self._seed + epoch)
                order = torch.randperm(self._size, generator=g).tolist()
            else:
                order = range(self._size)
            for index in order:
                bucket = buckets[self._groups[index]]
                bucket.append(index)
                if len(bucket) == self._batch:
                    yield list(bucket)
                    bucket.clear()
            epoch += 1

    def __iter__(self) -> Iterator[int]:
        start = self._start_iter
        if start:
            logger.info(
                "Data stream resumes at iteration %d (replaying %d batch indices)", start, start
            )
        lo, hi = self._rank * self._per_rank, (self._rank + 1) * self._per_rank
        for k, batch in enumerate(self._global_batches()):
            if k < start:
                continue
            for j in range(lo, hi):
                yield (k * self._batch + j) * self._size + batch[j]


class PositionalDataset(Dataset):
    """Dataset dicts indexed by the codes of :class:`ResumableTrainingSampler`.

    Each returned dict is a shallow copy carrying the sample's augmentation seed, derived from
    ``(seed, position)``; plain indices (``< len``, e.g. detectron2's retry after a skipped
    image) get position 0 of that index.
    """

    def __init__(self, dataset_dicts: Sequence[Dict], seed: int):
        self._dicts = dataset_dicts
        self._seed = int(seed)

    def __len__(self) -> int:
        return len(self._dicts)

    def __getitem__(self, code: int) -> Dict:
        position, index = divmod(int(code), len(self._dicts))
        d = dict(self._dicts[index])
        d[_SEED_KEY] = iteration_seed(self._seed, position, index)
        return d


class SeededMapper:
    """Run ``mapper`` with python / numpy / torch RNGs seeded from the dict's sample seed.

    The global RNG states are restored afterwards, so the model's randomness does not depend on
    how many images were mapped in this process.
    """

    def __init__(self, mapper: Callable[[Dict], Optional[Dict]]):
        self.mapper = mapper

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        seed = dataset_dict.pop(_SEED_KEY, None)
        if seed is None:
            return self.mapper(dataset_dict)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                np.random.seed(seed)
                torch.manual_seed(seed)
                return self.mapper(dataset_dict)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
