"""Every LazyConfig leaf under configs/lazy/ builds the same model as its YAML twin and states
the same recipe; every YAML leaf has a twin or a reason in ``WITHOUT_TWIN``.

* Model: the same state-dict keys and shapes, and, with the YAML model's weights loaded into the
  LazyConfig model (strictly), equal features, proposals and predictions on the same tiny image
  in eval mode (detectors with the score threshold at 0 so random weights still detect). The
  full-size pairs are slow; the toy pairs and a tiny variant of one pair per model part
  (``TINY``) always run.
* Recipe, without building a model: the same values in the keys the engine reads (weights, data
  sets, batch, iterations, checkpoints, norms, classes, PreciseBN, ...), the same train / test
  augmentations, optimizer parameter groups, LR curve and segmentation test procedure; YAML keys
  a LazyConfig cannot state are allowed only where ``INEXPRESSIBLE`` says so.
* Start-up: ``--eval-only`` of a Cityscapes and a COCO twin accepts their data and stops on
  missing data with the YAML's error; the toy segmentation twins train bit for bit like their
  YAMLs (slow).
"""

import glob
import json
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.modeling import RetinaNet, build_model
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.solver import LRMultiplier
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from detection_helpers import CONFIGS, load_tool, train_net_args
from resnest_dense.config import get_resnest_cfg, is_semantic_segmentation
from resnest_dense.data.toy_sem_seg import register_toy_sem_seg
from resnest_dense.engine import argument_parser, setup
from resnest_dense.engine.history import read_loss_history
from resnest_dense.engine.lazy import LazyTrainer, in_lazy_terms, lazy_run_config
from resnest_dense.engine.semseg import build_semseg_train_augmentations
from resnest_dense.engine.trainer import Trainer
from resnest_dense.errors import StartupError
from test_cityscapes import cityscapes_root, write_cityscapes_tree  # noqa: F401 (a fixture)

LAZY = os.path.join(CONFIGS, "lazy")
CPU = ["MODEL.DEVICE", "cpu"]


def _yaml_twin(leaf: str) -> str:
    """``configs/lazy/<dir>/<name>.py`` -> ``configs/<dir>/<name>.yaml``."""
    return os.path.join(CONFIGS, os.path.splitext(os.path.relpath(leaf, LAZY))[0] + ".yaml")


def _leaves():
    leaves = sorted(glob.glob(os.path.join(LAZY, "*", "*.py")))
    return [os.path.relpath(p, LAZY) for p in leaves if "common" not in p.split(os.sep)[-2:-1]]


TWINS = [p for p in _leaves() if os.path.isfile(_yaml_twin(os.path.join(LAZY, p)))]
# Building two full-size models takes 10-30 s on 2 shared cores: the toy pairs (Mask R-CNN,
# Panoptic FPN, DeepLabV3, DeepLabV3+ at small widths) run always, the full-size pairs with the
# slow tests (and a tiny variant of one pair per model part always, see TINY).
FAST = [p for p in TWINS if "quick_schedules" in p]


# YAML leaves that deliberately have no LazyConfig twin (configs/<dir>/<name>.yaml -> reason);
# a new YAML leaf needs a twin or a line here.
WITHOUT_TWIN = {}


def _yaml_leaves():
    """Every YAML leaf under configs/ (Base-* files are fragments, not recipes)."""
    paths = glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True)
    return sorted(
        os.path.relpath(p, CONFIGS)
        for p in paths
        if not os.path.basename(p).startswith("Base-") and not p.startswith(LAZY + os.sep)
    )


def test_every_lazy_leaf_has_a_yaml_twin_or_is_a_new_baseline():
    for leaf in _leaves():
        twin = _yaml_twin(os.path.join(LAZY, leaf))
        assert os.path.isfile(twin) or leaf.startswith("new_baselines"), (leaf, twin)
    assert len(TWINS) >= 52, TWINS


