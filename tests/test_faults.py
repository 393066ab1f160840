"""Fault tolerance and start-up validation of tools/train_net.py (CPU, tiny ResNeSt-14 R-CNN).

* A run killed with SIGKILL in the middle of an iteration and restarted with ``--resume``
  continues at the iteration after its last complete checkpoint and reproduces the losses of an
  uninterrupted run exactly; no partial checkpoint is left or loaded.
* A non-finite loss stops training naming the iteration and the loss term; the checkpoints
  written before stay, none is written after.
* Bad set-ups fail before training with a message that says what is wrong.
"""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.utils.events import get_event_storage

from detection_helpers import (
    REPO,
    RESNEST_CONFIGS,
    TINY,
    TOY_PREFIX,
    register_test_toy_set,
    run_tool_killed_after_checkpoint,
    train_net_args,
)
from resnest_dense.engine.checks import StartupError
from resnest_dense.engine.history import read_loss_history

CONFIG = RESNEST_CONFIGS["faster"]
NO_EVAL = ["DATASETS.TEST", (), "SEED", 5]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "toy")
    register_test_toy_set(root)
    DatasetCatalog.get(f"{TOY_PREFIX}_train")  # generate the images once
    return root


def _checkpoints_are_complete(out):
    """Every .pth loads, last_checkpoint names one of them, no temporary file is left."""
    names = sorted(f for f in os.listdir(out) if f.endswith(".pth"))
    for name in names:
        assert "model" in torch.load(
            os.path.join(out, name), map_location="cpu", weights_only=False
        )
    assert (out / "last_checkpoint").read_text() in names
    assert not [f for f in os.listdir(out) if f.startswith(".tmp_")]
    return names


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_losses(train_net, toy_root, tmp_path):
    opts = [*TINY, *NO_EVAL, "SOLVER.MAX_ITER", 8, "SOLVER.CHECKPOINT_PERIOD", 2]
    # Uninterrupted reference run.
    ref_dir = tmp_path / "ref"
    train_net.main(train_net_args(CONFIG, *opts, "OUTPUT_DIR", ref_dir))
    reference = read_loss_history(ref_dir / "losses.jsonl")
    assert sorted(reference) == list(range(8))

    # The same run in a subprocess, killed with SIGKILL right after its checkpoint of
    # iteration 3 (so inside iteration 4).
    out = tmp_path / "killed"
    run_tool_killed_after_checkpoint(
        ["train_net.py", "--config-file", os.path.join(REPO, "configs", CONFIG), *opts]
        + ["OUTPUT_DIR", out],
        toy_root,
        out,
        timeout=120,
    )
    assert "model_final.pth" not in _checkpoints_are_complete(out)

    # A partial write (as a kill during a save leaves it) is removed; --resume continues at
    # iteration 4 with the uninterrupted run's losses.
    (out / ".tmp_model_0000005.pthx1y2").write_bytes(b"partial")
    train_net.main(train_net_args(CONFIG, *opts, "OUTPUT_DIR", out, resume=True))
    # The record is complete: iterations 0-3 were written before their checkpoint, 4-7 by the
    # resumed run; every loss equals the uninterrupted run's.
    resumed = read_loss_history(out / "losses.jsonl")
    assert sorted(resumed) == list(range(8))
    for iteration, losses in resumed.items():
        assert losses == reference[iteration], iteration  # bit-exact
    assert "model_final.pth" in _checkpoints_are_complete(out)
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 7


@pytest.mark.parametrize(
    "check", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["check", "no_check"]
)
def test_nonfinite_loss_is_named(train_net, toy_root, tmp_path, monkeypatch, check):
    losses = RPN.losses

    def nan_at_iteration_2(self, *args, **kwargs):
        out = losses(self, *args, **kwargs)
        if get_event_storage().iter == 2:
            out["loss_rpn_loc"] = out["loss_rpn_loc"] * float("nan")
        return out

    monkeypatch.setattr(RPN, "losses", nan_at_iteration_2)
    opts = [*TINY, *NO_EVAL, "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 1]
    opts += ["SOLVER.CHECK_FINITE_LOSS", check]
    with pytest.raises(FloatingPointError) as info:
        train_net.main(train_net_args(CONFIG, *opts, "OUTPUT_DIR", tmp_path))
    if check:
        assert str(info.value).startswith("Non-finite loss at iteration 2: loss_rpn_loc (")
    else:  # detectron2's own check
        assert "Loss became infinite or NaN at iteration=2" in str(info.value)
    # Checkpoints of iterations 0 and 1 only; nothing written after the failure.
    assert _checkpoints_are_complete(tmp_path) == ["model_0000000.pth", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def _coco_dataset(tmp_path, name, files, broken=()):
    """A 2-class COCO-format dataset of 64x64 images; ``broken`` files hold garbage bytes."""
    images = tmp_path / f"{name}_images"
    images.mkdir()
    for f in files:
        if f in broken:
            (images / f).write_bytes(b"this is not a png")
        else:
            cv2.imwrite(str(images / f), np.full((64, 64, 3), 40 + 10 * len(f), np.uint8))
    coco = {
        "images": [
            {"id": i + 1, "file_name": f, "height": 64, "width": 64} for i, f in enumerate(files)
        ],
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [8, 8, 20, 20],
             "area": 400, "iscrowd": 0}
            for i in range(len(files))
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "thing"}],
    }
    json_file = tmp_path / f"{name}.json"
    json_file.write_text(json.dumps(coco))
    return [
        "DATASETS.COCO_FORMAT", [[name, str(json_file), str(images)]],
        "DATASETS.TRAIN", (name,), "MODEL.ROI_HEADS.NUM_CLASSES", 1,
    ]  # fmt: skip


