"""End to end on the toy set: training, evaluation, demo, ADE20K label conversion, configs."""

import glob
import os
import re
import threading

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.engine import SimpleTrainer
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from PIL import Image

from resnest_dense.data.ade20k import ADE20K_PALETTE
from resnest_dense.data.toy_sem_seg import generate_toy_sem_seg, register_toy_sem_seg
from resnest_dense.engine.semseg import (
    build_semseg_evaluator,
    build_semseg_lr_scheduler,
    build_semseg_optimizer,
    build_semseg_train_augmentations,
    build_semseg_train_loader,
)

from detection_helpers import load_tool
from segmentation_helpers import segmentation_cfg, tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "toy_sem_seg_pytest"


@pytest.fixture(scope="module")
def toy_names(tmp_path_factory):
    if f"{PREFIX}_train" not in DatasetCatalog.list():
        root = str(tmp_path_factory.mktemp("toy") / "toy_sem_seg")
        register_toy_sem_seg(root=root, prefix=PREFIX, num_train=16, num_val=6)
    return f"{PREFIX}_train", f"{PREFIX}_val"


def _toy_opts(toy_names):
    train, val = toy_names
    return ["DATASETS.TRAIN", (train,), "DATASETS.TEST", (val,), "SOLVER.IMS_PER_BATCH", 4,
            "DATALOADER.NUM_WORKERS", 0, "SOLVER.MAX_ITER", 20, "SOLVER.BASE_LR", 0.01]  # fmt: skip


def _toy_cfg(toy_names):
    return tiny_cfg("resnest", 8, _toy_opts(toy_names))


def test_toy_set_is_deterministic_and_concurrency_safe(tmp_path):
    out = str(tmp_path / "set")
    threads = [threading.Thread(target=generate_toy_sem_seg, args=(out, 3, 2)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = generate_toy_sem_seg(str(tmp_path / "again"), 3, 2)
    files = sorted(glob.glob(os.path.join(out, "*", "*", "*.png")))
    assert len(files) == 10 and not glob.glob(str(tmp_path / "*.tmp-*"))
    for f in files:
        same = os.path.join(again, os.path.relpath(f, out))
        assert np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(same)))
    labels = np.concatenate([np.asarray(Image.open(f)).ravel() for f in files if "labels" in f])
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 255} and 255 in labels


def test_train_iterations_and_eval(toy_names):
    cfg = _toy_cfg(toy_names)
    model = build_model(cfg)
    optimizer = build_semseg_optimizer(cfg, model)
    head_lrs = {g["lr"] for g in optimizer.param_groups}
    assert head_lrs == {cfg.SOLVER.BASE_LR, cfg.SOLVER.BASE_LR * cfg.SOLVER.HEAD_LR_MULTIPLIER}
    scheduler = build_semseg_lr_scheduler(cfg, optimizer)
    trainer = SimpleTrainer(model, build_semseg_train_loader(cfg), optimizer)
    losses = []
    with EventStorage() as trainer.storage:
        for _ in range(3):
            trainer.run_step()
            scheduler.step()
            losses.append(trainer.storage.history("total_loss").latest())
            trainer.storage.iter += 1
    assert all(np.isfinite(losses))
    assert optimizer.param_groups[0]["lr"] < optimizer.param_groups[0]["initial_lr"]

    results = inference_on_dataset(
        model,
        build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]),
        build_semseg_evaluator(cfg, cfg.DATASETS.TEST[0]),
    )["sem_seg"]
    # The same metrics from the model's argmax and the label PNGs, computed here: the evaluator
    # reads the right labels, drops the 255 pixels and averages over the classes present.
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    labels = {d["file_name"]: d["sem_seg_file_name"] for d in DatasetCatalog.get(toy_names[1])}
    confusion = np.zeros((k, k), np.int64)
    model.eval()
    with torch.no_grad():
        for inputs in build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]):
            for x, out in zip(inputs, model(inputs)):
                pred = out["sem_seg"].argmax(0).numpy()
                gt = np.asarray(Image.open(labels[x["file_name"]]), np.int64)
                assert pred.shape == gt.shape
                valid = gt != 255
                confusion += np.bincount(k * gt[valid] + pred[valid], minlength=k * k).reshape(k, k)
    tp, union = np.diag(confusion), confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    miou = 100 * np.mean(tp[union > 0] / union[union > 0])
    assert results["mIoU"] == pytest.approx(miou, abs=1e-6), (results, confusion)
    assert results["pACC"] == pytest.approx(100 * tp.sum() / confusion.sum(), abs=1e-6)


