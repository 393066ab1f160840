"""The errors a tool reports as one message before it starts its work (no traceback needed).

Each message names the key / file / dataset, what was expected, what was found and how to fix
it. Subclasses also derive from the built-in type older code catches (``KeyError``,
``FileNotFoundError``).
"""

__all__ = ["ConfigKeyError", "MissingFileError", "StartupError", "UnregisteredDatasetError"]


class StartupError(ValueError):
    """A configuration, data or weights problem found before a tool starts its work."""

    __str__ = Exception.__str__  # no quotes when combined with KeyError below


class ConfigKeyError(StartupError, KeyError):
    """A config file or ``KEY VALUE`` option names a key that does not exist."""


class UnregisteredDatasetError(StartupError, KeyError):
    """``DATASETS.TRAIN / TEST`` names a dataset that is not registered."""


class MissingFileError(StartupError, FileNotFoundError):
    """A file or folder the config or the command line names does not exist."""
