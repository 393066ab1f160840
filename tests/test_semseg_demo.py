"""tools/demo_semseg.py on a folder of real files: unreadable images skipped and reported, output
names that never collide, inputs without images refused, and the class names and colours of a
model trained on custom data taken from its checkpoint."""

import logging
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from demo_helpers import BAD_INPUT_IDS, BAD_INPUTS, package_logs, write_bad_folder, write_image
from detection_helpers import load_tool, train_net_args
from resnest_dense.engine.class_names import CHECKPOINT_KEY
from segmentation_helpers import TOY_YAML

# Plain BN: a single CPU process; the toy config's test set is toy_sem_seg_val (4 classes).
OPTS = ["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN"]
WIDGET_CLASSES = ["background", "widget"]
WIDGET_COLOURS = [[10, 20, 30], [255, 0, 0]]
OUTPUTS = ("_legend.png", "_mask.png", "_overlay.png")


@pytest.fixture(scope="module")
def demo():
    return load_tool("demo_semseg")


def _run(demo, inputs, out, *opts, weights=None):
    argv = ["--config-file", TOY_YAML, "--input", *map(str, inputs), "--output", str(out)]
    argv += ["--allow-random-weights"] if weights is None else []
    opts = [str(o) for o in OPTS + list(opts)] + (["MODEL.WEIGHTS", weights] if weights else [])
    return demo.main(argv + ["--opts", *opts])


def _outputs(stems):
    return sorted(stem + suffix for stem in stems for suffix in OUTPUTS)


def test_unreadable_images_are_skipped_and_reported(demo, tmp_path):
    folder = tmp_path / "in"
    bad = write_bad_folder(folder)
    out = tmp_path / "out"
    with package_logs() as logs:
        assert _run(demo, [folder], out) == 1
    assert sorted(os.listdir(out)) == _outputs(["a", "d"])
    assert Image.open(out / "a_mask.png").size == (70, 50)
    warnings = [m for m in logs.messages(logging.WARNING) if m.startswith("Skipping")]
    assert len(warnings) == 2 and all(name in m for name, m in zip(bad, warnings))
    summary = logs.messages(logging.ERROR)
    assert len(summary) == 1 and summary[0].startswith("2 of 4 images skipped")


def test_outputs_never_overwrite_each_other(demo, tmp_path):
    sizes = {"a/x.png": (40, 50), "b/x.png": (44, 60), "b/x.jpg": (48, 70)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        write_image(tmp_path / name, h, w, seed=i)
    out = tmp_path / "out"
    assert _run(demo, [tmp_path / "a", tmp_path / "b"], out) == 0
    assert sorted(os.listdir(out)) == _outputs(["x", "x-2", "x-3"])
    # b/x.jpg sorts before b/x.png.
    expected = {"x": (50, 40), "x-2": (70, 48), "x-3": (60, 44)}
    assert {s: Image.open(out / f"{s}_mask.png").size for s in expected} == expected


@pytest.mark.parametrize(
    "make,item,message",
    BAD_INPUTS,
    ids=BAD_INPUT_IDS,
)
def test_inputs_without_images_are_refused(demo, tmp_path, capsys, make, item, message):
    make(tmp_path)
    out = tmp_path / "out"
    assert _run(demo, [write_image(tmp_path / "ok.png"), tmp_path / item], out) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / item) in err
    assert not out.exists()


def _register_widget_set(root) -> str:
    """4 images with a labelled square (class 1 "widget" on class 0 "background")."""
    name = "demo_widgets_sem_train"
    if name in DatasetCatalog.list():
        return name
    dicts = []
    for i in range(4):
        image = write_image(root / "images" / f"{i}.png", 96, 96, seed=i)
        label = np.zeros((96, 96), np.uint8)
        label[20 + 5 * i : 60 + 5 * i, 30:70] = 1
        label_file = str(root / "labels" / f"{i}.png")
        os.makedirs(os.path.dirname(label_file), exist_ok=True)
        Image.fromarray(label).save(label_file)
        dicts.append(
            {"file_name": image, "sem_seg_file_name": label_file, "height": 96, "width": 96}
        )
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(name).set(
        stuff_classes=list(WIDGET_CLASSES),
        stuff_colors=[list(c) for c in WIDGET_COLOURS],
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    return name


@pytest.fixture(scope="module")
def widget_model(train_net, tmp_path_factory):
    """The toy DeepLabV3 trained for 2 iterations on a custom 2-class set."""
    root = tmp_path_factory.mktemp("widgets_sem")
    dataset = _register_widget_set(root / "data")
    out = root / "run"
    opts = OPTS + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2, "DATASETS.TRAIN", (dataset,)]
    opts += ["DATASETS.TEST", (), "SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2]
    opts += ["DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", out]
    train_net.main(train_net_args(TOY_YAML, *opts))
    return out / "model_final.pth"


def test_checkpoint_stores_names_and_colours(widget_model):
    stored = torch.load(widget_model, weights_only=False)[CHECKPOINT_KEY]
    assert stored == {
        "dataset": "demo_widgets_sem_train",
        "stuff_classes": WIDGET_CLASSES,
        "stuff_colors": WIDGET_COLOURS,
    }


@pytest.mark.parametrize("test_set", ["('toy_sem_seg_val',)", "()"])
def test_legend_and_palette_come_from_the_checkpoint(
    demo, widget_model, tmp_path, monkeypatch, test_set
):
    """The config's test set (4 other classes, or none) does not relabel the model."""
    legends = []
    draw_legend = demo.draw_legend

    def spy(labels, names, palette):
        legends.append((list(names), list(palette)))
        return draw_legend(labels, names, palette)

    monkeypatch.setattr(demo, "draw_legend", spy)
    image = write_image(tmp_path / "in" / "w.png", 40, 40)
    out = tmp_path / "out"
    opts = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2, "DATASETS.TEST", test_set]
    assert _run(demo, [image], out, *opts, weights=str(widget_model)) == 0
    colours = [tuple(c) for c in WIDGET_COLOURS]
    assert legends == [(WIDGET_CLASSES, colours)]
    # The mask PNG's palette holds the stored colours as well.
    assert Image.open(out / "w_mask.png").getpalette()[:6] == [v for c in colours for v in c]
