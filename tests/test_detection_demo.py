"""tools/demo.py: refuses random weights (saying why), writes overlay PNGs for files and folders,
survives unreadable images, never overwrites an output, needs no annotation file, and labels
objects with the class names stored in the checkpoint."""

import glob
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from demo_helpers import (
    BAD_INPUT_IDS,
    BAD_INPUTS,
    package_logs,
    write_bad_folder,
    write_image,
    write_one_class_coco,
)
from detection_helpers import (
    CONFIGS,
    REPO,
    RESNEST_CONFIGS,
    TINY,
    TOY_PREFIX,
    load_tool,
    train_net_args,
)
from resnest_dense.engine import Trainer, load_config
from resnest_dense.engine.class_names import CHECKPOINT_KEY

CONFIG = os.path.join(CONFIGS, RESNEST_CONFIGS["mask"])


pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py


@pytest.fixture(scope="module")
def demo():
    return load_tool("demo")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (72, 96, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    single = tmp_path / "single.png"
    cv2.imwrite(str(single), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return [str(folder), str(single)]


@pytest.mark.parametrize(
    "weights,why",
    [
        ("", "MODEL.WEIGHTS is empty"),
        ("resnest://resnest50", "ImageNet backbone weights only"),
        ("/nonexistent/model_final.pth", "does not exist"),
    ],
)
def test_refuses_random_weights(demo, images, tmp_path, capsys, weights, why):
    out = tmp_path / "out"
    argv = ["--config-file", CONFIG, "--input", *images, "--output", str(out)]
    code = demo.main(argv + ["--opts", *[str(o) for o in TINY], "MODEL.WEIGHTS", weights])
    err = capsys.readouterr().err
    assert code == 2 and why in err and "--allow-random-weights" in err
    assert not out.exists()


def test_overlays_with_random_weights_when_allowed(demo, images, tmp_path):
    out = tmp_path / "out"
    argv = ["--config-file", CONFIG, "--input", *images, "--output", str(out)]
    argv += ["--allow-random-weights", "--confidence-threshold", "0.0"]
    assert demo.main(argv + ["--opts", *[str(o) for o in TINY]]) == 0
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "single.png"]
    assert cv2.imread(str(out / "b.png")).shape == (72, 96, 3)


def test_runs_on_a_checkpoint(demo, images, tmp_path):
    cfg = load_config(CONFIG, TINY)
    weights = tmp_path / "model.pth"
    DetectionCheckpointer(Trainer.build_model(cfg), save_dir=str(tmp_path)).save("model")
    out = tmp_path / "out"
    argv = ["--config-file", CONFIG, "--input", images[1], "--output", str(out)]
    opts = [str(o) for o in TINY] + ["MODEL.WEIGHTS", str(weights)]
    assert demo.main(argv + ["--opts", *opts]) == 0
    assert os.listdir(out) == ["single.png"]


@pytest.mark.parametrize(
    "change,key",
    [
        (lambda m: {k: v for k, v in m.items() if k.startswith("backbone.")}, "missing"),
        (lambda m: {**m, "roi_heads.box_predictor.cls_score.bias": torch.zeros(7)}, "wrong shape"),
    ],
    ids=["backbone_only", "other_num_classes"],
)
def test_refuses_a_checkpoint_that_does_not_fit(demo, images, tmp_path, capsys, change, key):
    """Demos load strictly: a file that does not cover the model is named, nothing written."""
    model = Trainer.build_model(load_config(CONFIG, TINY))
    weights = tmp_path / "model.pth"
    torch.save({"model": change(model.state_dict())}, weights)
    out = tmp_path / "out"
    argv = ["--config-file", CONFIG, "--input", images[1], "--output", str(out)]
    opts = [str(o) for o in TINY] + ["MODEL.WEIGHTS", str(weights)]
    assert demo.main(argv + ["--opts", *opts]) == 2
    err = capsys.readouterr().err
    assert f"The weights {weights} do(es) not fit the model" in err and key in err
    assert not out.exists()


def _run(demo, inputs, out, *opts, weights=None):
    argv = ["--config-file", CONFIG, "--input", *map(str, inputs), "--output", str(out)]
    argv += ["--confidence-threshold", "0.0"]
    argv += ["--allow-random-weights"] if weights is None else []
    opts = [str(o) for o in TINY + list(opts)] + (["MODEL.WEIGHTS", weights] if weights else [])
    return demo.main(argv + ["--opts", *opts])


@pytest.mark.parametrize(
    "make,item,message",
    BAD_INPUTS,
    ids=BAD_INPUT_IDS,
)
def test_inputs_without_images_are_refused(demo, images, tmp_path, capsys, make, item, message):
    make(tmp_path)
    out = tmp_path / "out"
    # The other inputs are fine: one bad item stops the run before the model is built.
    assert _run(demo, [*images, tmp_path / item], out) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / item) in err
    assert not out.exists()


