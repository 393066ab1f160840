"""Class names that travel with a trained model.

detectron2 keeps class names in the dataset registration (``MetadataCatalog``), not in the model:
a model fine-tuned on a custom ``DATASETS.COCO_FORMAT`` set and shown by a demo whose config
names another test set is labelled with that set's names. So the trainer stores, in every
checkpoint it writes (:func:`checkpoint_metadata`, key :data:`CHECKPOINT_KEY`), the name of its
first training set and its classes: ``thing_classes`` (and ``thing_colors`` if set) for
detectors, ``stuff_classes`` and ``stuff_colors`` for semantic segmentation, both for Panoptic
FPN.

The demos label predictions with :func:`class_metadata`, which takes the names from, in order:

1. the checkpoint (a model trained by this project's trainer);
2. the metadata of ``DATASETS.TEST[0]`` (e.g. released COCO / ADE20K weights), if it names as
   many classes as the model predicts;
3. ``class 0``, ``class 1``, ...

A disagreement between the number of names and the model's ``NUM_CLASSES`` is logged as a
warning naming both.
"""

import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata

from ..config import cfg_value, class_count_keys

__all__ = ["CHECKPOINT_KEY", "checkpoint_metadata", "class_metadata", "num_classes_key"]

logger = logging.getLogger(__name__)

# Key of the checkpoint dict holding {"dataset": name, "<thing|stuff>_classes": [...], ...}.
CHECKPOINT_KEY = "dataset_metadata"


def _parts(cfg: CfgNode) -> List[Tuple[str, str, str]]:
    """``(names key, colours key, NUM_CLASSES key)`` of each class output of ``cfg``'s model:
    things for detectors, stuff for semantic segmentors, both for Panoptic FPN."""
    parts = [
        (attr, attr.replace("_classes", "_colors"), key) for key, attr in class_count_keys(cfg)
    ]
    return parts or [("thing_classes", "thing_colors", "MODEL.ROI_HEADS.NUM_CLASSES")]


def num_classes_key(cfg: CfgNode) -> str:
    """The config key holding the number of classes of the model's main output."""
    return _parts(cfg)[0][2]


def checkpoint_metadata(cfg: CfgNode) -> Dict[str, Dict[str, Any]]:
    """``{CHECKPOINT_KEY: ...}``: what every checkpoint of a training run stores about its data.

    Read from ``MetadataCatalog.get(cfg.DATASETS.TRAIN[0])`` (call it after the training data
    were loaded: COCO-format sets get their class names when their json is read).
    """
    if not cfg.DATASETS.TRAIN:
        return {}
    dataset = cfg.DATASETS.TRAIN[0]
    meta = MetadataCatalog.get(dataset)
    stored: Dict[str, Any] = {"dataset": dataset}
    for names_key, colours_key, _ in _parts(cfg):
        if meta.get(names_key) is not None:
            stored[names_key] = [str(n) for n in meta.get(names_key)]
        else:
            logger.warning(
                "Dataset %s has no %s: its checkpoints will not carry class names.",
                dataset,
                names_key,
            )
        if meta.get(colours_key) is not None:
            stored[colours_key] = [[int(v) for v in c] for c in meta.get(colours_key)]
    return {CHECKPOINT_KEY: stored}


def _stored_names(
    stored: Optional[Mapping], names_key: str, colours_key: str, weights: str
) -> Tuple[Optional[List[str]], Optional[List]]:
    if not stored:
        return None, None
    names = stored.get(names_key) if isinstance(stored, Mapping) else None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        logger.warning(
            "%s: %r in the checkpoint holds no list of %s; ignoring it.",
            weights,
            CHECKPOINT_KEY,
            names_key,
        )
        return None, None
    colours = stored.get(colours_key)
    return list(names), list(colours) if isinstance(colours, (list, tuple)) else None


def class_metadata(cfg: CfgNode, stored: Optional[Mapping] = None, weights: str = "") -> Metadata:
    """The metadata a demo labels predictions with (module docstring for the order).

    Args:
        cfg: the model's config.
        stored: ``checkpoint[CHECKPOINT_KEY]`` of the loaded weights (None: not there).
        weights: the weights' path, for messages.

    Returns:
        A ``Metadata`` with ``thing_classes`` (detection), ``stuff_classes`` (semantic
        segmentation) or both (Panoptic FPN), each at least as long as its ``NUM_CLASSES``, the
        matching colours when known, and ``class_names_source`` saying where the names came from.
    """
    test_name = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
    test_meta = MetadataCatalog.get(test_name) if test_name else None
    meta = Metadata(name=test_name or "demo")
    sources = []
    for names_key, colours_key, count_key in _parts(cfg):
        count = int(cfg_value(cfg, count_key))
        names, colours, source = _resolve_names(
            (names_key, colours_key, count_key), count, stored, weights, test_name, test_meta
        )
        meta.set(**{names_key: names})
        if colours is not None and len(colours) >= count:
            meta.set(**{colours_key: [tuple(int(v) for v in c) for c in colours]})
        sources.append(source)
        logger.info(
            "Class names from %s: %s",
            source,
            ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""),
        )
    meta.set(class_names_source="; ".join(dict.fromkeys(sources)))
    return meta


def _resolve_names(
    keys: Tuple[str, str, str],
    count: int,
    stored: Optional[Mapping],
    weights: str,
    test_name: Optional[str],
    test_meta: Optional[Metadata],
) -> Tuple[List[str], Optional[List], str]:
    """One class output's names (padded to ``count``), colours, and where they came from."""
    names_key, colours_key, count_key = keys
    test_names = test_meta.get(names_key) if test_meta is not None else None
    names, colours = _stored_names(stored, names_key, colours_key, weights)
    if names is not None:
        dataset = stored.get("dataset", "?")
        source = f"checkpoint {weights} (trained on {dataset})"
        if len(names) != count:
            logger.warning(
                "%s names %d classes (%s) but the model predicts %s=%d; %s",
                weights,
                len(names),
                dataset,
                count_key,
                count,
                (
                    f"classes {len(names)}..{count - 1} are labelled 'class N'."
                    if len(names) < count
                    else "the extra names are never used."
                ),
            )
        if test_names is not None and list(test_names) != names:
            logger.info(
                "DATASETS.TEST[0]=%s has other class names; using the checkpoint's.", test_name
            )
    elif test_names is not None and len(test_names) == count:
        names = list(test_names)
        colours = test_meta.get(colours_key)
        source = f"metadata of DATASETS.TEST[0]={test_name}"
    else:
        if test_names is not None:
            logger.warning(
                "DATASETS.TEST[0]=%s names %d classes but the model predicts %s=%d: its names "
                "would mislabel the predictions; using 'class N'.",
                test_name,
                len(test_names),
                count_key,
                count,
            )
        names, colours = [], None
        source = "none found (labels are 'class N')"
    return names + [f"class {i}" for i in range(len(names), count)], colours, source