@pytest.mark.parametrize("backbone", ["resnest", "resnet"])
def test_loss_decreases_on_a_fixed_batch(toy_names, backbone):
    cfg = tiny_cfg(backbone, 8, _toy_opts(toy_names))
    batch = next(iter(build_semseg_train_loader(cfg)))
    model = build_model(cfg)
    optimizer = build_semseg_optimizer(cfg, model)
    losses = []
    for _ in range(12):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_demo_writes_palette_pngs_of_input_size(toy_names, tmp_path, capsys):
    demo = load_tool("demo_semseg")
    cfg_file = os.path.join(REPO, "configs", "quick_schedules", "toy_deeplabv3_S14_OS8.yaml")
    opts = ["DATASETS.TEST", f"('{toy_names[1]}',)", "MODEL.RESNETS.NORM", "BN",
            "MODEL.SEM_SEG_HEAD.NORM", "BN"]  # fmt: skip
    images = tmp_path / "images"
    images.mkdir()
    sizes = {"a": (50, 70), "b": (64, 64)}
    for name, (h, w) in sizes.items():
        Image.fromarray(np.random.randint(0, 255, (h, w, 3), np.uint8)).save(images / f"{name}.jpg")
    out = tmp_path / "out"

    assert demo.main(["--config-file", cfg_file, "--input", str(images), "--output", str(out),
                      "--opts"] + opts) == 2  # fmt: skip
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err
    assert demo.main(["--config-file", cfg_file, "--input", str(images), "--output", str(out),
                      "--opts", "MODEL.WEIGHTS", str(tmp_path / "missing.pth")] + opts) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()

    model = build_model(segmentation_cfg(cfg_file, opts))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    weights = str(tmp_path / "model.pth")
    assert demo.main(["--config-file", cfg_file, "--input", str(images / "*.jpg"),
                      "--output", str(out), "--opts", "MODEL.WEIGHTS", weights] + opts) == 0  # fmt: skip
    palette = {tuple(c) for c in ADE20K_PALETTE[:4]}
    for name, (h, w) in sizes.items():
        mask = Image.open(out / f"{name}_mask.png")
        overlay = Image.open(out / f"{name}_overlay.png")
        assert mask.size == overlay.size == (w, h)
        assert mask.mode == "P" and np.asarray(mask).max() < 4
        colours = {tuple(c) for c in np.asarray(mask.convert("RGB")).reshape(-1, 3)}
        assert colours <= palette
        assert (out / f"{name}_legend.png").exists()


def test_ade20k_label_conversion(tmp_path):
    prepare = load_tool("prepare_ade20k_sem_seg", folder="datasets")
    root = tmp_path / "ADEChallengeData2016"
    sample = np.array([[0, 1, 2], [75, 149, 150]], np.uint8)
    for split in ("training", "validation"):
        (root / "annotations" / split).mkdir(parents=True)
        Image.fromarray(sample).save(root / "annotations" / split / f"ADE_{split}_00000001.png")
    assert prepare.main(["--root", str(root)]) == 0
    for split in ("training", "validation"):
        out = np.asarray(
            Image.open(root / "annotations_detectron2" / split / f"ADE_{split}_00000001.png")
        )
        assert out.tolist() == [[255, 0, 1], [74, 148, 149]]
        # The input is left untouched.
        source = np.asarray(Image.open(root / "annotations" / split / f"ADE_{split}_00000001.png"))
        assert np.array_equal(source, sample)
    with pytest.raises(ValueError, match="0..150"):
        prepare.convert_ade20k_label(np.array([[151]], np.uint8))


