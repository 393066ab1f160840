"""Test-time augmentation (``TEST.AUG``, detectron2's ``GeneralizedRCNNWithTTA``) in --eval-only."""

import json
import os

import pytest

from detection_helpers import CONFIGS, RESNEST_CONFIGS, TINY, train_net_args
from resnest_dense.engine import load_config
from resnest_dense.errors import StartupError

pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py

TTA = ["TEST.AUG.ENABLED", True, "TEST.AUG.MIN_SIZES", (64, 96), "TEST.AUG.MAX_SIZE", 160]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["faster", "cascade_mask"])
def test_eval_only_reports_plain_and_tta_results(family, train_net, tmp_path):
    config = RESNEST_CONFIGS[family]
    out = tmp_path / "run"
    train_net.main(
        train_net_args(config, *TINY, "SOLVER.MAX_ITER", 2, "DATASETS.TEST", (), "OUTPUT_DIR", out)
    )
    ev = tmp_path / "eval"
    weights = str(out / "model_final.pth")
    args = train_net_args(
        config, *TINY, *TTA, "OUTPUT_DIR", ev, "MODEL.WEIGHTS", weights, eval_only=True
    )
    results = train_net.main(args)
    tasks = {"bbox", "segm"} if "mask" in family else {"bbox"}
    assert set(results) == tasks | {t + "_TTA" for t in tasks}
    for task in tasks:
        assert {"AP", "AP50"} <= set(results[task + "_TTA"])
    saved = json.load(open(ev / "results.json"))["results"]
    assert set(saved) == set(results)
    assert (ev / "inference_TTA" / "coco_instances_results.json").is_file()


def test_tta_on_a_segmentation_config_is_refused_at_start_up():
    config = os.path.join(
        CONFIGS, "ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml"
    )
    opts = ["TEST.AUG.ENABLED", True, "DATASETS.TRAIN", (), "DATASETS.TEST", ()]
    with pytest.raises(StartupError, match="TEST.SEM_SEG.SCALES"):
        load_config(config, opts, purpose="eval", allow_random_weights=True)


def test_tta_on_panoptic_fpn_is_skipped_with_a_warning(caplog):
    """detectron2's TTA wrapper cannot call PanopticFPN.inference: evaluate without it."""
    import logging

    from resnest_dense.engine import Trainer

    config = os.path.join(CONFIGS, "quick_schedules/toy_panoptic_fpn_S14.yaml")
    cfg = load_config(config, ["TEST.AUG.ENABLED", True], purpose="eval", allow_random_weights=True)
    with caplog.at_level(logging.WARNING):
        assert Trainer.test_with_TTA(cfg, model=None) == {}
    assert "cannot wrap PanopticFPN" in caplog.text
