"""Semantic-segmentation datasets named in the config (``DATASETS.SEM_SEG_FORMAT``): a folder of
images, a folder of label PNGs and a ``classes.json``, registered so the name can be used in
``DATASETS.TRAIN / TEST`` and is evaluated with mIoU (``SemSegEvaluator``).

Layout of one entry ``[name, image_root, label_root]``::

    image_root/  a.jpg  b.png  sub/c.jpg ...   (any of IMAGE_EXTENSIONS)
    label_root/  a.png  b.png  sub/c.png ...   (one class index per pixel, 0..N-1, or the ignore
                                                value; 8-bit single-channel PNG)
    label_root/classes.json                     {"classes": ["sky", "road", ...],
                                                 "ignore_value": 255,         (optional, 255)
                                                 "colors": [[r, g, b], ...]}  (optional)

An image and its label are paired by their path relative to the root without the extension
(``sub/c.jpg`` <-> ``sub/c.png``). The folders and ``classes.json`` are checked when the entry is
registered; the pairing when the dataset is loaded (at start-up for the names in
``DATASETS.TRAIN / TEST``). The label values, label sizes and the class count against
``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` are checked by :mod:`resnest_dense.data.validation`.
"""

import json
import logging
import os
from typing import Dict, List, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import MissingFileError, StartupError
from .image_checks import IMAGE_EXTENSIONS
from .registration import already_registered

__all__ = [
    "CLASSES_FILE",
    "IMAGE_EXTENSIONS",
    "load_sem_seg_folder",
    "read_classes_file",
    "register_sem_seg_format_datasets",
]

logger = logging.getLogger(__name__)

CLASSES_FILE = "classes.json"
DEFAULT_IGNORE_VALUE = 255
LABEL_EXTENSION = ".png"
_KEY = "DATASETS.SEM_SEG_FORMAT"
# How many unpaired files an error message names.
_NAMED = 3


def _fix_classes() -> str:
    return (
        f'Write {{"classes": ["name0", "name1", ...], "ignore_value": {DEFAULT_IGNORE_VALUE}}} '
        "(class i = pixel value i in the label PNGs; see docs/segmentation.md, 'Your own data')."
    )


def read_classes_file(path: str, name: str = "?") -> Dict:
    """Read and check a ``classes.json``.

    Args:
        path: the file.
        name: the dataset it belongs to (for messages).

    Returns:
        ``{"classes": [...], "ignore_value": int, "colors": [(r, g, b), ...] or None}``.

    Raises:
        MissingFileError: the file does not exist.
        StartupError: it is not JSON, or a field has the wrong type or value.
    """
    if not os.path.isfile(path):
        raise MissingFileError(
            f"{_KEY}: dataset {name!r} has no class file {path!r}. {_fix_classes()}"
        )
    where = f"{_KEY}: class file {path!r} of dataset {name!r}"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise StartupError(
            f"{where} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}). "
            + _fix_classes()
        ) from e
    if not isinstance(data, dict):
        raise StartupError(f"{where}: expected a JSON object; found {type(data).__name__}.")
    unknown = sorted(set(data) - {"classes", "ignore_value", "colors"})
    if unknown:
        raise StartupError(
            f"{where}: unknown key(s) {unknown}; expected 'classes', 'ignore_value', 'colors'."
        )
    classes = data.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c for c in classes)
    ):
        raise StartupError(
            f"{where}: expected 'classes' to be a non-empty list of names; found {classes!r}. "
            + _fix_classes()
        )
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise StartupError(f"{where}: class names must be unique; repeated: {duplicates}.")
    ignore = data.get("ignore_value", DEFAULT_IGNORE_VALUE)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 255:
        # Label maps are 8-bit PNGs (resnest_dense.data.image_checks.read_sem_seg_label).
        raise StartupError(
            f"{where}: expected 'ignore_value' to be an integer in 0..255, as the 8-bit label "
            f"PNGs hold (e.g. 255); found {ignore!r}."
        )
    if ignore < len(classes):
        raise StartupError(
            f"{where}: 'ignore_value' {ignore} is the index of class {classes[ignore]!r}; pixels "
            f"of that class would be ignored. Use a value >= {len(classes)} (e.g. 255)."
        )
    colors = data.get("colors")
    if colors is not None:
        ok = isinstance(colors, list) and len(colors) == len(classes)
        ok = ok and all(
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
            for c in colors
        )
        if not ok:
            raise StartupError(
                f"{where}: expected 'colors' to be {len(classes)} [r, g, b] lists of integers "
                f"0..255, one per class; found {colors!r}. Remove it to use the default palette."
            )
        colors = [tuple(c) for c in colors]
    return {"classes": list(classes), "ignore_value": ignore, "colors": colors}