def test_every_yaml_leaf_has_a_lazy_twin_or_a_reason():
    lazy_names = {os.path.splitext(p)[0] for p in _leaves()}
    missing = [
        y
        for y in _yaml_leaves()
        if os.path.splitext(y)[0] not in lazy_names and y not in WITHOUT_TWIN
    ]
    assert not missing, (
        f"YAML configs without a LazyConfig twin: {missing}. Write configs/lazy/<dir>/<name>.py "
        "(docs/configs.md) or add the file to WITHOUT_TWIN with the reason."
    )
    stale = [
        y for y in WITHOUT_TWIN if y not in _yaml_leaves() or os.path.splitext(y)[0] in lazy_names
    ]
    assert not stale, f"WITHOUT_TWIN lists files that are gone or now have a twin: {stale}"


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
    if isinstance(model, RetinaNet):
        model.test_score_thresh = 0.0
    for module in model.modules():
        if isinstance(module, FastRCNNOutputLayers):
            module.test_score_thresh = 0.0
    if hasattr(model, "base_size"):
        model.base_size = model.crop_size = 0
    return model


def _assert_same_model(leaf: str, yaml_opts=(), lazy_overrides=()) -> None:
    """The YAML twin of ``leaf`` (with ``yaml_opts``) and ``leaf`` (with ``lazy_overrides``,
    ``a.b=c`` strings) build the same state dict and, with the YAML model's weights, the same
    outputs."""
    torch.manual_seed(0)
    yaml_cfg = get_resnest_cfg(_yaml_twin(os.path.join(LAZY, leaf)), [*CPU, *yaml_opts])
    yaml_model = _prepare(build_model(yaml_cfg))
    lazy = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(LAZY, leaf)), lazy_overrides)
    lazy_model = _prepare(instantiate(lazy.model))
    # The same class for every submodule (e.g. the RPN subclass), not only the same weights.
    classes = {name: type(m) for name, m in yaml_model.named_modules()}
    assert {name: type(m) for name, m in lazy_model.named_modules()} == classes
    reference = yaml_model.state_dict()
    state = lazy_model.state_dict()
    if isinstance(yaml_model, RetinaNet):
        # The focal-loss prior: the classifier's initial bias (loading the weights replaces it).
        bias = "head.cls_score.bias"
        torch.testing.assert_close(state[bias], reference[bias], rtol=0, atol=0)
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
    if isinstance(yaml_model, RetinaNet):
        _assert_same_retinanet_training(yaml_model, lazy_model, image)


