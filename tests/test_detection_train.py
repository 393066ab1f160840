"""Faster / Cascade / Mask / Cascade Mask R-CNN with ResNeSt end to end on the toy set (CPU).

train_net runs in-process: a few iterations (checkpoints, metrics.json, TensorBoard events,
results.json), --eval-only (COCO AP dicts), --resume; plus overfitting one fixed batch, batches
with empty images, evaluation with zero predictions and a corrupt image.
"""

import copy
import json
import math
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.utils.events import EventStorage

from detection_helpers import (
    CONFIGS,
    RESNEST_CONFIGS,
    TINY,
    TOY_PREFIX,
    train_net_args,
)
from resnest_dense.data.validation import DataCheckError
from resnest_dense.engine import Trainer, load_config, setup

pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py


def _tasks(family):
    return {"bbox", "segm"} if "mask" in family else {"bbox"}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(RESNEST_CONFIGS))
def test_train_eval_resume(family, train_net, tmp_path):
    config = RESNEST_CONFIGS[family]
    out = tmp_path / "run"
    # The evaluation after training (and its results.json) is checked on one family only.
    no_eval = [] if family == "faster" else ["DATASETS.TEST", ()]
    results = train_net.main(train_net_args(config, *TINY, "OUTPUT_DIR", out, *no_eval))
    # Checkpoints, detectron2's writers and the final evaluation.
    for name in ("model_0000001.pth", "model_final.pth", "metrics.json", "config.yaml"):
        assert (out / name).is_file(), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
    losses = [json.loads(line) for line in open(out / "metrics.json")]
    losses = [r["total_loss"] for r in losses if "total_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    if family == "faster":
        assert set(results) == _tasks(family)
        saved = json.load(open(out / "results.json"))
        assert set(saved["results"]) == _tasks(family)
        assert set(saved["per_dataset"]) == {f"{TOY_PREFIX}_val"}

    # --eval-only on the trained weights (with the BN-folding fast path): COCO AP dicts.
    ev = tmp_path / "eval"
    weights = str(out / "model_final.pth")
    results = train_net.main(
        train_net_args(config, *TINY, "OUTPUT_DIR", ev, "MODEL.WEIGHTS", weights, eval_only=True)
    )
    assert set(results) == _tasks(family)
    for task in _tasks(family):
        assert {"AP", "AP50", "AP75"} <= set(results[task])
    assert json.load(open(ev / "results.json"))["weights"] == weights

    # --resume continues from the last checkpoint (iteration 3 of 3 -> starts at 3).
    cfg = setup(
        train_net_args(config, *TINY, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", 5, resume=True)
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 3
    assert trainer.scheduler.last_epoch == 3


def _fixed_batch(cfg, indices):
    """Mapped training images without random augmentation (same batch every step)."""
    dicts = DatasetCatalog.get(f"{TOY_PREFIX}_train")
    mapper = DatasetMapper(
        cfg, is_train=True, augmentations=[T.ResizeShortestEdge(80, 128)], use_instance_mask=True
    )
    return [mapper(copy.deepcopy(dicts[i])) for i in indices]


def _tiny_cfg(family, *opts):
    return load_config(os.path.join(CONFIGS, RESNEST_CONFIGS[family]), TINY + list(opts))


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(RESNEST_CONFIGS))
def test_overfits_one_fixed_batch(family):
    cfg = _tiny_cfg(family, "SOLVER.BASE_LR", 0.02)
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    batch = _fixed_batch(cfg, [0, 1])
    model.train()
    losses = []
    with EventStorage(0):
        for _ in range(8):
            loss_dict = model(batch)
            loss = sum(loss_dict.values())
            assert all(torch.isfinite(v) for v in loss_dict.values()), loss_dict
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


@pytest.mark.parametrize("family", ["mask", pytest.param("cascade_mask", marks=pytest.mark.slow)])
@pytest.mark.parametrize("empty_only", [False, True], ids=["mixed", "all_empty"])
def test_batches_with_images_without_annotations(family, empty_only):
    cfg = _tiny_cfg(family)
    dicts = DatasetCatalog.get(f"{TOY_PREFIX}_train")
    empty = [i for i, d in enumerate(dicts) if not d["annotations"]]
    assert empty, "the toy set has an image without objects"
    batch = _fixed_batch(cfg, [empty[0], empty[0]] if empty_only else [empty[0], 0])
    model = Trainer.build_model(cfg)
    model.train()
    with EventStorage(0):
        loss_dict = model(batch)
        sum(loss_dict.values()).backward()
    assert all(torch.isfinite(v) for v in loss_dict.values()), loss_dict
    # Box regression and mask losses come from objects only: exactly zero without any, positive
    # when one image has objects (ground-truth boxes are added to the proposals); background
    # classification is learned either way.
    foreground = [k for k in loss_dict if "box_reg" in k or k in ("loss_mask", "loss_rpn_loc")]
    assert len(foreground) == (2 if family == "mask" else 4) + 1, sorted(loss_dict)
    for k, v in loss_dict.items():
        assert (float(v) == 0.0) == (empty_only and k in foreground), (k, v)


@pytest.mark.slow
def test_eval_with_zero_predictions(train_net, tmp_path):
    """A model that predicts nothing still gets a result dict (NaN AP; null in results.json)."""
    config = RESNEST_CONFIGS["mask"]
    results = train_net.main(
        train_net_args(
            config, *TINY, "OUTPUT_DIR", tmp_path, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 1.01,
            eval_only=True, allow_random=True,
        )
    )  # fmt: skip
    assert set(results) == {"bbox", "segm"}
    assert all(math.isnan(v) for v in results["bbox"].values() if isinstance(v, float))
    saved = json.load(open(tmp_path / "results.json"))["results"]
    assert saved["bbox"]["AP"] is None


def test_corrupt_image_is_named(train_net, tmp_path):
    """A COCO-format dataset (DATASETS.COCO_FORMAT) with an unreadable image."""
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "good.png"), np.full((64, 64, 3), 128, np.uint8))
    (images / "broken.png").write_bytes(b"this is not a png")
    coco = {
        "images": [
            {"id": i + 1, "file_name": f, "height": 64, "width": 64}
            for i, f in enumerate(["broken.png", "good.png"])
        ],
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [8, 8, 20, 20],
             "area": 400, "iscrowd": 0}
            for i in range(2)
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "thing"}],
    }
    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps(coco))
    entry = [["corrupt_train", str(json_file), str(images)]]
    args = train_net_args(
        RESNEST_CONFIGS["faster"], *TINY, "OUTPUT_DIR", tmp_path / "out",
        "DATASETS.COCO_FORMAT", entry, "DATASETS.TRAIN", ("corrupt_train",),
        "MODEL.ROI_HEADS.NUM_CLASSES", 1, "DATALOADER.ASPECT_RATIO_GROUPING", False,
        "DATASETS.TEST", (),
    )  # fmt: skip
    # Found at start-up (the training set's images are sampled and decoded), not mid-training.
    with pytest.raises(DataCheckError) as e:
        train_net.main(args)
    assert "broken.png" in str(e.value) and "expected images PIL can decode" in str(e.value)
    assert not (tmp_path / "out" / "last_checkpoint").exists()
