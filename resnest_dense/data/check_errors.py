"""The error of the data checks and the helpers that keep their messages uniform."""

from typing import Iterable, List, Sequence

import numpy as np

from ..errors import StartupError

__all__ = ["DataCheckError", "data_error", "describe_datasets", "sample_indices", "shorten"]


class DataCheckError(StartupError):
    """A dataset does not fit the model, or a file does not hold what it should (a
    :class:`~resnest_dense.errors.StartupError`, so every tool reports it as one message)."""


def data_error(subject: str, expected: str, found: str, fix: str) -> DataCheckError:
    """``"<subject>: expected <expected>; found <found>. <fix>"``, the form of every message."""
    return DataCheckError(f"{subject}: expected {expected}; found {found}. {fix}")


def describe_datasets(dataset_names: Iterable[str]) -> str:
    """``"dataset 'a'"``, ``"datasets 'a', 'b'"`` or ``"the dataset"``."""
    names = [repr(n) for n in dataset_names]
    if not names:
        return "the dataset"
    return ("dataset " if len(names) == 1 else "datasets ") + ", ".join(names)


def sample_indices(n: int, k: int) -> List[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included: deterministic and
    covering every part of the dataset (files are often ordered by source or date)."""
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def shorten(values: Sequence, limit: int = 10) -> str:
    """The first ``limit`` values, comma-separated, with the total when there are more."""
    shown = ", ".join(str(v) for v in list(values)[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")
