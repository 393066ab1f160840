"""Class names that travel with the model: what checkpoints store (Checkpointer.extra_data,
checkpoint_metadata) and which names the demos label with (class_metadata)."""

import logging
import os

import pytest
import torch
from torch import nn

from demo_helpers import package_logs
from detection_helpers import CONFIGS, RESNEST_CONFIGS, TINY, TOY_PREFIX
from resnest_dense.checkpoint import Checkpointer
from resnest_dense.config import get_resnest_cfg
from resnest_dense.data.toy_sem_seg import TOY_SEM_SEG_CLASSES
from resnest_dense.engine.class_names import CHECKPOINT_KEY, checkpoint_metadata, class_metadata
from segmentation_helpers import TOY_YAML

pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py: dettest_{train,val}

TOY_NAMES = ["circle", "square", "triangle"]


def _detection_cfg(*opts):
    return get_resnest_cfg(os.path.join(CONFIGS, RESNEST_CONFIGS["faster"]), TINY + list(opts))


def test_every_checkpoint_carries_the_extra_data(tmp_path):
    model = nn.Linear(2, 2)
    extra = {CHECKPOINT_KEY: {"dataset": "widgets", "thing_classes": ["widget"]}}
    checkpointer = Checkpointer(model, str(tmp_path), extra_data=extra)
    checkpointer.save("model_0000001", iteration=1)
    checkpointer.save("model_final", iteration=2)
    for name, iteration in (("model_0000001", 1), ("model_final", 2)):
        data = torch.load(tmp_path / f"{name}.pth", weights_only=False)
        assert data[CHECKPOINT_KEY] == extra[CHECKPOINT_KEY] and data["iteration"] == iteration
    _, loaded = Checkpointer(nn.Linear(2, 2)).load_checked(str(tmp_path / "model_final.pth"))
    assert loaded[CHECKPOINT_KEY] == extra[CHECKPOINT_KEY]


@pytest.mark.parametrize("family", ["detection", "semantic"])
def test_checkpoint_metadata_names_the_training_set(family):
    if family == "detection":
        cfg, stored = _detection_cfg(), {"thing_classes": TOY_NAMES}
    else:
        cfg, stored = get_resnest_cfg(TOY_YAML), {"stuff_classes": list(TOY_SEM_SEG_CLASSES)}
    stored["dataset"] = cfg.DATASETS.TRAIN[0]
    assert checkpoint_metadata(cfg) == {CHECKPOINT_KEY: stored}
    cfg.DATASETS.TRAIN = ()
    assert checkpoint_metadata(cfg) == {}


def _stored(names, dataset="widgets_train"):
    return {"dataset": dataset, "thing_classes": names}


@pytest.mark.parametrize(
    "stored,opts,names,source,warning",
    [
        # Names stored by the trainer win over DATASETS.TEST[0]'s.
        (
            _stored(["widget", "gadget", "gizmo"]),
            [],
            ["widget", "gadget", "gizmo"],
            "checkpoint",
            None,
        ),
        # Fewer stored names than the model predicts: the rest are 'class N', with a warning.
        (
            _stored(["widget"]),
            [],
            ["widget", "class 1", "class 2"],
            "checkpoint",
            "names 1 classes",
        ),
        # More stored names than the model predicts: warned about.
        (
            _stored(["a", "b", "c", "d"]),
            [],
            ["a", "b", "c", "d"],
            "checkpoint",
            "extra names are never used",
        ),
        # Nothing stored (e.g. released weights): DATASETS.TEST[0].
        (None, [], TOY_NAMES, f"DATASETS.TEST[0]={TOY_PREFIX}_val", None),
        # A stored entry without a list of names is ignored (warned about).
        (
            {"dataset": "x", "thing_classes": "widget"},
            [],
            TOY_NAMES,
            "DATASETS.TEST[0]",
            "ignoring",
        ),
        # DATASETS.TEST[0] names another number of classes: they would mislabel; 'class N'.
        (
            None,
            ["MODEL.ROI_HEADS.NUM_CLASSES", 2],
            ["class 0", "class 1"],
            "none found",
            "would mislabel",
        ),
        # No test set and nothing stored.
        (None, ["DATASETS.TEST", ()], ["class 0", "class 1", "class 2"], "none found", None),
    ],
)
def test_class_names_of_the_demos(stored, opts, names, source, warning):
    cfg = _detection_cfg(*opts)
    with package_logs() as logs:
        meta = class_metadata(cfg, stored, "model_final.pth")
    assert meta.thing_classes == names
    assert source in meta.class_names_source
    warnings = logs.messages(logging.WARNING)
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0]
        if "classes" in warning:
            assert "MODEL.ROI_HEADS.NUM_CLASSES=3" in warnings[0]


def test_semantic_names_and_colours_from_the_checkpoint():
    cfg = get_resnest_cfg(TOY_YAML, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2])
    stored = {
        "dataset": "widgets_sem_train",
        "stuff_classes": ["background", "widget"],
        "stuff_colors": [[0, 0, 0], [255, 0, 0]],
    }
    meta = class_metadata(cfg, stored, "model_final.pth")
    assert meta.stuff_classes == ["background", "widget"]
    assert meta.stuff_colors == [(0, 0, 0), (255, 0, 0)]
    assert "widgets_sem_train" in meta.class_names_source