def _assert_same_retinanet_training(yaml_model, lazy_model, image) -> None:
    """The same RetinaNet losses on ``image`` (twice) with three boxes: anchor matching (IoU thresholds,
    low-quality matches), box coding, focal loss (alpha, gamma), box loss (type, beta) and the
    foreground normaliser, which the predictions do not exercise. Also the focal-loss prior,
    which the loaded weights replace: in the bias each model was built with."""
    names = ("focal_loss_alpha", "focal_loss_gamma", "smooth_l1_beta", "box_reg_loss_type")
    assert [getattr(lazy_model, n) for n in names] == [getattr(yaml_model, n) for n in names]
    instances = Instances(tuple(image.shape[1:]))
    # The thin third box overlaps no anchor by IoU 0.5: found by low-quality matching only.
    boxes = [[4.0, 6.0, 40.0, 30.0], [50.0, 20.0, 90.0, 60.0], [10.0, 40.0, 60.0, 44.0]]
    instances.gt_boxes = Boxes(torch.tensor(boxes))
    instances.gt_classes = torch.tensor([0, yaml_model.num_classes - 1, 0])
    losses = []
    for model in (yaml_model, lazy_model):
        model.train()
        with EventStorage(0), torch.no_grad():
            # Two images: split attention's batch norm on pooled features needs a batch > 1.
            losses.append(model([{"image": image, "instances": instances}] * 2))
    assert losses[0].keys() == losses[1].keys() == {"loss_cls", "loss_box_reg"}
    for key in losses[0]:
        torch.testing.assert_close(losses[1][key], losses[0][key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    "leaf", [p if p in FAST else pytest.param(p, marks=pytest.mark.slow) for p in TWINS]
)
def test_lazy_leaf_builds_the_model_of_its_yaml_twin(leaf):
    _assert_same_model(leaf)


# Tiny variants of one pair per model part (heads as in the file, backbone at its smallest
# depth: ResNeSt-14, ResNet-50), so each part's twin is checked on every run, not only with the
# slow tests. The key of the depth differs by backbone fragment.
TINY = {
    "ADE20K-SemanticSegmentation/fcn_S_50_OS8_syncbn_120ep.py": "model.backbone.depth",
    "ADE20K-SemanticSegmentation/deeplabv3plus_R_101_OS8_syncbn_160k.py": "model.backbone.stages.depth",
    "Cityscapes-SemanticSegmentation/deeplabv3plus_S_101_OS8_syncbn_80k.py": "model.backbone.depth",
    "PascalContext-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_80ep.py": "model.backbone.depth",
    "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.py": "model.backbone.bottom_up.depth",
    "COCO-Detection/retinanet_ResNeSt_50_FPN_syncbn_range-scale_1x.py": "model.backbone.bottom_up.depth",
    "COCO-Detection/retinanet_R_50_FPN_syncbn_range-scale_1x.py": "model.backbone.bottom_up.stages.depth",
    "COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_200_FPN_syncBN_all_tricks_3x.py": "model.backbone.bottom_up.depth",
    "COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x.py": "model.backbone.bottom_up.depth",
}  # fmt: skip


@pytest.mark.parametrize("leaf", sorted(TINY))
def test_tiny_variant_builds_the_model_of_its_yaml_twin(leaf):
    depth = 50 if TINY[leaf].endswith("stages.depth") else 14
    yaml_opts, overrides = ["MODEL.RESNETS.DEPTH", depth], [f"{TINY[leaf]}={depth}"]
    model = LazyConfig.load(os.path.join(LAZY, leaf)).model
    if model._target_ is RetinaNet:
        # 100 candidates per level and 10 detections instead of 1000 / 100 (time, as below).
        yaml_opts += ["MODEL.RETINANET.TOPK_CANDIDATES_TEST", 100, "TEST.DETECTIONS_PER_IMAGE", 10]
        overrides += ["model.test_topk_candidates=100", "model.max_detections_per_image=10"]
    if "proposal_generator" in model:
        # 100 / 50 test proposals and 10 detections instead of 1000 / 1000 / 100: the cascade
        # stages and the 8-conv mask head take ~20 s on 2 shared cores at the file's numbers;
        # the layers (and so the check) are the same.
        yaml_opts += ["MODEL.RPN.PRE_NMS_TOPK_TEST", 100, "MODEL.RPN.POST_NMS_TOPK_TEST", 50]
        yaml_opts += ["TEST.DETECTIONS_PER_IMAGE", 10]
        rpn, heads = model.proposal_generator, model.roi_heads
        overrides += [
            f"model.proposal_generator.pre_nms_topk=[{rpn.pre_nms_topk[0]},100]",
            f"model.proposal_generator.post_nms_topk=[{rpn.post_nms_topk[0]},50]",
        ]
        if "box_predictors" in heads:
            overrides += [
                f"model.roi_heads.box_predictors.{i}.test_topk_per_image=10"
                for i in range(len(heads.box_predictors))
            ]
        else:
            overrides.append("model.roi_heads.box_predictor.test_topk_per_image=10")
    _assert_same_model(leaf, yaml_opts, overrides)


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


# Keys of the engine's YAML view (resnest_dense.engine.lazy.lazy_run_config) a twin must match.
VIEW_KEYS = [
    "MODEL.WEIGHTS", "MODEL.DEVICE", "MODEL.META_ARCHITECTURE", "MODEL.MASK_ON",
    "MODEL.RESNETS.NORM", "MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "DATASETS.TRAIN", "DATASETS.TEST", "INPUT.FORMAT",
    "SOLVER.IMS_PER_BATCH", "SOLVER.MAX_ITER", "SOLVER.CHECKPOINT_PERIOD", "SOLVER.AMP.ENABLED",
    "SOLVER.CHECK_FINITE_LOSS", "TEST.EVAL_PERIOD", "TEST.PRECISE_BN.ENABLED",
    "TEST.PRECISE_BN.NUM_ITER", "TEST.FAST_INFERENCE", "SEED", "DATALOADER.NUM_WORKERS",
    "DATALOADER.ASPECT_RATIO_GROUPING", "DATALOADER.SKIP_CORRUPT_IMAGES",
    # test-time keys the demos and the export read
    "MODEL.ROI_HEADS.NAME", "MODEL.PROPOSAL_GENERATOR.NAME", "MODEL.KEYPOINT_ON",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "MODEL.RETINANET.SCORE_THRESH_TEST",
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "MODEL.RESNETS.DEFORM_MODULATED",
    "MODEL.RESNETS.DEFORM_NUM_GROUPS", "INPUT.MIN_SIZE_TEST", "TEST.SEM_SEG.SCALES",
    "TEST.SEM_SEG.FLIP", "TEST.SEM_SEG.BASE_SIZE", "TEST.SEM_SEG.CROP_SIZE",
]  # fmt: skip
# Keys only one detector family reads (by MODEL.META_ARCHITECTURE): RetinaNet's classes and test
# settings (the class-count check, the predictor's threshold).
FAMILY_VIEW_KEYS = {
    "RetinaNet": [
        "MODEL.RETINANET.NUM_CLASSES", "MODEL.RETINANET.SCORE_THRESH_TEST",
        "MODEL.RETINANET.TOPK_CANDIDATES_TEST", "MODEL.RETINANET.NMS_THRESH_TEST",
        "TEST.DETECTIONS_PER_IMAGE",
    ],
}  # fmt: skip
# YAML keys a LazyConfig cannot state (docs/configs.md), per twin that sets them.
INEXPRESSIBLE = {
    # detectron2 0.7.2's TTA wrapper cannot call PanopticFPN: the YAML evaluates without it too.
    "COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x.py": {"TEST.AUG.ENABLED"},
}


def _select(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return tuple(cfg) if isinstance(cfg, list) else cfg


def _plain(value):
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def _augmentations(mapper) -> list:
    """Class and arguments of each augmentation (a config list equals a tuple); a resize to a
    short side of 0 (``INPUT.MIN_SIZE_TEST 0``) is a no-op and left out, and a resize to one
    short side draws it the same way in "range" and "choice" style."""
    out = []
    for aug in mapper.augmentations.augs:
        args = {k: _plain(v) for k, v in vars(aug).items() if not k.startswith("_")}
        sizes = args.get("short_edge_length")
        if sizes == (0, 0):
            continue
        if sizes is not None and len(set(sizes)) == 1:
            args.update(is_range=None, sample_style=None)
        out.append((type(aug), args))
    return out


class _Parts(nn.Module):
    """Parameters named like a model's: backbone conv and norm, a head conv with bias."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.sem_seg_head = nn.Conv2d(4, 2, 1)
        self.roi_heads = nn.Sequential(nn.Linear(4, 2), nn.GroupNorm(1, 2))


def _groups(optimizer, model) -> dict:
    """Parameter name -> (lr, weight decay, momentum, nesterov), floats to 12 digits."""
    names = {id(p): n for n, p in model.named_parameters()}
    keys = ("lr", "weight_decay", "momentum", "nesterov")
    return {
        names[id(p)]: tuple(float(f"{g[k]:.12g}") for k in keys)
        for g in optimizer.param_groups
        for p in g["params"]
    }


def _lr_factor(scheduler, it: int) -> float:
    if isinstance(scheduler, LRMultiplier):
        return scheduler._multiplier(it / scheduler._max_iter)
    scheduler.last_epoch = it  # detectron2 DeepLab's WarmupPolyLR: closed form in last_epoch
    return scheduler.get_lr()[0] / scheduler.base_lrs[0]


@pytest.mark.parametrize("leaf", TWINS)
def test_lazy_leaf_states_the_recipe_of_its_yaml_twin(leaf):
    yaml_cfg = get_resnest_cfg(_yaml_twin(os.path.join(LAZY, leaf)))
    lazy = LazyConfig.load(os.path.join(LAZY, leaf))
    view = lazy_run_config(lazy)
    keys = VIEW_KEYS + (["MODEL.FPN.NORM"] if "bottom_up" in lazy.model.backbone else [])
    if yaml_cfg.INPUT.MIN_SIZE_TEST:  # with no test resize the maximum is not used
        keys.append("INPUT.MAX_SIZE_TEST")
    assert view.TEST.SEM_SEG.STRIDE_RATE == pytest.approx(yaml_cfg.TEST.SEM_SEG.STRIDE_RATE)
    keys += FAMILY_VIEW_KEYS.get(yaml_cfg.MODEL.META_ARCHITECTURE, [])
    if not is_semantic_segmentation(yaml_cfg):
        # Semantic labels have no annotations to filter; the flag only matters for R-CNN data.
        keys.append("DATALOADER.FILTER_EMPTY_ANNOTATIONS")
    assert {k: _select(view, k) for k in keys} == {k: _select(yaml_cfg, k) for k in keys}
    for key in ("TEST.AUG.ENABLED",):
        if _select(yaml_cfg, key):
            assert key in INEXPRESSIBLE.get(leaf, ()), f"{key} is set in the YAML of {leaf}"

    # Data: the same augmentations, in order, and the same mapper options.
    semseg = is_semantic_segmentation(yaml_cfg)
    yaml_train = DatasetMapper(yaml_cfg, is_train=True)
    if semseg:
        yaml_train = DatasetMapper(
            yaml_cfg, True, augmentations=build_semseg_train_augmentations(yaml_cfg)
        )
    lazy_train = instantiate(lazy.dataloader.train.mapper)
    for yaml_mapper, lazy_mapper in (
        (yaml_train, lazy_train),
        (DatasetMapper(yaml_cfg, is_train=False), instantiate(lazy.dataloader.test.mapper)),
    ):
        assert _augmentations(lazy_mapper) == _augmentations(yaml_mapper)
        # A test mapper drops the annotations, so only a training mapper's mask options count.
        attrs = ("image_format", "is_train")
        attrs += ("use_instance_mask", "recompute_boxes") if yaml_mapper.is_train else ()
        for attr in attrs:
            assert getattr(lazy_mapper, attr) == getattr(yaml_mapper, attr), attr

    # Solver: every parameter in a group of the same lr / weight decay / momentum.
    parts = _Parts()
    yaml_opt = Trainer.build_optimizer(yaml_cfg, parts)
    lazy_opt = LazyTrainer.build_optimizer(view, parts)
    assert type(lazy_opt) is type(yaml_opt)
    assert _groups(lazy_opt, parts) == _groups(yaml_opt, parts)
    yaml_sched = Trainer.build_lr_scheduler(yaml_cfg, yaml_opt)
    lazy_sched = LazyTrainer.build_lr_scheduler(view, lazy_opt)
    n = yaml_cfg.SOLVER.MAX_ITER
    marks = {0, 1, n // 2, n - 1} | {
        s + d for s in (*yaml_cfg.SOLVER.STEPS, 1000) for d in (-1, 0, 1)
    }
    marks = sorted(m for m in marks if 0 <= m < n)
    assert [_lr_factor(lazy_sched, m) for m in marks] == pytest.approx(
        [_lr_factor(yaml_sched, m) for m in marks], rel=1e-9
    )

    # Test procedure of the segmentors (scales, flip, sliding windows, resizing).
    if semseg:
        t = yaml_cfg.TEST.SEM_SEG
        m = lazy.model
        assert (list(m.scales), m.flip, m.base_size, m.crop_size, m.align_corners) == (
            list(t.SCALES),
            t.FLIP,
            t.BASE_SIZE,
            t.CROP_SIZE,
            yaml_cfg.MODEL.SEM_SEG_HEAD.ALIGN_CORNERS,
        )
        assert m.stride_rate == pytest.approx(t.STRIDE_RATE, rel=1e-12)


def _write_coco_val(root) -> None:
    """``root/datasets/coco``: ``instances_val2017.json`` (the 80 COCO categories, one image with
    one box) and its image, where detectron2's builtin ``coco_2017_val`` looks (relative)."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
    from PIL import Image

    coco = root / "datasets" / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "val2017").mkdir()
    Image.new("RGB", (96, 64), (90, 120, 30)).save(coco / "val2017" / "000000000001.jpg")
    box = [10.0, 10.0, 30.0, 20.0]
    poly = [[10.0, 10.0, 40.0, 10.0, 40.0, 30.0, 10.0, 30.0]]
    data = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 64, "width": 96}],
        "annotations": [
            dict(
                id=1, image_id=1, category_id=1, bbox=box, area=600.0, iscrowd=0, segmentation=poly
            )
        ],
        "categories": [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]],
    }
    with open(coco / "annotations" / "instances_val2017.json", "w") as f:
        json.dump(data, f)


