"""tools/demo.py: refuses random weights (saying why), writes overlay PNGs for files and folders."""

import os

import cv2
import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer

from detection_helpers import CONFIGS, RESNEST_CONFIGS, TINY, load_tool
from resnest_dense.engine import Trainer, load_config

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


def test_missing_input_is_named(demo, tmp_path):
    argv = ["--config-file", CONFIG, "--input", str(tmp_path / "nope.jpg"), "--output", "x"]
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        demo.main(argv + ["--allow-random-weights", "--opts", *[str(o) for o in TINY]])
