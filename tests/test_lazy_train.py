"""tools/lazyconfig_train_net.py: LazyConfig files on the engine of tools/train_net.py (CPU).

* The toy LazyConfig schedule and its YAML twin train to bit-identical losses and the same
  evaluation results; ``--eval-only`` evaluates the result.
* A LazyConfig run killed with SIGKILL and restarted with ``--resume`` reproduces the losses of
  an uninterrupted run exactly.
* ``a.b=c`` overrides, the YAML-key view the checks read, start-up errors in the LazyConfig's
  terms, and ``resnest://`` names in ``train.init_checkpoint``.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog

from detection_helpers import (
    CONFIGS,
    REPO,
    TOY_PREFIX,
    load_tool,
    register_test_toy_set,
    run_tool_killed_after_checkpoint,
    train_net_args,
)
from resnest_dense.engine import argument_parser, load_config
from resnest_dense.engine.history import read_loss_history
from resnest_dense.engine.lazy import LazyTrainer, is_lazy_run
from resnest_dense.errors import ConfigKeyError, MissingFileError, StartupError
from test_model_zoo import isolated, official_state, sha256, write_registry  # noqa: F401

LAZY_TOY = os.path.join(CONFIGS, "lazy", "quick_schedules", "toy_mask_rcnn_S14_FPN.py")
YAML_TOY = os.path.join(CONFIGS, "quick_schedules", "toy_mask_rcnn_S14_FPN.yaml")

# The toy schedule on the 12 + 4 image test set at 64-128 px, 2 images a batch; the LR schedule
# flat after a warm-up over the whole run, as the YAML twin's with SOLVER.MAX_ITER overridden.
TINY_LAZY = [
    f"dataloader.train.dataset.names={TOY_PREFIX}_train",
    f"dataloader.test.dataset.names={TOY_PREFIX}_val",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[64,80]",
    "dataloader.train.mapper.augmentations.0.max_size=128",
    "dataloader.test.mapper.augmentations.0.short_edge_length=80",
    "dataloader.test.mapper.augmentations.0.max_size=128",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.precise_bn.enabled=False",
    "train.seed=5",
    "lr_multiplier.warmup_length=1.0",
    "lr_multiplier.scheduler.values=[1.0]",
    "lr_multiplier.scheduler.milestones=[]",
]
TINY_YAML = [
    "DATASETS.TRAIN", (f"{TOY_PREFIX}_train",), "DATASETS.TEST", (f"{TOY_PREFIX}_val",),
    "INPUT.MIN_SIZE_TRAIN", (64, 80), "INPUT.MAX_SIZE_TRAIN", 128,
    "INPUT.MIN_SIZE_TEST", 80, "INPUT.MAX_SIZE_TEST", 128,
    "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0,
    "TEST.PRECISE_BN.ENABLED", False, "SEED", 5,
]  # fmt: skip


def _schedule(max_iter: int, period: int, out) -> list:
    return [
        f"train.max_iter={max_iter}",
        f"lr_multiplier.scheduler.num_updates={max_iter}",
        f"train.checkpointer.period={period}",
        f"train.output_dir={out}",
    ]


def lazy_args(*overrides, eval_only=False, resume=False, config=LAZY_TOY):
    flags = ["--eval-only"] if eval_only else []
    flags += ["--resume"] if resume else []
    return argument_parser().parse_args(flags + ["--config-file", config, *overrides])


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "toy")
    register_test_toy_set(root)
    DatasetCatalog.get(f"{TOY_PREFIX}_train")  # generate the images once
    return root


@pytest.fixture(scope="module")
def lazy_tool():
    return load_tool("lazyconfig_train_net")


def test_help_runs():
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "lazyconfig_train_net.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--config-file" in proc.stdout and "train.init_checkpoint=" in proc.stdout


def test_view_holds_the_lazy_values(toy_root, tmp_path):
    cfg = load_config(LAZY_TOY, [*TINY_LAZY, f"train.output_dir={tmp_path}"])
    assert is_lazy_run(cfg)
    assert cfg.DATASETS.TRAIN == (f"{TOY_PREFIX}_train",)
    assert cfg.DATASETS.TEST == (f"{TOY_PREFIX}_val",)
    assert cfg.SOLVER.IMS_PER_BATCH == 2 and cfg.SEED == 5 and cfg.OUTPUT_DIR == str(tmp_path)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and cfg.MODEL.MASK_ON
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert cfg.MODEL.RESNETS.NORM == "SyncBN" and cfg.MODEL.FPN.NORM == "SyncBN"
    assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.DEVICE == cfg.lazy.train.device == "cpu"


def test_multiprocess_cpu_replaces_syncbn_in_the_lazy_model(toy_root, tmp_path):
    cfg = load_config(LAZY_TOY, [*TINY_LAZY, f"train.output_dir={tmp_path}"], world_size=2)
    model = cfg.lazy.model
    assert model.backbone.bottom_up.norm == model.backbone.norm == "naiveSyncBN_N"
    assert model.roi_heads.box_head.conv_norm == "naiveSyncBN_N"  # unchanged


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["train.max_itr=3"], ConfigKeyError, "Did you mean: train.max_iter"),
        (["train.max_iter", "3"], StartupError, "dotted.key=value"),
        (["dataloader.train.dataset.names=nope"], KeyError, "dataloader.train.dataset.names"),
        (["train.init_checkpoint=resnest://nope"], StartupError, "train.init_checkpoint="),
        (["dataloader.train.total_batch_size=3"], StartupError, "total_batch_size=3"),
    ],
    ids=["unknown_key", "yaml_style", "unregistered", "unknown_weights", "batch_vs_processes"],
)
def test_startup_errors_name_the_lazy_key(toy_root, overrides, error, message):
    world_size = 2 if "batch_size=3" in overrides[0] else 1
    with pytest.raises(error, match=message.replace(".", r"\.").replace("?", r"\?")):
        load_config(LAZY_TOY, [*TINY_LAZY, *overrides], world_size=world_size)


def test_missing_config_file():
    with pytest.raises(MissingFileError, match="nope.py"):
        load_config("configs/lazy/nope.py")


@pytest.fixture
def imagenet_registry(isolated, monkeypatch):  # noqa: F811
    """An official-layout ResNeSt-14 ImageNet file registered as ``resnest://resnest14d``."""
    imagenet = official_state("resnest14d", meta=False)
    store = isolated / "store"
    store.mkdir()
    torch.save(imagenet, store / "in.pth")
    name = f"resnest14d-{sha256(store / 'in.pth')[:8]}.pth"
    os.rename(store / "in.pth", store / name)
    raw = {
        "name": "resnest14d", "file": name, "kind": "imagenet_backbone",
        "urls": ["https://example.invalid/" + name],
        "hash": {"algorithm": "sha256", "value": name[-12:-4]}, "format": "resnest_official",
        "variant": "resnest14d", "config": None, "source": "resnest_torch_models",
    }  # fmt: skip
    monkeypatch.setenv("RESNEST_DENSE_REGISTRY", write_registry(isolated / "reg.json", raw))
    monkeypatch.setenv("RESNEST_DENSE_WEIGHTS_DIRS", str(store))
    return imagenet