def _eval_only_setup(config: str, *opts) -> str:
    """Set up ``--eval-only --allow-random-weights`` of ``config`` as both tools do
    (``resnest_dense.engine.setup``, the start-up checks of purpose "eval"); the error as
    "<type>: <message>", or "" when the checks pass."""
    args = argument_parser().parse_args(
        ["--eval-only", "--allow-random-weights", "--config-file", config, *map(str, opts)]
    )
    try:
        setup(args)
    except StartupError as e:
        return f"{type(e).__name__}: {e}"
    return ""


def test_eval_only_startup_checks_cityscapes_twin_as_its_yaml(cityscapes_root):  # noqa: F811
    """tools/lazyconfig_train_net.py --eval-only accepts a Cityscapes twin's data where
    tools/train_net.py accepts the YAML's, and stops on a missing folder with the same error
    (YAML keys in the LazyConfig's terms)."""
    leaf = "Cityscapes-SemanticSegmentation/deeplabv3plus_S_101_OS8_syncbn_80k.py"
    root = write_cityscapes_tree(str(cityscapes_root))
    out = cityscapes_root / "out"
    yaml_opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", out / "yaml"]
    lazy_opts = ["train.init_checkpoint=", "train.device=cpu", f"train.output_dir={out / 'lazy'}"]
    lazy, yaml = os.path.join(LAZY, leaf), _yaml_twin(os.path.join(LAZY, leaf))
    assert _eval_only_setup(yaml, *yaml_opts) == _eval_only_setup(lazy, *lazy_opts) == ""

    os.rename(os.path.join(root, "leftImg8bit"), os.path.join(root, "moved"))
    error = _eval_only_setup(lazy, *lazy_opts)
    assert error == in_lazy_terms(_eval_only_setup(yaml, *yaml_opts))
    expected = os.path.join(root, "leftImg8bit", "val")
    assert error.startswith("MissingFileError") and f"image_dir '{expected}" in error
    assert "cityscapes_fine_sem_seg_val" in error


