"""Cityscapes through detectron2's builtin ``cityscapes_fine_sem_seg_{train,val}`` registration:
a tiny generated tree in Cityscapes' real layout, start-up checks that name the missing folder,
the evaluator choice, and a 2-iteration train + evaluation with our Cityscapes configs."""

import importlib.util
import json
import logging
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin import register_all_cityscapes
from detectron2.evaluation import SemSegEvaluator
from PIL import Image

from resnest_dense import get_resnest_cfg
from resnest_dense.engine import evaluation
from resnest_dense.engine.checks import check_dataset_files
from resnest_dense.engine.entry import load_config
from resnest_dense.errors import MissingFileError, StartupError

from detection_helpers import train_net_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "Cityscapes-SemanticSegmentation")
# Cityscapes label id of each train id 0..18 (cityscapesScripts helpers/labels.py): the
# *_labelIds.png files hold these, *_labelTrainIds.png the train ids.
TRAIN_ID_TO_ID = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
SPLITS = {"train": {"aachen": 3, "bochum": 1}, "val": {"frankfurt": 2}}


def write_cityscapes_tree(root, size=(64, 128)):
    """``root/cityscapes/{leftImg8bit,gtFine}/<split>/<city>/...`` as the real data set: per
    frame ``<city>_<seq>_<frame>_leftImg8bit.png`` and ``_gtFine_{labelTrainIds,labelIds,
    instanceIds}.png`` + ``_gtFine_polygons.json`` (detectron2's loader reads the size from it)."""
    rng = np.random.default_rng(0)
    h, w = size
    lut = np.full(256, 0, np.uint8)  # train id 255 (ignore) -> label id 0 (unlabeled)
    lut[: len(TRAIN_ID_TO_ID)] = TRAIN_ID_TO_ID
    for split, cities in SPLITS.items():
        for city, frames in cities.items():
            images = os.path.join(root, "cityscapes", "leftImg8bit", split, city)
            labels = os.path.join(root, "cityscapes", "gtFine", split, city)
            os.makedirs(images)
            os.makedirs(labels)
            for i in range(frames):
                stem = f"{city}_{i:06d}_000019"
                train_ids = np.full((h, w), 0, np.uint8)  # road below, sky above, a car
                train_ids[: h // 3] = 10
                train_ids[h // 2 : h // 2 + 10, 20 + 5 * i : 60 + 5 * i] = 13
                train_ids[0, :] = 255
                image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                image[train_ids == 10] += 150
                image[train_ids == 13, 0] += 180
                Image.fromarray(image).save(os.path.join(images, f"{stem}_leftImg8bit.png"))
                gt = os.path.join(labels, f"{stem}_gtFine_")
                Image.fromarray(train_ids).save(gt + "labelTrainIds.png")
                Image.fromarray(lut[train_ids]).save(gt + "labelIds.png")
                Image.fromarray(lut[train_ids].astype(np.uint16)).save(gt + "instanceIds.png")
                with open(gt + "polygons.json", "w") as f:
                    json.dump({"imgHeight": h, "imgWidth": w, "objects": []}, f)
    return os.path.join(root, "cityscapes")


def _cityscapes_names():
    return [n for n in DatasetCatalog.list() if n.startswith("cityscapes_fine_")]


@pytest.fixture
def cityscapes_root(tmp_path):
    """detectron2's builtin Cityscapes registration, pointed at ``tmp_path`` for the test (as
    ``DETECTRON2_DATASETS=tmp_path`` would at import), restored afterwards."""
    before = MetadataCatalog.get("cityscapes_fine_sem_seg_train").image_dir
    # image_dir is <root>/cityscapes/leftImg8bit/train/
    original = os.path.dirname(os.path.dirname(os.path.dirname(os.path.normpath(before))))

    def register(root):
        for name in _cityscapes_names():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_all_cityscapes(root)

    register(str(tmp_path))
    yield tmp_path
    register(original)
    assert MetadataCatalog.get("cityscapes_fine_sem_seg_train").image_dir == before


def test_registration_layout_and_metadata(cityscapes_root):
    write_cityscapes_tree(str(cityscapes_root))
    meta = MetadataCatalog.get("cityscapes_fine_sem_seg_val")
    assert meta.evaluator_type == "cityscapes_sem_seg" and meta.ignore_label == 255
    assert len(meta.stuff_classes) == 19 and meta.stuff_classes[13] == "car"
    dicts = DatasetCatalog.get("cityscapes_fine_sem_seg_train")
    assert len(dicts) == 4
    assert all(d["sem_seg_file_name"].endswith("_gtFine_labelTrainIds.png") for d in dicts)
    assert {(d["height"], d["width"]) for d in dicts} == {(64, 128)}


@pytest.mark.parametrize("missing", ["leftImg8bit", "gtFine"])
def test_startup_checks_name_the_missing_folder(cityscapes_root, missing):
    root = write_cityscapes_tree(str(cityscapes_root))
    os.rename(os.path.join(root, missing), os.path.join(root, missing + "_elsewhere"))
    config = os.path.join(CONFIGS, "deeplabv3_S_50_OS8_syncbn_80k.yaml")
    problems = check_dataset_files(get_resnest_cfg(config))
    assert len(problems) == 2 and all(isinstance(p, MissingFileError) for p in problems)
    field = "image_dir" if missing == "leftImg8bit" else "gt_dir"
    expected = os.path.join(root, missing, "train")
    assert f"{field} '{expected}" in str(problems[0])
    assert "cityscapes_fine_sem_seg_train" in str(problems[0])
    # The tools' set-up path stops on it, before building anything.
    with pytest.raises(StartupError, match=f"{field} '{expected}"):
        load_config(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"], purpose="train")


def test_evaluator_choice(cityscapes_root, monkeypatch, caplog):
    """SemSegEvaluator on the train ids (and a warning saying why) without a usable
    cityscapesscripts; detectron2's CityscapesSemSegEvaluator with one."""
    write_cityscapes_tree(str(cityscapes_root))
    cfg = get_resnest_cfg(os.path.join(CONFIGS, "deeplabv3_S_50_OS8_syncbn_80k.yaml"))
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "cityscapesscripts" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with caplog.at_level(logging.WARNING, logger=evaluation.__name__):
        evaluator = evaluation.build_evaluator(cfg, "cityscapes_fine_sem_seg_val")
    assert isinstance(evaluator, SemSegEvaluator)
    assert "cityscapesscripts is not installed" in caplog.text and "19 train ids" in caplog.text
    # Installed, but with a NumPy without in1d (2.4+): still the fallback, saying why.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.delattr(np, "in1d", raising=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=evaluation.__name__):
        evaluator = evaluation.build_evaluator(cfg, "cityscapes_fine_sem_seg_val")
    assert isinstance(evaluator, SemSegEvaluator) and "numpy.in1d" in caplog.text
    monkeypatch.setattr(evaluation, "cityscapes_scripts_problem", lambda: None)
    from detectron2.evaluation import CityscapesSemSegEvaluator

    assert isinstance(
        evaluation.build_evaluator(cfg, "cityscapes_fine_sem_seg_val"), CityscapesSemSegEvaluator
    )


# Tiny networks and images: a ResNeSt-14, 64 x 128 frames, 64 x 64 crops.
TINY = [
    "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", 14, "MODEL.RESNETS.STEM_WIDTH", 16,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.RESNETS.NORM", "BN",
    "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    "MODEL.SEM_SEG_HEAD.AUX_CONVS_DIM", 16, "MODEL.SEM_SEG_HEAD.LOW_LEVEL_CHANNELS", 8,
    "INPUT.BASE_SIZE", 128, "INPUT.BASE_SIZE_SHORT", 64, "INPUT.CROP.SIZE", [64, 64],
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 100,
    "DATALOADER.NUM_WORKERS", 0,
]  # fmt: skip
TEST_SIZES = {
    # Long side 128 at scale 1, covered by 96 x 96 sliding windows.
    "deeplabv3_S_50_OS8_syncbn_80k.yaml": ["TEST.SEM_SEG.BASE_SIZE", 128,
                                           "TEST.SEM_SEG.CROP_SIZE", 96],
    # The whole 64 x 128 frame, as the 2048 x 1024 one in the real config.
    "deeplabv3plus_S_101_OS8_syncbn_80k.yaml": ["INPUT.MIN_SIZE_TEST", 64,
                                                "INPUT.MAX_SIZE_TEST", 128],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(TEST_SIZES))
def test_train_net_two_iterations_and_evaluation(train_net, cityscapes_root, config):
    write_cityscapes_tree(str(cityscapes_root))
    out = cityscapes_root / "run"
    args = train_net_args(
        os.path.join(CONFIGS, config), *TINY, *TEST_SIZES[config], "OUTPUT_DIR", out
    )
    train_net.main(args)
    saved = json.load(open(out / "results.json"))
    result = saved["per_dataset"]["cityscapes_fine_sem_seg_val"]["sem_seg"]
    # Without cityscapesscripts: SemSegEvaluator's mIoU over the 19 train ids.
    key = "IoU" if evaluation.cityscapes_scripts_available() else "mIoU"
    assert 0.0 <= result[key] <= 100.0
    assert os.path.isfile(out / "model_final.pth")