def test_resnest_name_in_init_checkpoint_loads_the_backbone(toy_root, imagenet_registry, tmp_path):
    # The toy backbone at resnest14d's published widths (stem 32, res2 256 channels).
    overrides = [
        *TINY_LAZY,
        *_schedule(1, 1, tmp_path),
        "model.backbone.bottom_up.stem_width=32",
        "model.backbone.bottom_up.out_channels=256",
        "train.init_checkpoint=resnest://resnest14d",
    ]
    cfg = load_config(LAZY_TOY, overrides)
    trainer = LazyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    bottom_up = trainer.model.backbone.bottom_up
    assert torch.equal(bottom_up.stem.conv1_1.weight, imagenet_registry["conv1.0.weight"])
    assert torch.equal(
        bottom_up.res3[0].conv2.fc1.weight, imagenet_registry["layer2.0.conv2.fc1.weight"]
    )


@pytest.mark.slow
def test_toy_lazy_config_trains_like_its_yaml_twin_and_evaluates(
    lazy_tool, train_net, toy_root, tmp_path
):
    lazy_dir, yaml_dir = tmp_path / "lazy", tmp_path / "yaml"
    lazy_results = lazy_tool.main(lazy_args(*TINY_LAZY, *_schedule(3, 2, lazy_dir)))
    opts = [*TINY_YAML, "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 2, "OUTPUT_DIR", yaml_dir]
    yaml_results = train_net.main(train_net_args(YAML_TOY, *opts))
    # Same model, init, data stream, optimizer and schedule: the same run, bit for bit.
    lazy_losses = read_loss_history(lazy_dir / "losses.jsonl")
    assert sorted(lazy_losses) == [0, 1, 2]
    assert lazy_losses == read_loss_history(yaml_dir / "losses.jsonl")
    written = json.loads((lazy_dir / "results.json").read_text())
    assert written["results"] == json.loads((yaml_dir / "results.json").read_text())["results"]
    assert written["weights"] == str(lazy_dir / "model_final.pth")
    assert set(lazy_results) == set(yaml_results) == {"bbox", "segm"}
    final = torch.load(lazy_dir / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["dataset_metadata"]["thing_classes"] == ["circle", "square", "triangle"]
    assert (lazy_dir / "config.yaml").is_file()

    # --eval-only on the trained weights (loaded strictly) writes the results file again.
    (lazy_dir / "results.json").unlink()
    weights = lazy_dir / "model_final.pth"
    args = lazy_args(*TINY_LAZY, f"train.output_dir={lazy_dir}", f"train.init_checkpoint={weights}")
    args.eval_only = True
    results = lazy_tool.main(args)
    assert set(results) == {"bbox", "segm"}
    written = json.loads((lazy_dir / "results.json").read_text())
    assert written["weights"] == str(weights)


@pytest.mark.slow
def test_lazy_sigkill_then_resume_reproduces_losses(lazy_tool, toy_root, tmp_path):
    no_eval = ["dataloader.test.dataset.names=[]"]
    ref_dir = tmp_path / "ref"
    lazy_tool.main(lazy_args(*TINY_LAZY, *no_eval, *_schedule(6, 2, ref_dir)))
    reference = read_loss_history(ref_dir / "losses.jsonl")
    assert sorted(reference) == list(range(6))

    # The same run in a subprocess, killed right after its checkpoint of iteration 3.
    out = tmp_path / "killed"
    overrides = [*TINY_LAZY, *no_eval, *_schedule(6, 2, out)]
    run_tool_killed_after_checkpoint(
        ["lazyconfig_train_net.py", "--config-file", LAZY_TOY, *overrides], toy_root, out
    )
    assert not (out / "model_final.pth").exists()

    lazy_tool.main(lazy_args(*overrides, resume=True))
    resumed = read_loss_history(out / "losses.jsonl")
    assert sorted(resumed) == list(range(6))
    for iteration, losses in resumed.items():
        assert losses == reference[iteration], iteration  # bit-exact
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 5


DEEPLAB = os.path.join(
    CONFIGS, "lazy", "ADE20K-SemanticSegmentation", "deeplabv3_S_50_OS8_syncbn_120ep.py"
)
# The DeepLabV3 leaf at the toy ResNeSt-14 widths on the generated segmentation set; arguments
# the file leaves at their defaults (out_channels) are accepted because build_resnest takes them.
TINY_DEEPLAB = [
    "model.backbone.depth=14",
    "model.backbone.stem_width=16",
    "model.backbone.out_channels=64",
    "model.sem_seg_head.input_shape.res4.channels=256",
    "model.sem_seg_head.input_shape.res5.channels=512",
    "model.sem_seg_head.num_classes=4",
    "model.sem_seg_head.aspp_channels=64",
    "model.sem_seg_head.aux_channels=32",
    "model.base_size=0",
    "model.crop_size=0",
    "dataloader.train.dataset.names=toy_sem_seg_train",
    "dataloader.test.dataset.names=toy_sem_seg_val",
    "dataloader.train.mapper.augmentations.0.target_height=112",
    "dataloader.train.mapper.augmentations.0.target_width=112",
    "dataloader.train.mapper.augmentations.1.crop_size=[96,96]",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.device=cpu",
    "train.init_checkpoint=",
    "train.checkpointer.period=100",
]


def test_deeplab_lazy_optimizer_runs_the_head_at_10x(tmp_path):
    cfg = load_config(DEEPLAB, [*TINY_DEEPLAB, f"train.output_dir={tmp_path}"])
    model = LazyTrainer.build_model(cfg)
    optimizer = LazyTrainer.build_optimizer(cfg, model)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        head = names[id(group["params"][0])].startswith("sem_seg_head.")
        assert group["lr"] == pytest.approx(0.04 if head else 0.004)
        assert group["weight_decay"] == pytest.approx(1e-4)  # norms included, as the reference


@pytest.mark.slow
def test_deeplab_lazy_config_trains_and_evaluates(lazy_tool, tmp_path):
    results = lazy_tool.main(
        lazy_args(*TINY_DEEPLAB, "train.max_iter=2", f"train.output_dir={tmp_path}", config=DEEPLAB)
    )
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["results"]["sem_seg"]["mIoU"] == pytest.approx(results["sem_seg"]["mIoU"])


@pytest.mark.slow
def test_panoptic_lazy_config_trains_and_evaluates_pq(lazy_tool, tmp_path):
    config = os.path.join(CONFIGS, "lazy", "quick_schedules", "toy_panoptic_fpn_S14.py")
    tiny = [
        o
        for o in TINY_LAZY
        if not o.startswith(("dataloader.train.dataset", "dataloader.test.dataset"))
    ]
    results = lazy_tool.main(lazy_args(*tiny, *_schedule(2, 100, tmp_path), config=config))
    # As tools/train_net.py on the YAML twin: stuff mIoU, box / mask AP and PQ.
    assert {"sem_seg", "bbox", "segm", "panoptic_seg"} <= set(results)
    assert 0 <= results["panoptic_seg"]["PQ"] <= 100
