"""Start-up validation, corrupt-image handling and CPU multi-process norms."""

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

from resnest_dense import add_resnest_config
from resnest_dense.engine.checks import (
    SafeMapper,
    StartupError,
    adapt_norms_for_device,
    validate,
)


def _cfg(**opts):
    cfg = add_resnest_config(get_cfg())
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.merge_from_list([x for item in opts.items() for x in item])
    return cfg


@pytest.mark.parametrize(
    "world,norm,ok",
    [
        (1, "BN", False),
        (1, "SyncBN", False),
        (1, "FrozenBN", True),
        (2, "naiveSyncBN", True),
        (2, "BN", False),
    ],
)
def test_one_image_per_worker(world, norm, ok):
    cfg = _cfg(**{"SOLVER.IMS_PER_BATCH": world, "MODEL.RESNETS.NORM": norm})
    if ok:
        validate(cfg, "train", world_size=world)
    else:
        with pytest.raises(
            StartupError, match=f"1 image per worker, but MODEL.RESNETS.NORM={norm}"
        ):
            validate(cfg, "train", world_size=world)


def test_unregistered_dataset_and_missing_weights(tmp_path):
    DatasetCatalog.register("mytoy_train_for_check", lambda: [])
    try:
        cfg = _cfg(**{"SOLVER.IMS_PER_BATCH": 2, "MODEL.WEIGHTS": str(tmp_path / "nope.pth")})
        cfg.DATASETS.TRAIN = ("mytoy_trian_for_check",)
        with pytest.raises(StartupError) as info:
            validate(cfg, "train", world_size=1)
        msg = str(info.value)
        assert "Dataset 'mytoy_trian_for_check' is not registered (named in DATASETS.TRAIN)" in msg
        assert "mytoy_train_for_check" in msg  # suggested
        assert f"MODEL.WEIGHTS='{tmp_path / 'nope.pth'}': no such file" in msg
    finally:
        DatasetCatalog.remove("mytoy_train_for_check")


def test_batch_not_divisible():
    with pytest.raises(
        StartupError, match="IMS_PER_BATCH=5 is not divisible by the number of processes .2."
    ):
        validate(_cfg(**{"SOLVER.IMS_PER_BATCH": 5}), "train", world_size=2)


def test_safe_mapper(tmp_path):
    from PIL import Image

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")

    def mapper(d):
        with Image.open(d["file_name"]) as im:
            im.load()
        return d

    with pytest.raises(
        RuntimeError, match=r"Cannot read training image .*bad.jpg.*SKIP_CORRUPT_IMAGES"
    ):
        SafeMapper(mapper)({"file_name": str(bad)})
    safe = SafeMapper(mapper, skip=True)
    assert safe({"file_name": str(bad)}) is None and safe.num_skipped == 1


@pytest.mark.parametrize(
    "device,world,expect",
    [("cpu", 2, "naiveSyncBN_N"), ("cpu", 1, "SyncBN"), ("cuda", 2, "SyncBN")],
)
def test_adapt_norms(device, world, expect):
    cfg = _cfg(
        **{
            "MODEL.DEVICE": device,
            "MODEL.RESNETS.NORM": "SyncBN",
            "MODEL.FPN.NORM": "SyncBN",
            "MODEL.ROI_BOX_HEAD.NORM": "SyncBN",
            "MODEL.ROI_MASK_HEAD.NORM": "GN",
        }
    )
    changed = adapt_norms_for_device(cfg, world_size=world)
    assert cfg.MODEL.RESNETS.NORM == expect and cfg.MODEL.FPN.NORM == expect
    assert cfg.MODEL.ROI_BOX_HEAD.NORM == expect and cfg.MODEL.ROI_MASK_HEAD.NORM == "GN"
    assert len(changed) == (3 if expect != "SyncBN" else 0)