def _files_by_stem(root: str, extensions: Sequence[str], name: str, what: str) -> Dict[str, str]:
    """``{relative path without extension: path}`` of the files under ``root`` (recursively)."""
    found: Dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for file_name in sorted(files):
            stem, ext = os.path.splitext(file_name)
            if ext.lower() not in extensions:
                continue
            path = os.path.join(folder, file_name)
            key = os.path.normpath(os.path.join(os.path.relpath(folder, root), stem))
            if key in found:
                raise StartupError(
                    f"{_KEY}: dataset {name!r} has two {what} files for {key!r}: "
                    f"{found[key]!r} and {path!r}; an image and its label are paired by name "
                    "without the extension. Remove or rename one of them."
                )
            found[key] = path
    return found


def _describe(keys: Sequence[str], files: Dict[str, str]) -> str:
    named = ", ".join(repr(files[k]) for k in keys[:_NAMED])
    return named + (f" and {len(keys) - _NAMED} more" if len(keys) > _NAMED else "")


def load_sem_seg_folder(name: str, image_root: str, label_root: str) -> List[Dict]:
    """The dataset dicts (``file_name``, ``sem_seg_file_name``) of one entry, every image paired
    with the label PNG of the same relative path without extension.

    Raises:
        StartupError: no image, images without a label, or labels without an image (the first
            ones named), or two images / labels with the same name.
    """
    images = _files_by_stem(image_root, IMAGE_EXTENSIONS, name, "image")
    labels = _files_by_stem(label_root, (LABEL_EXTENSION,), name, "label")
    if not images:
        raise StartupError(
            f"{_KEY}: dataset {name!r} has no image in {image_root!r} (expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)})."
        )
    for have, kind, other, other_root, fix in (
        (images, "images have no label PNG", labels, label_root, "Add the labels or remove "),
        (labels, "label PNG(s) have no image", images, image_root, "Add the images or remove "),
    ):
        unpaired = sorted(set(have) - set(other))
        if unpaired:
            raise StartupError(
                f"{_KEY}: dataset {name!r}: {len(unpaired)} of {len(have)} {kind} of the same "
                f"name in {other_root!r}: {_describe(unpaired, have)}. {fix}those files."
            )
    return [{"file_name": images[key], "sem_seg_file_name": labels[key]} for key in sorted(images)]


def _parse_entry(entry) -> Tuple[str, str, str]:
    if isinstance(entry, str) or len(entry) != 3:
        raise StartupError(
            f"{_KEY} entries are [name, image_root, label_root]; got {entry!r}. Example: "
            f"{_KEY} \"[['my_train','data/images/train','data/labels/train']]\""
        )
    return tuple(str(v) for v in entry)


def register_sem_seg_format_datasets(entries, missing_ok: bool = False) -> List[str]:
    """Register ``[name, image_root, label_root]`` entries (``DATASETS.SEM_SEG_FORMAT``).

    Metadata: ``evaluator_type="sem_seg"``, ``stuff_classes``, ``ignore_label``, ``image_root``,
    ``sem_seg_root`` and, when ``classes.json`` gives them, ``stuff_colors``. A name registered
    before with the same folders is left alone, so calling this twice is harmless.

    Args:
        entries: iterable of 3-element sequences.
        missing_ok: skip (with a warning) entries whose folders or ``classes.json`` are missing
            instead of raising: for tools that need no data (demos, export).

    Returns:
        The registered names.

    Raises:
        MissingFileError: a folder or ``classes.json`` does not exist.
        StartupError: an entry is not a triple, ``classes.json`` is malformed, or the name is
            taken by another dataset.
    """
    names = []
    for entry in entries:
        name, image_root, label_root = _parse_entry(entry)
        missing = [
            f"{what} {path!r}"
            for what, path in (("image folder", image_root), ("label folder", label_root))
            if not os.path.isdir(path)
        ]
        try:
            if missing:
                raise MissingFileError(
                    f"{_KEY}: {' and '.join(missing)} of dataset {name!r} do(es) not exist."
                )
            info = read_classes_file(os.path.join(label_root, CLASSES_FILE), name)
        except MissingFileError as e:
            if missing_ok:
                logger.warning("%s Not registered.", e)
                continue
            raise
        if already_registered(_KEY, name, {"image_root": image_root, "sem_seg_root": label_root}):
            names.append(name)
            continue
        DatasetCatalog.register(
            name, lambda n=name, i=image_root, g=label_root: load_sem_seg_folder(n, i, g)
        )
        extra = {"stuff_colors": info["colors"]} if info["colors"] else {}
        MetadataCatalog.get(name).set(
            evaluator_type="sem_seg",
            stuff_classes=info["classes"],
            ignore_label=info["ignore_value"],
            image_root=image_root,
            sem_seg_root=label_root,
            **extra,
        )
        logger.info(
            "Registered semantic-segmentation dataset %s: %s, %s (%d classes, ignore %d)",
            name,
            image_root,
            label_root,
            len(info["classes"]),
            info["ignore_value"],
        )
        names.append(name)
    return names