def test_missing_image_files(train_net, toy_root, tmp_path):
    opts = _coco_dataset(tmp_path, "missing_train", ["a.png", "b.png"])
    os.remove(tmp_path / "missing_train_images" / "b.png")
    with pytest.raises(StartupError, match=r"missing_train'.*found 1 missing: .*b\.png"):
        train_net.main(train_net_args(CONFIG, *TINY, *NO_EVAL, *opts, "OUTPUT_DIR", tmp_path))


@pytest.mark.parametrize(
    "skip", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["fail", "skip"]
)
def test_corrupt_image(train_net, toy_root, tmp_path, caplog, skip):
    files = ["broken.png", "good1.png", "good2.png", "good3.png"]
    opts = _coco_dataset(tmp_path, f"corrupt_{skip}_train", files, broken={"broken.png"})
    opts += ["DATALOADER.SKIP_CORRUPT_IMAGES", skip, "SOLVER.MAX_ITER", 2]
    opts += ["SOLVER.IMS_PER_BATCH", 4, "DATALOADER.ASPECT_RATIO_GROUPING", False]
    args = train_net_args(CONFIG, *TINY, *NO_EVAL, *opts, "OUTPUT_DIR", tmp_path / "out")
    if not skip:  # found at start-up by the decoded sample (the mapper would name it too)
        with pytest.raises(StartupError, match=r"sampled images unreadable, first .*broken\.png"):
            train_net.main(args)
        return
    with caplog.at_level("WARNING", logger="resnest_dense"):
        train_net.main(args)
    skipped = [r.getMessage() for r in caplog.records if "Skipping unreadable image" in r.message]
    # Every batch of 4 holds the broken image (4-image set), and detectron2's retry may draw it
    # again: at least one skip per iteration, each counted.
    assert len(skipped) >= 2 and all("broken.png" in m for m in skipped)
    for count, message in enumerate(skipped, 1):
        assert message.endswith(f"; {count} skipped so far in this loader worker.")
    assert (tmp_path / "out" / "model_final.pth").is_file()


@pytest.mark.parametrize(
    "opts,error,message",
    [
        (["SOLVER.IMS_PER_BATCH", 1, "MODEL.RESNETS.NORM", "BN"], StartupError,
         "SOLVER.IMS_PER_BATCH=1 with 1 process(es) is 1 image per worker, but "
         "MODEL.RESNETS.NORM=BN needs batch statistics"),
        (["DATASETS.TRAIN", ("dettest_trian",)], KeyError, "'dettest_trian' is not registered"),
        (["MODEL.WEIGHTS", "/nonexistent/model.pth"], StartupError,
         "MODEL.WEIGHTS='/nonexistent/model.pth': no such file."),
    ],
    ids=["bn_one_image", "unregistered_dataset", "missing_weights"],
)  # fmt: skip
def test_startup_errors(train_net, toy_root, tmp_path, opts, error, message):
    with pytest.raises(error) as info:
        train_net.main(train_net_args(CONFIG, *TINY, *NO_EVAL, *opts, "OUTPUT_DIR", tmp_path))
    assert message in str(info.value)
    assert not (tmp_path / "last_checkpoint").exists()


def test_eval_only_missing_weights(train_net, toy_root, tmp_path):
    args = train_net_args(
        CONFIG, *TINY, "MODEL.WEIGHTS", tmp_path / "nope.pth", "OUTPUT_DIR", tmp_path,
        eval_only=True,
    )  # fmt: skip
    with pytest.raises(StartupError, match="nope.pth'?: no such file"):
        train_net.main(args)