def test_output_folder_that_would_replace_inputs_is_refused(demo, images, capsys):
    # images[0] holds a.png: its overlay would be written over it.
    assert _run(demo, images, images[0]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert sorted(os.listdir(images[0])) == ["a.png", "b.jpg", "notes.txt"]


def test_unreadable_images_are_skipped_and_reported(demo, tmp_path):
    folder = tmp_path / "in"
    bad = write_bad_folder(folder)
    out = tmp_path / "out"
    with package_logs() as logs:
        assert _run(demo, [folder], out) == 1
    assert sorted(os.listdir(out)) == ["a.png", "d.png"]
    assert cv2.imread(str(out / "a.png")).shape == (50, 70, 3)
    warnings = [m for m in logs.messages(logging.WARNING) if m.startswith("Skipping")]
    assert [name for name in bad for m in warnings if name in m] == bad and len(warnings) == 2
    summary = logs.messages(logging.ERROR)
    assert len(summary) == 1 and summary[0].startswith("2 of 4 images skipped")


def test_outputs_never_overwrite_each_other(demo, tmp_path):
    # Four inputs named x; each gets its own overlay of its own size.
    sizes = {"a/x.png": (40, 50), "b/x.png": (44, 60), "c/x.jpg": (48, 70), "c/x.png": (52, 80)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        write_image(tmp_path / name, h, w, seed=i)
    out = tmp_path / "out"
    inputs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    assert _run(demo, inputs, out) == 0
    expected = {"x.png": (40, 50), "x-2.png": (44, 60), "x-3.png": (48, 70), "x-4.png": (52, 80)}
    assert {n: cv2.imread(str(out / n)).shape[:2] for n in os.listdir(out)} == expected


@pytest.mark.slow
def test_coco_config_needs_no_annotation_file(images, tmp_path):
    """The COCO config as shipped (DATASETS.TEST coco_2017_val) with no COCO data anywhere."""
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    out = tmp_path / "out"
    opts = [str(o) for o in TINY] + ["MODEL.ROI_HEADS.NUM_CLASSES", "80"]
    opts += ["DATASETS.TRAIN", "('coco_2017_train',)", "DATASETS.TEST", "('coco_2017_val',)"]
    argv = ["--config-file", CONFIG, "--input", *images, "--output", str(out)]
    argv += ["--allow-random-weights", "--opts", *opts]
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "demo.py"), *argv],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DATASETS.TEST[0]=coco_2017_val: person, bicycle, car" in proc.stdout
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "single.png"]
    assert os.listdir(datasets) == []


@pytest.fixture(scope="module")
def widget_model(train_net, tmp_path_factory):
    """A Mask R-CNN trained for 2 iterations on a custom one-class COCO_FORMAT set ("widget")."""
    root = tmp_path_factory.mktemp("widgets")
    json_file, image_root = write_one_class_coco(root / "data", "widget")
    out = root / "run"
    opts = ["MODEL.ROI_HEADS.NUM_CLASSES", 1, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out]
    opts += ["DATASETS.COCO_FORMAT", [["demo_widgets_train", json_file, image_root]]]
    opts += ["DATASETS.TRAIN", ("demo_widgets_train",), "DATASETS.TEST", ()]
    train_net.main(train_net_args(RESNEST_CONFIGS["mask"], *TINY, *opts))
    return out, opts[-6:]


def test_checkpoints_store_the_class_names(widget_model):
    out, _ = widget_model
    files = sorted(glob.glob(str(out / "*.pth")))
    assert [os.path.basename(f) for f in files] == ["model_0000001.pth", "model_final.pth"]
    for path in files:
        stored = torch.load(path, weights_only=False)[CHECKPOINT_KEY]
        assert stored == {"dataset": "demo_widgets_train", "thing_classes": ["widget"]}


@pytest.mark.parametrize(
    "test_set",
    ["as-trained", "('coco_2017_val',)", f"('{TOY_PREFIX}_val',)", "()"],
)
def test_demo_labels_with_the_trained_class_names(
    demo, widget_model, images, tmp_path, monkeypatch, test_set
):
    """Whatever DATASETS.TEST the demo's config names (the COCO config's default, another
    registered set, none), the objects are labelled "widget"."""
    out_dir, registration = widget_model
    used = []

    class SpyVisualizer(demo.Visualizer):
        def __init__(self, image, metadata, **kwargs):
            used.append(metadata)
            super().__init__(image, metadata, **kwargs)

    monkeypatch.setattr(demo, "Visualizer", SpyVisualizer)
    opts = ["MODEL.ROI_HEADS.NUM_CLASSES", 1]
    opts += registration if test_set == "as-trained" else ["DATASETS.TEST", test_set]
    weights = str(out_dir / "model_final.pth")
    assert _run(demo, [images[1]], tmp_path / "out", *opts, weights=weights) == 0
    assert len(used) == 1 and used[0].thing_classes == ["widget"]
    assert "demo_widgets_train" in used[0].class_names_source
