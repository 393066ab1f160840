"""Per-iteration loss records of a run (``<OUTPUT_DIR>/losses.jsonl``).

``metrics.json`` holds the latest value of each period (losses as a 20-iteration median), so it
cannot show whether two runs trained identically; this file holds every iteration's loss terms,
unsmoothed, and ``--resume`` keeps it consistent with the checkpoint it resumed from.
"""

import json
import os
from collections import defaultdict
from typing import Dict

from detectron2.utils.events import EventWriter, get_event_storage

from ..utils.io import atomic_write

__all__ = ["LossHistoryWriter", "read_loss_history", "truncate_loss_history"]


class LossHistoryWriter(EventWriter):
    """Every iteration's loss terms, unsmoothed, as JSON lines."""

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


def truncate_loss_history(path: str, start_iter: int) -> None:
    """Drop the lines of iterations ``>= start_iter`` (they will be trained again)."""
    if not os.path.isfile(path):
        return
    kept = {i: v for i, v in read_loss_history(path).items() if i < start_iter}
    lines = "".join(json.dumps({"iteration": i, **v}) + "\n" for i, v in kept.items())
    atomic_write(path, lambda f: f.write(lines), mode="w")