def test_eval_only_startup_checks_coco_twin_as_its_yaml(tmp_path, monkeypatch):
    """The same for a COCO detection twin (detectron2's builtin coco_2017_val, relative to the
    working directory): accepted with the annotations and images on disk; without the
    annotation file, the same error naming the data set and the file."""
    leaf = "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.py"
    monkeypatch.chdir(tmp_path)
    _write_coco_val(tmp_path)
    yaml_opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", tmp_path / "yaml"]
    lazy_opts = ["train.init_checkpoint=", "train.device=cpu", f"train.output_dir={tmp_path}/lazy"]
    lazy, yaml = os.path.join(LAZY, leaf), _yaml_twin(os.path.join(LAZY, leaf))
    assert _eval_only_setup(yaml, *yaml_opts) == _eval_only_setup(lazy, *lazy_opts) == ""

    os.remove(tmp_path / "datasets" / "coco" / "annotations" / "instances_val2017.json")
    error = _eval_only_setup(lazy, *lazy_opts)
    assert error == in_lazy_terms(_eval_only_setup(yaml, *yaml_opts))
    assert "coco_2017_val" in error and "instances_val2017.json" in error


@pytest.mark.usefixtures("toy_set")  # conftest.py: dettest_{train,val}, 3 classes
def test_eval_only_startup_checks_retinanet_class_count_as_its_yaml(tmp_path):
    """``--eval-only`` of the toy RetinaNet twin reads its classes from ``model.num_classes``
    (the YAML's ``MODEL.RETINANET.NUM_CLASSES``): accepted at 3 on the 3-class toy set, refused
    at 5 with the YAML's error in the LazyConfig's terms."""
    from detection_helpers import TOY_PREFIX

    leaf = "quick_schedules/toy_retinanet_S14_FPN.py"
    lazy, yaml = os.path.join(LAZY, leaf), _yaml_twin(os.path.join(LAZY, leaf))
    data = ["DATASETS.TRAIN", (f"{TOY_PREFIX}_train",), "DATASETS.TEST", (f"{TOY_PREFIX}_val",)]
    yaml_opts = [*data, "OUTPUT_DIR", tmp_path / "yaml"]
    lazy_opts = [
        f"dataloader.train.dataset.names={TOY_PREFIX}_train",
        f"dataloader.test.dataset.names={TOY_PREFIX}_val",
        f"train.output_dir={tmp_path / 'lazy'}",
    ]
    assert _eval_only_setup(yaml, *yaml_opts) == _eval_only_setup(lazy, *lazy_opts) == ""

    error = _eval_only_setup(lazy, *lazy_opts, "model.num_classes=5")
    yaml_error = _eval_only_setup(yaml, *yaml_opts, "MODEL.RETINANET.NUM_CLASSES", 5)
    assert yaml_error.startswith("DataCheckError") and "MODEL.RETINANET.NUM_CLASSES=5" in yaml_error
    assert error == in_lazy_terms(yaml_error)
    assert "model.num_classes=5" in error and "Set model.num_classes 3" in error


