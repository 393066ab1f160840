"""Data checks: the data must fit the model, and images must decode to what the files hold.

Each failure raises one :class:`DataCheckError` (a ``ValueError``) whose message names the
dataset and file (and the line of a JSON file), what was expected, what was found and how to fix
it (``"<subject>: expected ...; found .... <fix>"``). This module is the one import for callers;
the checks live in focused helpers (:mod:`.coco_json`, :mod:`.polygons`, :mod:`.image_checks`).

Start-up (before the first iteration or the first evaluated image):

* :func:`validate_coco_json` / :func:`check_dataset_source`: a COCO-format JSON parses (else
  file, line and column), has ``images`` / ``annotations`` / ``categories``, and its references
  (image ids, category ids, boxes, polygon nesting) are consistent, before detectron2's loader
  hands the file to pycocotools (whose errors name no file).
* :func:`check_num_classes`: ``NUM_CLASSES`` of the model's heads equals the dataset's number of
  classes (``thing_classes`` / ``stuff_classes``), category ids lie in ``[0, NUM_CLASSES)``, and
  the segmentation ``IGNORE_VALUE`` equals the dataset's ``ignore_label``.
* :func:`check_masks`: a Mask R-CNN config (``MODEL.MASK_ON``) gets instance masks.
* :func:`filter_dataset_dicts` (training dicts: dropped) and :func:`check_evaluation_polygons`
  (test ground truth: refused, named): one rule for polygons pycocotools cannot rasterise.
* :func:`check_images`: every image exists; a sample decodes, is 8-bit, and has the size the
  annotations give (with EXIF orientation applied, as ``read_image`` does).
* :func:`check_sem_seg_labels`: a sample of label files holds only ``[0, NUM_CLASSES)`` and the
  ignore value, and training and evaluation read the same values from them.
* :func:`check_dataset_dicts`, :func:`load_checked_dataset_dicts`, :func:`check_datasets`: all
  of the above in one call.

Per sample (cheap, every image): :class:`CheckedMapper` (bit depth from the image header, EXIF
explanation of ``SizeMismatchError``, label values of the mapped ``sem_seg``),
:class:`CheckedSemSegLoader` (the evaluator's label reader), :class:`UnreadableImageTracker`
("every image is unreadable" instead of detectron2's sampling error) and
:func:`check_image_file` (demos).
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import (
    filter_images_with_only_crowd_annotations,
    get_detection_dataset_dicts,
)

from ..config import class_count_keys, cfg_value
from .check_errors import DataCheckError, data_error, describe_datasets, shorten
from .coco_json import check_dataset_source, validate_coco_json
from .image_checks import (
    DEFAULT_SAMPLE_SIZE,
    CheckedMapper,
    CheckedSemSegLoader,
    UnreadableImageTracker,
    check_image_file,
    check_images,
    check_sem_seg_labels,
    check_sem_seg_tensor,
    explain_size_mismatch,
    read_sem_seg_label,
    sem_seg_label_range,
)
from .polygons import filter_dataset_dicts, refuse_unevaluable_ground_truth

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "CheckedMapper",
    "CheckedSemSegLoader",
    "DataCheckError",
    "UnreadableImageTracker",
    "check_dataset_dicts",
    "check_dataset_source",
    "check_datasets",
    "check_image_file",
    "check_images",
    "check_masks",
    "check_num_classes",
    "check_sem_seg_labels",
    "check_sem_seg_tensor",
    "explain_size_mismatch",
    "filter_dataset_dicts",
    "check_evaluation_polygons",
    "load_checked_dataset_dicts",
    "read_sem_seg_label",
    "sem_seg_label_range",
    "validate_coco_json",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- classes and masks


def _category_ids(dataset_dicts: Sequence[Dict]) -> Tuple[np.ndarray, np.ndarray]:
    """Category id of every annotation (-1 where missing) and the index of its record."""
    counts = [len(d.get("annotations", ())) for d in dataset_dicts]
    owners = np.repeat(np.arange(len(dataset_dicts)), counts)
    values = [a.get("category_id", -1) for d in dataset_dicts for a in d.get("annotations", ())]
    try:
        ids = np.fromiter(values, np.int64, len(values))
        # Floats like 1.5 would be truncated by fromiter: compare with the originals.
        if any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) for v in values):
            raise TypeError
    except (TypeError, ValueError):
        ids = np.array([v if isinstance(v, (int, np.integer)) else -1 for v in values], np.int64)
    return ids, owners


def check_num_classes(
    cfg, dataset_names: Sequence[str], dataset_dicts: Optional[Sequence[Dict]] = None
) -> None:
    """The model's ``NUM_CLASSES`` keys equal the datasets' class counts (too few and too many
    are both refused), and every annotation's ``category_id`` is in ``[0, NUM_CLASSES)``.

    Class lists come from the metadata (``thing_classes`` / ``stuff_classes``), which
    detectron2's COCO loader fills when the dataset is loaded: call this after loading.

    Args:
        cfg: the config.
        dataset_names: datasets of ``dataset_dicts``.
        dataset_dicts: their loaded dicts (for the category id check), or None.

    Raises:
        DataCheckError: naming key, dataset, both counts and the fix.
    """
    for key, attr in class_count_keys(cfg):
        expected = int(cfg_value(cfg, key))
        for name in dataset_names:
            classes = MetadataCatalog.get(name).get(attr)
            if classes is None:
                logger.warning(
                    "Dataset %r has no %s in its metadata: %s=%d cannot be checked against it.",
                    name,
                    attr,
                    key,
                    expected,
                )
                continue
            if len(classes) == expected:
                continue
            if expected > len(classes):
                effect = (
                    f"the model would have {expected - len(classes)} output classes that never "
                    "occur in the data (their scores still take part in every prediction)"
                )
            else:
                missing = (
                    f"class {expected}"
                    if len(classes) == expected + 1
                    else f"classes {expected}..{len(classes) - 1}"
                )
                effect = (
                    f"{missing} would have no output (detectron2 reads class id {expected} as "
                    "background and larger ids break the loss)"
                )
            raise data_error(
                f"{key} for {describe_datasets([name])}",
                f"{len(classes)} classes, as the dataset's {attr} has " f"({shorten(classes, 5)})",
                f"{key}={expected}: {effect}",
                f"Set {key} {len(classes)} (e.g. on the command line: {key} {len(classes)}).",
            )
        if attr == "thing_classes" and dataset_dicts:
            _check_category_range(dataset_dicts, key, expected, dataset_names)
    sem = sem_seg_label_range(cfg)
    if sem is not None:
        for name in dataset_names:
            ignore = MetadataCatalog.get(name).get("ignore_label")
            if ignore is not None and int(ignore) != sem[1]:
                raise data_error(
                    f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE for {describe_datasets([name])}",
                    f"the dataset's ignore_label {ignore} (what its evaluator ignores)",
                    f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE={sem[1]}: training would learn from "
                    f"pixels labelled {ignore} and ignore pixels labelled {sem[1]}",
                    f"Set MODEL.SEM_SEG_HEAD.IGNORE_VALUE {ignore}.",
                )


def _check_category_range(
    dataset_dicts: Sequence[Dict], key: str, num_classes: int, dataset_names: Sequence[str]
) -> None:
    ids, owners = _category_ids(dataset_dicts)
    bad = np.flatnonzero((ids < 0) | (ids >= num_classes))
    if not len(bad):
        return
    record = int(owners[bad[0]])
    first = dataset_dicts[record]
    position = int(bad[0] - np.searchsorted(owners, record))
    first_id = first["annotations"][position].get("category_id", "missing")
    raise data_error(
        f"Annotations of {describe_datasets(dataset_names)}",
        f"category ids in [0, {num_classes}) ({key}={num_classes}; detectron2 maps the JSON's "
        "category ids to 0..N-1 when the dataset is registered with its name)",
        f"{len(bad)} annotation(s) outside it, values {shorten(np.unique(ids[bad]).tolist())}; "
        f"first: {first.get('file_name')} with category_id {first_id!r}",
        "Register the dataset so the loader maps ids (register_coco_instances / "
        "DATASETS.COCO_FORMAT), or give the dicts contiguous ids 0..N-1 and set "
        f"{key} to the number of classes.",
    )


def check_masks(cfg, dataset_names: Sequence[str], dataset_dicts: Sequence[Dict]) -> None:
    """A config with ``MODEL.MASK_ON`` needs an instance mask on every non-crowd annotation.

    Raises:
        DataCheckError: no annotation has a mask (the mask head would have nothing to learn or
            evaluate), or only some have (detectron2 fails with a KeyError / AttributeError in the
            middle of training, at the first image where masks are missing).
    """
    if not cfg.MODEL.MASK_ON:
        return
    total = with_mask = 0
    first_without = None
    for record in dataset_dicts:
        for ann in record.get("annotations", ()):
            if ann.get("iscrowd", 0):
                continue
            total += 1
            if ann.get("segmentation"):
                with_mask += 1
            elif first_without is None:
                first_without = record.get("file_name")
    if total == 0 or with_mask == total:
        return
    fix = (
        "Use a dataset with instance masks ('segmentation' polygons or RLE), or a box-only "
        "config (configs/COCO-Detection/, or MODEL.MASK_ON False)."
    )
    if with_mask == 0:
        raise data_error(
            f"MODEL.MASK_ON=True (a Mask R-CNN config) on {describe_datasets(dataset_names)}",
            "instance masks ('segmentation') in the annotations",
            f"none of its {total} annotations has one",
            fix,
        )
    raise data_error(
        f"MODEL.MASK_ON=True on {describe_datasets(dataset_names)}",
        "a mask on every non-crowd annotation",
        f"{total - with_mask} of {total} annotations without 'segmentation' (or with no valid "
        f"polygon); first image: {first_without}",
        "Add the missing masks, remove those annotations, or " + fix[0].lower() + fix[1:],
    )


# --------------------------------------------------------------------------- evaluation GT


def check_evaluation_polygons(dataset_dicts: List[Dict], names: Sequence[str]) -> None:
    """Refuse test ground truth holding polygons pycocotools cannot rasterise
    (:func:`~.polygons.refuse_unevaluable_ground_truth`), for datasets whose evaluator builds its
    ground truth from the dicts. A dataset with a ``json_file`` is checked on that file, which is
    what detectron2's ``COCOEvaluator`` reads (:func:`check_dataset_source`).
    """
    if all(MetadataCatalog.get(n).get("json_file") for n in names):
        return
    _, report = filter_dataset_dicts(dataset_dicts, describe_datasets(list(names)))
    refuse_unevaluable_ground_truth(report)


# --------------------------------------------------------------------------- one call


def check_dataset_dicts(
    cfg,
    dataset_names: Sequence[str],
    dataset_dicts: List[Dict],
    *,
    is_train: bool,
    sample: int = DEFAULT_SAMPLE_SIZE,
) -> List[Dict]:
    """All start-up checks of loaded dicts; for training, also the polygon filter.

    Args:
        cfg: the config.
        dataset_names: the datasets the dicts come from.
        dataset_dicts: the loaded dicts.
        is_train: training dicts (polygons are filtered, unreadable images may be allowed by
            ``DATALOADER.SKIP_CORRUPT_IMAGES``) or test dicts (polygons pycocotools cannot
            evaluate are refused: :func:`check_evaluation_polygons`).
        sample: files decoded by the image and label samplers.

    Returns:
        The dicts, polygon-filtered when ``is_train``.
    """
    names = list(dataset_names)
    if is_train:
        dataset_dicts, _ = filter_dataset_dicts(dataset_dicts, describe_datasets(names))
    else:
        check_evaluation_polygons(dataset_dicts, names)
    check_num_classes(cfg, names, dataset_dicts)
    check_masks(cfg, names, dataset_dicts)
    skip = is_train and bool(cfg.DATALOADER.get("SKIP_CORRUPT_IMAGES", False))
    check_images(dataset_dicts, names, sample=sample, allow_unreadable=skip)
    sem = sem_seg_label_range(cfg)
    if sem is not None:
        check_sem_seg_labels(dataset_dicts, *sem, names, sample=sample)
    return dataset_dicts


def load_checked_dataset_dicts(
    cfg, dataset_names: Sequence[str], *, is_train: bool = True, **kwargs
) -> List[Dict]:
    """``get_detection_dataset_dicts`` between the JSON checks and the dict checks.

    A drop-in for ``get_detection_dataset_dicts(names, **kwargs)`` in a ``build_train_loader``
    / ``build_test_loader``.

    Args:
        cfg: the config.
        dataset_names: ``cfg.DATASETS.TRAIN`` or one test dataset.
        is_train: see :func:`check_dataset_dicts`.
        **kwargs: for ``get_detection_dataset_dicts`` (``filter_empty``, ``min_keypoints``,
            ``proposal_files``); images whose every instance the polygon filter removed are
            dropped when ``filter_empty`` (default True, as detectron2's).

    Returns:
        The checked (and, for training, polygon-filtered) dicts.
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    for name in names:
        check_dataset_source(name, for_evaluation=not is_train)
    dicts = get_detection_dataset_dicts(names, **kwargs)
    checked = check_dataset_dicts(cfg, names, dicts, is_train=is_train)
    if is_train and kwargs.get("filter_empty", True) and checked is not dicts:
        checked = filter_images_with_only_crowd_annotations(checked)
    return checked


def check_datasets(cfg, dataset_names: Sequence[str], *, is_train: bool) -> None:
    """Load each dataset and run all start-up checks on it (e.g. the test sets at start-up, so a
    training run does not fail at its first evaluation)."""
    for name in dataset_names:
        check_dataset_source(name, for_evaluation=not is_train)
        check_dataset_dicts(cfg, [name], DatasetCatalog.get(name), is_train=is_train)
