"""RetinaNet with ResNeSt (configs/quick_schedules/toy_retinanet_S14_FPN.yaml) end to end on the
toy set (CPU): train a few iterations, COCO box evaluation, tools/demo.py on the checkpoint; the
start-up class-count check reads RetinaNet's key."""

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

from detection_helpers import CONFIGS, TOY_PREFIX, load_tool, train_net_args
from resnest_dense.data.validation import DataCheckError
from resnest_dense.engine import Trainer, load_config

TOY = os.path.join(CONFIGS, "quick_schedules", "toy_retinanet_S14_FPN.yaml")
# The toy schedule on 64-128 px images, 3 iterations of 2 images, on the test toy set. The FPN
# stays 64 wide: the head's GroupNorm has 32 groups, and at 32 channels a 1x1 P7 (images up to
# 128 px) would leave one value per group, which GroupNorm refuses.
TINY_RETINANET = [
    "MODEL.RETINANET.NUM_CONVS", 1,
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST", 100, "TEST.DETECTIONS_PER_IMAGE", 10,
    "INPUT.MIN_SIZE_TRAIN", (64, 80), "INPUT.MAX_SIZE_TRAIN", 128,
    "INPUT.MIN_SIZE_TEST", 80, "INPUT.MAX_SIZE_TEST", 128,
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.STEPS", (), "SOLVER.WARMUP_ITERS", 0,
    "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 2,
    "TEST.PRECISE_BN.ENABLED", False, "DATALOADER.NUM_WORKERS", 0,
    "DATASETS.TRAIN", (f"{TOY_PREFIX}_train",), "DATASETS.TEST", (f"{TOY_PREFIX}_val",),
]  # fmt: skip

pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py


def test_toy_config_builds_a_resnest_retinanet():
    cfg = load_config(TOY, TINY_RETINANET)
    model = Trainer.build_model(cfg)
    assert type(model).__name__ == "RetinaNet"
    assert model.num_classes == 3 and model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert type(model.backbone.bottom_up.res3[0].conv2).__name__ == "SplitAttentionConv2d"


@pytest.mark.parametrize("depth", [50, 101])
def test_resnest_and_resnet_pairs_differ_only_in_the_bottom_up_network(depth):
    """The ResNeSt RetinaNet and its ResNet baseline: the same FPN and P6 / P7 convs on C5
    (detectron2's builder, and the official fork's), every parameter outside the bottom-up
    network of the same name and shape."""
    from detectron2.modeling import build_backbone

    from resnest_dense import get_resnest_cfg

    nets = {}
    for kind in ("ResNeSt", "R"):
        config = f"COCO-Detection/retinanet_{kind}_{depth}_FPN_syncbn_range-scale_1x.yaml"
        cfg = get_resnest_cfg(os.path.join(CONFIGS, config), ["MODEL.RESNETS.NORM", "BN"])
        cfg.MODEL.FPN.NORM = "BN"
        nets[kind] = build_backbone(cfg)
    for net in nets.values():
        assert net.top_block.in_feature == "res5"
        assert net.top_block.p6.in_channels == 2048

    def outside_bottom_up(net):
        return {k: v.shape for k, v in net.state_dict().items() if not k.startswith("bottom_up.")}

    assert outside_bottom_up(nets["ResNeSt"]) == outside_bottom_up(nets["R"])


@pytest.mark.parametrize("purpose", ["train", "eval"])
def test_class_count_mismatch_names_the_retinanet_key(purpose):
    """The toy set has 3 classes; the error names RetinaNet's key, not ROI_HEADS'."""
    opts = TINY_RETINANET + ["MODEL.RETINANET.NUM_CLASSES", 5]
    with pytest.raises(DataCheckError) as info:
        load_config(TOY, opts, purpose=purpose, allow_random_weights=True)
    msg = str(info.value)
    assert (
        "found MODEL.RETINANET.NUM_CLASSES=5" in msg and "Set MODEL.RETINANET.NUM_CLASSES 3" in msg
    )
    assert "ROI_HEADS" not in msg


