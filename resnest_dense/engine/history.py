"""Per-iteration loss records of a run (``<OUTPUT_DIR>/losses.jsonl``).

``metrics.json`` holds the latest value of each period (losses as a 20-iteration median), so it
cannot show whether two runs trained identically; this file holds every iteration's loss terms,
unsmoothed, and ``--resume`` keeps it consistent with the checkpoint it resumed from.
"""

import json
import os
from typing import Dict

from detectron2.engine import HookBase

from ..utils.io import atomic_write

__all__ = ["LossHistoryHook", "read_loss_history", "truncate_loss_history"]


class LossHistoryHook(HookBase):
    """Appends each iteration's loss terms, unsmoothed, right after the step (main process).

    The trainer registers it first, so the losses of iteration ``k`` are in the file before
    any other hook of that iteration runs (PreciseBN, the checkpoint of ``k``, evaluation): a
    run killed at any moment and resumed keeps a complete record.
    """

    def __init__(self, path: str):
        self._path = path

    def after_step(self) -> None:
        storage = self.trainer.storage
        row = {
            key: value
            for key, (value, iteration) in storage.latest().items()
            if "loss" in key and iteration == storage.iter
        }
        if row:
            with open(self._path, "a") as f:
                f.write(json.dumps({"iteration": storage.iter, **row}) + "\n")


def read_loss_history(path: str) -> Dict[int, Dict[str, float]]:
    """``{iteration: {loss name: value}}`` from a ``losses.jsonl`` file."""
    history = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            history[row.pop("iteration")] = row
    return history


def truncate_loss_history(path: str, start_iter: int) -> None:
    """Drop the lines of iterations ``>= start_iter`` (they will be trained again)."""
    if not os.path.isfile(path):
        return
    kept = {i: v for i, v in read_loss_history(path).items() if i < start_iter}
    lines = "".join(json.dumps({"iteration": i, **v}) + "\n" for i, v in kept.items())
    atomic_write(path, lambda f: f.write(lines), mode="w")