SEGMENTATION_YAMLS = sorted(
    glob.glob(os.path.join(REPO, "configs", "ADE20K-SemanticSegmentation", "*.yaml"))
    + glob.glob(os.path.join(REPO, "configs", "Cityscapes-SemanticSegmentation", "*.yaml"))
    + glob.glob(os.path.join(REPO, "configs", "quick_schedules", "toy_deeplabv3*.yaml"))
)
# (batch, crop) of each recipe: PyTorch-Encoding ADE20K, mmsegmentation's DeepLabV3+ on ADE20K
# and Cityscapes, mmsegmentation's Cityscapes 769 x 769 (our DeepLabV3 Cityscapes configs).
RECIPES = {
    ("ADE20K", "deeplabv3_"): (16, [480, 480]),
    ("ADE20K", "fcn_"): (16, [480, 480]),
    ("ADE20K", "deeplabv3plus_"): (16, [512, 512]),
    ("Cityscapes", "deeplabv3_"): (8, [769, 769]),
    ("Cityscapes", "deeplabv3plus_"): (8, [512, 1024]),
}


@pytest.mark.parametrize(
    "yaml_file",
    [
        pytest.param(y, marks=pytest.mark.slow) if re.search(r"_(101|200|269)_", y) else y
        for y in SEGMENTATION_YAMLS
    ],
    ids=os.path.basename,
)
def test_every_segmentation_yaml_loads_and_builds(yaml_file):
    cfg = segmentation_cfg(yaml_file)
    # Leaf dataset configs start from a registry ImageNet backbone; nothing else names weights.
    is_leaf = "quick_schedules" not in yaml_file and "Base" not in yaml_file
    assert cfg.MODEL.WEIGHTS.startswith("resnest://") if is_leaf else cfg.MODEL.WEIGHTS == ""
    assert cfg.OUTPUT_DIR == "./output"
    model = build_model(cfg)
    assert model.size_divisibility == cfg.MODEL.RESNETS.OUTPUT_STRIDE
    if is_leaf:
        name = os.path.basename(yaml_file)
        dataset = "Cityscapes" if "Cityscapes" in yaml_file else "ADE20K"
        recipe = next(v for (d, p), v in RECIPES.items() if d == dataset and name.startswith(p))
        assert (cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.CROP.SIZE) == recipe
        assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == (19 if dataset == "Cityscapes" else 150)
        assert isinstance(model.backbone.res5[0].conv1.norm, torch.nn.SyncBatchNorm)


def test_train_augmentations_follow_the_recipe():
    cfg = segmentation_cfg(
        os.path.join(REPO, "configs", "ADE20K-SemanticSegmentation", "Base-DeepLabV3-OS8.yaml")
    )
    augs = build_semseg_train_augmentations(cfg)
    assert [type(a).__name__ for a in augs] == [
        "ResizeScale", "FixedSizeCrop", "RandomFlip", "RandomGaussianBlur"
    ]  # fmt: skip
    image = np.random.randint(0, 255, (300, 400, 3), np.uint8)
    labels = np.random.randint(0, 150, (300, 400), np.uint8)
    aug_input = T.AugInput(image, sem_seg=labels)
    T.AugmentationList(augs)(aug_input)
    assert aug_input.image.shape == (480, 480, 3) and aug_input.sem_seg.shape == (480, 480)
    # Labels are never blurred or interpolated: only original ids and the 255 padding remain.
    assert set(np.unique(aug_input.sem_seg)) <= set(np.unique(labels)) | {255}