def _fixed_batch(cfg, indices):
    """Mapped training images without random augmentation (the same batch every step)."""
    dicts = DatasetCatalog.get(f"{TOY_PREFIX}_train")
    mapper = DatasetMapper(cfg, is_train=True, augmentations=[T.ResizeShortestEdge(80, 128)])
    return [mapper(copy.deepcopy(dicts[i])) for i in indices]


@pytest.mark.slow
def test_overfits_one_fixed_batch():
    cfg = load_config(TOY, TINY_RETINANET + ["SOLVER.BASE_LR", 0.04])
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    batch = _fixed_batch(cfg, [0, 1])
    model.train()
    losses = []
    with EventStorage(0):
        for _ in range(8):
            loss_dict = model(batch)
            assert all(torch.isfinite(v) for v in loss_dict.values()), loss_dict
            loss = sum(loss_dict.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            # RetinaNet divides its losses by a running mean of the foreground-anchor count
            # that starts at 100 (model.loss_normalizer, the value this step used): over the
            # first steps the reported loss grows while the model improves. The sum before
            # that division is comparable across steps (fixed batch, same anchors).
            losses.append(float(loss.detach()) * model.loss_normalizer)
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


@pytest.mark.parametrize("empty_only", [False, True], ids=["mixed", "all_empty"])
def test_batches_with_images_without_annotations(empty_only):
    """Focal loss is normalised by the number of foreground anchors (detectron2 keeps a running
    mean of at least 1): finite with none; the box loss is exactly zero without objects."""
    cfg = load_config(TOY, TINY_RETINANET)
    dicts = DatasetCatalog.get(f"{TOY_PREFIX}_train")
    empty = [i for i, d in enumerate(dicts) if not d["annotations"]]
    assert empty, "the toy set has an image without objects"
    batch = _fixed_batch(cfg, [empty[0], empty[0]] if empty_only else [empty[0], 0])
    model = Trainer.build_model(cfg)
    model.train()
    with EventStorage(0):
        loss_dict = model(batch)
        sum(loss_dict.values()).backward()
    assert set(loss_dict) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in loss_dict.values()), loss_dict
    assert float(loss_dict["loss_cls"]) > 0
    assert (float(loss_dict["loss_box_reg"]) == 0.0) == empty_only, loss_dict


@pytest.mark.slow
def test_train_evaluate_and_demo(train_net, tmp_path):
    out = tmp_path / "run"
    results = train_net.main(train_net_args(TOY, *TINY_RETINANET, "OUTPUT_DIR", out))
    for name in ("model_0000001.pth", "model_final.pth", "metrics.json", "config.yaml"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in open(out / "metrics.json")]
    losses = [r for r in records if "total_loss" in r]
    assert len(losses) >= 1
    for r in losses:
        assert {"loss_cls", "loss_box_reg"} <= set(r)
        assert all(math.isfinite(r[k]) for k in ("total_loss", "loss_cls", "loss_box_reg"))
    # The evaluation after training: COCO box AP on the toy validation set, saved to results.json.
    assert set(results) == {"bbox"} and {"AP", "AP50", "AP75"} <= set(results["bbox"])
    saved = json.load(open(out / "results.json"))
    assert set(saved["results"]) == {"bbox"}
    assert {"AP", "AP50", "AP75"} <= set(saved["results"]["bbox"])
    assert set(saved["per_dataset"]) == {f"{TOY_PREFIX}_val"}

    # tools/demo.py on the trained checkpoint writes an overlay of the input's size.
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (72, 96, 3), np.uint8))
    demo_out = tmp_path / "demo"
    argv = ["--config-file", TOY, "--input", str(image), "--output", str(demo_out)]
    argv += ["--confidence-threshold", "0.0", "--opts", *[str(o) for o in TINY_RETINANET]]
    assert load_tool("demo").main(argv + ["MODEL.WEIGHTS", str(out / "model_final.pth")]) == 0
    assert os.listdir(demo_out) == ["in.png"]
    assert cv2.imread(str(demo_out / "in.png")).shape == (72, 96, 3)