@pytest.fixture(scope="module")
def toy_sem_seg(tmp_path_factory):
    """A small generated toy segmentation set (8 train / 2 val images) under test names."""
    prefix = "toy_sem_seg_lazy_twins"
    root = str(tmp_path_factory.mktemp("toy") / "toy_sem_seg")
    register_toy_sem_seg(root=root, prefix=prefix, num_train=8, num_val=2)
    return prefix


@pytest.mark.slow
@pytest.mark.parametrize("name", ["toy_deeplabv3_S14_OS8", "toy_deeplabv3plus_S14_OS8"])
def test_toy_segmentation_twin_trains_like_its_yaml(name, toy_sem_seg, train_net, tmp_path):
    """Same model, init, data stream, augmentation, optimizer and schedule: two iterations of
    the LazyConfig and of its YAML twin give the same losses bit for bit and the same mIoU."""
    lazy_dir, yaml_dir = tmp_path / "lazy", tmp_path / "yaml"
    yaml_opts = [
        "DATASETS.TRAIN", (f"{toy_sem_seg}_train",), "DATASETS.TEST", (f"{toy_sem_seg}_val",),
        "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0, "SEED", 5,
        "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 100, "OUTPUT_DIR", yaml_dir,
    ]  # fmt: skip
    yaml_results = train_net.main(train_net_args(f"quick_schedules/{name}.yaml", *yaml_opts))
    lazy_opts = [
        f"dataloader.train.dataset.names={toy_sem_seg}_train",
        f"dataloader.test.dataset.names={toy_sem_seg}_val",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "train.seed=5",
        "train.max_iter=2",
        "train.checkpointer.period=100",
        f"train.output_dir={lazy_dir}",
    ]
    args = argument_parser().parse_args(
        ["--config-file", os.path.join(LAZY, "quick_schedules", f"{name}.py"), *lazy_opts]
    )
    lazy_results = load_tool("lazyconfig_train_net").main(args)
    losses = read_loss_history(lazy_dir / "losses.jsonl")
    assert sorted(losses) == [0, 1]
    assert losses == read_loss_history(yaml_dir / "losses.jsonl")
    assert lazy_results["sem_seg"]["mIoU"] == yaml_results["sem_seg"]["mIoU"]
