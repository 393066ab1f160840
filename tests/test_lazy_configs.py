"""Every LazyConfig leaf under configs/lazy/ builds the same model as its YAML twin.

For each pair: the same state-dict keys and shapes, and, with the YAML model's weights loaded
into the LazyConfig model (strictly), equal outputs on the same tiny image in eval mode (boxes,
scores, classes and masks of the detectors with the score threshold at 0 so random weights
still detect; the logits of DeepLabV3).
"""

import glob
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import FastRCNNOutputLayers

from detection_helpers import CONFIGS
from resnest_dense.config import get_resnest_cfg

LAZY = os.path.join(CONFIGS, "lazy")
CPU = ["MODEL.DEVICE", "cpu"]


def _yaml_twin(leaf: str) -> str:
    """``configs/lazy/<dir>/<name>.py`` -> ``configs/<dir>/<name>.yaml``."""
    return os.path.join(CONFIGS, os.path.splitext(os.path.relpath(leaf, LAZY))[0] + ".yaml")


def _leaves():
    leaves = sorted(glob.glob(os.path.join(LAZY, "*", "*.py")))
    return [os.path.relpath(p, LAZY) for p in leaves if "common" not in p.split(os.sep)[-2:-1]]


TWINS = [p for p in _leaves() if os.path.isfile(_yaml_twin(os.path.join(LAZY, p)))]
# Building two full-size models takes 10-30 s on 2 shared cores: the toy pair (the Mask R-CNN
# path at small widths) runs always, the full-size pairs with the slow tests.
FAST = [p for p in TWINS if "quick_schedules" in p]


def test_every_lazy_leaf_has_a_yaml_twin_or_is_a_new_baseline():
    for leaf in _leaves():
        twin = _yaml_twin(os.path.join(LAZY, leaf))
        assert os.path.isfile(twin) or leaf.startswith("new_baselines"), (leaf, twin)
    assert len(TWINS) >= 25, TWINS


@pytest.mark.parametrize("leaf", _leaves())
def test_lazy_leaf_loads(leaf):
    cfg = LazyConfig.load(os.path.join(LAZY, leaf))
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg.keys())
    assert cfg.dataloader.train.total_batch_size > 0


def _outputs(model, image):
    """Backbone features, RPN proposals and final predictions of ``model`` on ``image``."""
    out = {}
    with torch.no_grad():
        x = ((image - model.pixel_mean) / model.pixel_std)[None]
        out.update({f"feature {k}": v for k, v in model.backbone(x).items()})
        if hasattr(model, "proposal_generator"):
            images = model.preprocess_image([{"image": image}])
            (proposals,), _ = model.proposal_generator(images, model.backbone(images.tensor))
            out["proposal boxes"] = proposals.proposal_boxes.tensor
            out["objectness"] = proposals.objectness_logits
        (pred,) = model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])
    if "sem_seg" in pred:
        out["sem_seg"] = pred["sem_seg"]
    if "panoptic_seg" in pred:
        out["panoptic_seg"] = pred["panoptic_seg"][0]
    if "instances" in pred:
        # Random weights may propose / detect nothing (deep random nets overflow): then both
        # twins must detect nothing.
        inst = pred["instances"]
        out.update(boxes=inst.pred_boxes.tensor, scores=inst.scores, classes=inst.pred_classes)
        if inst.has("pred_masks"):
            out["masks"] = inst.pred_masks.float()
    return out


def _prepare(model):
    """Eval mode, every detection kept, segmentation at the input size (fast)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, FastRCNNOutputLayers):
            module.test_score_thresh = 0.0
    if hasattr(model, "base_size"):
        model.base_size = model.crop_size = 0
    return model


@pytest.mark.parametrize(
    "leaf", [p if p in FAST else pytest.param(p, marks=pytest.mark.slow) for p in TWINS]
)
def test_lazy_leaf_builds_the_model_of_its_yaml_twin(leaf):
    torch.manual_seed(0)
    yaml_model = _prepare(build_model(get_resnest_cfg(_yaml_twin(os.path.join(LAZY, leaf)), CPU)))
    lazy_model = _prepare(instantiate(LazyConfig.load(os.path.join(LAZY, leaf)).model))
    assert type(lazy_model) is type(yaml_model)
    reference = yaml_model.state_dict()
    state = lazy_model.state_dict()
    assert list(state) == list(reference)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}
    lazy_model.load_state_dict(reference, strict=True)

    # Sides divisible by 32, so every FPN level adds up without padding.
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8).float()
    expected, got = _outputs(yaml_model, image), _outputs(lazy_model, image)
    assert expected.keys() == got.keys()
    assert all(expected[k].numel() for k in expected if k.startswith("feature"))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


LSJ = sorted(p for p in _leaves() if p.startswith("new_baselines"))


@pytest.mark.parametrize("leaf", LSJ)
def test_new_baselines_follow_detectron2_lsj_recipe(leaf):
    from resnest_dense.model_zoo import get_entry

    cfg = LazyConfig.load(os.path.join(LAZY, leaf))
    epochs = int(leaf.split("_")[-2][: -len("ep")])
    depth = int(leaf.split("_ResNeSt_")[1].split("_")[0])
    augs = cfg.dataloader.train.mapper.augmentations
    assert (augs[0].min_scale, augs[0].max_scale, augs[0].target_height) == (0.1, 2.0, 1024)
    assert tuple(augs[1].crop_size) == (1024, 1024) and cfg.dataloader.train.mapper.recompute_boxes
    assert cfg.dataloader.train.total_batch_size == 64
    # 118000 images per epoch, 64 per iteration (detectron2: 184375 iterations = 100 epochs).
    assert cfg.train.max_iter == 184375 * epochs // 100
    assert cfg.lr_multiplier.scheduler.num_updates == cfg.train.max_iter
    bottom_up = cfg.model.backbone.bottom_up
    assert bottom_up.norm == cfg.model.backbone.norm == "SyncBN" and bottom_up.freeze_at == 0
    heads = cfg.model.roi_heads
    box_heads = heads.box_heads if "box_heads" in heads else [heads.box_head]
    assert all(h.conv_norm == "naiveSyncBN_N" for h in [*box_heads, heads.mask_head])
    assert bottom_up.depth == depth and cfg.train.init_checkpoint == f"resnest://resnest{depth}"
    assert get_entry(cfg.train.init_checkpoint).kind == "imagenet_backbone"


def test_new_baseline_model_builds():
    model = instantiate(
        LazyConfig.load(
            os.path.join(LAZY, "new_baselines/mask_rcnn_ResNeSt_50_FPN_100ep_LSJ.py")
        ).model
    )
    assert len(model.proposal_generator.rpn_head.conv) == 2
    assert all(p.requires_grad for p in model.backbone.bottom_up.stem.parameters())
