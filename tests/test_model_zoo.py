"""Model zoo: configs by name, the weight registry, offline/checksummed loading, resnest:// URIs.

Synthetic checkpoints stand in for the released files (nothing is downloaded): ImageNet ones
use timm's modules, whose names equal the official ResNeSt / PyTorch-Encoding names; Encoding
DeepLabV3 heads are laid out by hand from PyTorch-Encoding's ``deeplab.py`` / ``fcn.py``.
"""

import hashlib
import importlib
import json
import logging
import os
import re
import zipfile

import pytest
import timm
import torch
from detectron2.utils.file_io import PathHandler, PathManager
from iopath.common.file_io import PathManager as PathManagerBase

from resnest_dense import model_zoo
from resnest_dense.checkpoint import (
    CheckpointMismatchError,
    check_state_dict,
    convert_resnest_state_dict,
)
from resnest_dense.checkpoint.encoding import (
    convert_encoding_backbone_state_dict,
    convert_encoding_deeplab_state_dict,
    convert_encoding_segmentation_state_dict,
)
from resnest_dense.model_zoo import conversion, handler, registry, store

REGISTRY = registry.load_registry()
TOY_SEG = "quick_schedules/toy_deeplabv3_S14_OS8.yaml"
# timm model with the official (= PyTorch-Encoding) parameter names of each ImageNet entry.
TIMM_NAMES = {
    "resnest50": ("resnest50d", {}),
    "resnest101": ("resnest101e", {}),
    "resnest200": ("resnest200e", {}),
    "resnest269": ("resnest269e", {}),
    "resnet50s": ("resnet50c", {"stem_width": 64}),
    "resnet101s": ("resnet101c", {"stem_width": 64}),
}


def entries(kind):
    return [e for e in REGISTRY.values() if e.kind == kind]


def deep_slow(items):
    """101/200/269-layer entries marked slow: they repeat the 50-layer entries' code paths."""
    return [
        pytest.param(e, marks=pytest.mark.slow) if re.search(r"(101|200|269)", e.name) else e
        for e in items
    ]


def official_state(timm_name, meta=True, **kwargs):
    with torch.device("meta" if meta else "cpu"):
        return timm.create_model(timm_name, pretrained=False, **kwargs).state_dict()


def _bn(prefix, c):
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def encoding_head_shapes(nclass, in5=2048, in4=1024, aspp=None, aux=None):
    """Shapes of PyTorch-Encoding's DeepLabV3Head + FCNHead auxlayer (deeplab.py, fcn.py).

    ``aspp`` defaults to ``in5 // 8`` and ``aux`` to ``in4 // 4`` as in Encoding.
    """
    c = aspp or in5 // 8
    a = aux or in4 // 4
    s = {"head.aspp.b0.0.weight": (c, in5, 1, 1), **_bn("head.aspp.b0.1", c)}
    for i in (1, 2, 3):
        s.update({f"head.aspp.b{i}.0.weight": (c, in5, 3, 3), **_bn(f"head.aspp.b{i}.1", c)})
    s.update({"head.aspp.b4.gap.1.weight": (c, in5, 1, 1), **_bn("head.aspp.b4.gap.2", c)})
    s.update({"head.aspp.project.0.weight": (c, 5 * c, 1, 1), **_bn("head.aspp.project.1", c)})
    s.update({"head.block.0.weight": (c, c, 3, 3), **_bn("head.block.1", c)})
    s.update({"head.block.4.weight": (nclass, c, 1, 1), "head.block.4.bias": (nclass,)})
    s.update({"auxlayer.conv5.0.weight": (a, in4, 3, 3), **_bn("auxlayer.conv5.1", a)})
    s.update({"auxlayer.conv5.4.weight": (nclass, a, 1, 1), "auxlayer.conv5.4.bias": (nclass,)})
    return s


def encoding_fcn_head_shapes(nclass, in5=2048, in4=1024, aux=None):
    """Shapes of PyTorch-Encoding's FCN (encoding/models/sseg/fcn.py): ``FCNHead`` on res5 as
    ``head`` (in5 -> in5 // 4) and the ``auxlayer`` FCNHead on res4 (in4 -> in4 // 4)."""
    c, a = in5 // 4, aux or in4 // 4
    s = {"head.conv5.0.weight": (c, in5, 3, 3), **_bn("head.conv5.1", c)}
    s.update({"head.conv5.4.weight": (nclass, c, 1, 1), "head.conv5.4.bias": (nclass,)})
    s.update({"auxlayer.conv5.0.weight": (a, in4, 3, 3), **_bn("auxlayer.conv5.1", a)})
    s.update({"auxlayer.conv5.4.weight": (nclass, a, 1, 1), "auxlayer.conv5.4.bias": (nclass,)})
    return s


def encoding_deeplab_state(backbone, nclass, meta=True, model="deeplab", **head_kwargs):
    """An Encoding DeepLabV3 (or FCN) state dict: ``pretrained.`` backbone (with its fc) + head."""
    out = {"pretrained." + k: v for k, v in backbone.items()}
    shapes = encoding_head_shapes if model == "deeplab" else encoding_fcn_head_shapes
    for name, shape in shapes(nclass, **head_kwargs).items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.zeros((), dtype=torch.long, device="meta" if meta else "cpu")
        else:
            out[name] = torch.empty(shape, device="meta") if meta else torch.randn(shape)
    return out


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty cache, no other search dirs, no downloads, no extra registries."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("RESNEST_DENSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNEST_DENSE_OFFLINE", "1")
    monkeypatch.delenv("RESNEST_DENSE_WEIGHTS_DIRS", raising=False)
    monkeypatch.delenv("RESNEST_DENSE_REGISTRY", raising=False)
    return tmp_path


def write_registry(path, *entries_raw):
    """A registry file with the built-in sources and the given raw entries."""
    data = json.load(open(registry.REGISTRY_FILE))
    data["entries"] = list(entries_raw)
    path.write_text(json.dumps(data))
    return str(path)


# ---------------------------------------------------------------- registry data


def test_registry_has_the_released_families():
    kinds = {k: [e.name for e in entries(k)] for k in registry.KINDS}
    assert {"resnest50", "resnest101", "resnest200", "resnest269"} <= set(
        kinds["imagenet_backbone"]
    )
    assert len(kinds["coco_detector"]) == 17
    assert kinds["coco_panoptic"] == ["panoptic_ResNeSt_200_FPN_syncBN_tricks_3x"]
    assert {"deeplab_resnest50_ade", "deeplab_resnest101_ade", "deeplab_resnest269_ade",
            "fcn_resnest50_ade"} <= set(kinds["ade20k_segmenter"])  # fmt: skip
    assert REGISTRY["deeplab_resnest269_ade"].hash_value.startswith("0074dd10")
    assert REGISTRY["fcn_resnest50_ade"].format == "encoding_fcn"
    assert REGISTRY["resnest50"].file == "resnest50-528c19ca.pth"
    assert REGISTRY["mask_rcnn_ResNeSt_50_FPN_syncBN_1x"].file.endswith("-f442d863.pth")


@pytest.mark.parametrize("entry", list(REGISTRY.values()), ids=lambda e: e.name)
def test_registry_entry_is_consistent(entry):
    data = json.load(open(registry.REGISTRY_FILE))
    assert entry.source in data["sources"]
    # Published file names carry the first 8 hex digits of the published hash.
    m = re.match(r"^(.+)-([0-9a-f]{8})\.pth$", entry.file)
    assert m and entry.hash_value and entry.hash_value.startswith(m.group(2)), entry.file
    assert entry.name == m.group(1)
    expected_url_end = entry.file[:-4] + ".zip" if entry.archive == "zip" else entry.file
    assert entry.urls and all(u.startswith("https://") for u in entry.urls)
    assert all(u.endswith("/" + expected_url_end) for u in entry.urls)
    if entry.kind == "imagenet_backbone":
        assert entry.config is None and entry.variant in TIMM_NAMES
    else:
        model_zoo.get_config_file(entry.config)


def test_paper_results_configs_exist_and_pairs_resolve():
    data = json.load(
        open(os.path.join(os.path.dirname(registry.REGISTRY_FILE), "paper_results.json"))
    )
    rows = {(r["task"], r["backbone"]): r for r in data["rows"]}
    assert len(rows) == len(data["rows"]) == 29
    assert rows[("DeepLabV3", "S-269")]["metrics"] == {"pixAcc": 82.62, "mIoU": 47.6}
    assert rows[("FCN", "S-50")]["metrics"] == {"pixAcc": 80.18, "mIoU": 42.94}
    assert rows[("Faster R-CNN", "S-50")]["metrics"] == {"box_AP": 42.33}
    assert rows[("DeepLabV3", "S-200")]["metrics"] == {"pixAcc": 82.45, "mIoU": 48.36}
    for (task, _), row in rows.items():
        model_zoo.get_config_file(row["config"])
        if row["baseline"]:
            assert rows[(task, row["baseline"])]["backbone"].startswith("R-")
        assert set(row["metrics"]) <= set(data["metrics"])


# ------------------------------------------- every released entry fits its network


@pytest.mark.parametrize("entry", deep_slow(entries("imagenet_backbone")), ids=lambda e: e.name)
def test_imagenet_entry_layout_converts_to_its_backbone(entry):
    timm_name, kwargs = TIMM_NAMES[entry.name]
    state = official_state(timm_name, **kwargs)
    assert "fc.weight" in state
    converted, dropped = (
        convert_resnest_state_dict(state)
        if entry.format == "resnest_official"
        else convert_encoding_backbone_state_dict(state)
    )
    assert "fc.weight" in dropped
    check_state_dict(converted, conversion._variant_backbone_state(entry), what=entry.file)


@pytest.mark.parametrize("entry", deep_slow(entries("ade20k_segmenter")), ids=lambda e: e.name)
def test_encoding_deeplab_entry_layout_converts_to_its_config(entry):
    """Every Encoding segmentation entry (DeepLabV3, FCN): a synthetic checkpoint in the
    released layout converts to exactly the names and shapes of the model its config builds."""
    timm_name, kwargs = TIMM_NAMES[entry.variant]
    model = entry.format[len("encoding_") :]
    state = encoding_deeplab_state(official_state(timm_name, **kwargs), nclass=150, model=model)
    converted, dropped = convert_encoding_segmentation_state_dict(state, model)
    assert "pretrained.fc.weight" in dropped
    expected = conversion._config_model_state(entry.config)
    check_state_dict(converted, expected, what=entry.file)
    classifier = "block.4" if model == "deeplab" else "fcn.conv5.4"
    width = 256 if model == "deeplab" else 512
    assert converted[f"sem_seg_head.{classifier}.weight"].shape == (150, width, 1, 1)


def _fork_layout_facts(entry):
    """Names/shapes the detectron2-ResNeSt checkpoints have (fork naming, COCO: 80 classes)."""
    resnest = "_ResNeSt_" in entry.file
    cascade = "cascade" in entry.file or entry.kind == "coco_panoptic"  # Cascade heads
    stem = "stem.conv1_1.weight" if resnest else "stem.conv1.weight"
    box_head = "roi_heads.box_head.2" if cascade else "roi_heads.box_head"
    facts = {
        "backbone.bottom_up." + stem: None,
        "backbone.fpn_lateral2.norm.weight": (256,),
        box_head + ".conv4.norm.weight": (256,),
        box_head + ".fc1.weight": (1024, 256 * 7 * 7),
    }
    if resnest:
        facts["backbone.bottom_up.res2.0.conv2.fc1.weight"] = None
        facts["backbone.bottom_up.res3.0.shortcut.weight"] = None
    predictor = "roi_heads.box_predictor.2" if cascade else "roi_heads.box_predictor"
    facts[predictor + ".cls_score.weight"] = (81, 1024)
    if entry.file.startswith(("mask_", "panoptic_")):
        facts["roi_heads.mask_head.predictor.weight"] = (80, 256, 1, 1)
    if entry.kind == "coco_panoptic":
        # detectron2's SemSegFPNHead with SyncBN: 53 stuff classes + "things", 128 channels.
        facts["sem_seg_head.p2.0.norm.weight"] = (128,)
        facts["sem_seg_head.p5.2.weight"] = (128, 128, 3, 3)
        facts["sem_seg_head.predictor.weight"] = (54, 128, 1, 1)
    return facts


@pytest.mark.parametrize(
    "entry", deep_slow(entries("coco_detector") + entries("coco_panoptic")), ids=lambda e: e.name
)
def test_coco_entry_layout_loads_into_its_config(entry):
    expected = conversion._config_model_state(entry.config)
    for name, shape in _fork_layout_facts(entry).items():
        assert name in expected, f"{entry.config} lacks {name}"
        if shape is not None:
            assert tuple(expected[name].shape) == shape, name
    # A synthetic checkpoint with that layout loads with no missing / unexpected keys.
    from detectron2.modeling import build_model

    cfg = model_zoo.get_config(entry.config)
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(cfg)
    synthetic = {k: torch.empty_like(v) for k, v in expected.items()}
    result = model.load_state_dict(synthetic, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


# --------------------------------------------------------- loading and its errors


def test_local_path_is_used_as_is_offline(isolated):
    path = isolated / "mine.pth"
    torch.save({"model": {}}, path)
    assert conversion.resolve_weights(str(path)) == str(path)


def test_missing_file_says_where_to_put_it(isolated):
    with pytest.raises(store.WeightsNotFoundError) as e:
        conversion.resolve_weights("resnest://resnest50")
    msg = str(e.value)
    assert REGISTRY["resnest50"].urls[0] in msg
    assert os.path.join(str(isolated / "cache"), "resnest50-528c19ca.pth") in msg
    assert not (isolated / "cache").exists() or not os.listdir(isolated / "cache")


def test_unknown_name_lists_known_ones(isolated):
    with pytest.raises(store.WeightsNotFoundError, match="resnest50"):
        conversion.resolve_weights("resnest://resnest51")


def test_checksum_mismatch_names_file_expected_and_got(isolated):
    cache = isolated / "cache"
    cache.mkdir()
    bad = cache / "mask_rcnn_ResNeSt_50_FPN_syncBN_1x-f442d863.pth"
    bad.write_bytes(b"not the released file")
    with pytest.raises(store.ChecksumMismatchError) as e:
        conversion.resolve_weights("mask_rcnn_ResNeSt_50_FPN_syncBN_1x-f442d863.pth")
    msg = str(e.value)
    assert str(bad) in msg and "f442d863" in msg and sha256(bad) in msg


def test_file_in_weights_dirs_and_upstream_caches_is_found(isolated, monkeypatch):
    src = isolated / "x.pth"
    torch.save({"model": {"a": torch.ones(2)}}, src)
    raw = {
        "name": "toy_det", "file": "toy_det-" + sha256(src)[:8] + ".pth",
        "kind": "coco_detector", "urls": ["https://example.invalid/toy_det.pth"],
        "hash": {"algorithm": "sha256", "value": sha256(src)[:8]},
        "format": "detectron2", "config": TOY_SEG, "source": "resnest_d2_readme",
    }  # fmt: skip
    reg = registry.load_registry(write_registry(isolated / "reg.json", raw))
    hub = isolated / "home" / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    os.link(src, hub / raw["file"])
    assert conversion.resolve_weights("toy_det", registry=reg) == str(hub / raw["file"])
    mirror = isolated / "mirror"
    mirror.mkdir()
    os.link(src, mirror / raw["file"])
    monkeypatch.setenv("RESNEST_DENSE_WEIGHTS_DIRS", str(mirror))
    assert conversion.resolve_weights("toy_det", registry=reg) == str(mirror / raw["file"])


def test_entry_without_published_hash_loads_with_a_warning(isolated, caplog):
    cache = isolated / "cache"
    cache.mkdir()
    torch.save({"model": {}}, cache / "nohash.pth")
    raw = {
        "name": "nohash", "file": "nohash.pth", "kind": "coco_detector",
        "urls": ["https://example.invalid/nohash.pth"],
        "hash": {"algorithm": "sha256", "value": None},
        "format": "detectron2", "config": TOY_SEG, "source": "resnest_d2_readme",
    }  # fmt: skip
    reg = registry.load_registry(write_registry(isolated / "reg.json", raw))
    with caplog.at_level(logging.WARNING):
        assert conversion.resolve_weights("nohash", registry=reg) == str(cache / "nohash.pth")
    assert "no checksum was published" in caplog.text


@pytest.mark.parametrize("archive", [None, "zip"])
@pytest.mark.parametrize("good", [True, False])
def test_download_is_verified_and_atomic(isolated, good, archive):
    """file:// URLs exercise the download path without a network; zipped entries (as
    PyTorch-Encoding serves them) leave only the extracted, verified file in the cache."""
    src = isolated / "served.pth"
    torch.save({"model": {"w": torch.arange(3.0)}}, src)
    digest = sha256(src)[:8] if good else "00000000"
    file = f"dl-{digest}.pth"
    served = src
    if archive:
        served = isolated / file.replace(".pth", ".zip")
        with zipfile.ZipFile(served, "w") as zf:
            zf.write(src, arcname=file)
    raw = {
        "name": "dl", "file": file, "kind": "coco_detector", "archive": archive,
        "urls": [served.as_uri()], "hash": {"algorithm": "sha256", "value": digest},
        "format": "detectron2", "config": TOY_SEG, "source": "resnest_d2_readme",
    }  # fmt: skip
    reg = registry.load_registry(write_registry(isolated / "reg.json", raw))
    with pytest.raises(store.WeightsNotFoundError, match="downloads are off"):
        conversion.resolve_weights("dl", registry=reg)
    cache = isolated / "cache"
    if good:
        path = conversion.resolve_weights("dl", registry=reg, download=True)
        assert path == str(cache / raw["file"]) and sha256(path) == sha256(src)
        assert os.listdir(cache) == [raw["file"]]  # the archive is not kept
    else:
        with pytest.raises(store.ChecksumMismatchError, match="00000000"):
            conversion.resolve_weights("dl", registry=reg, download=True)
        assert os.listdir(cache) == []  # no partial or unverified file left behind


# ------------------------------------------------------------ resnest:// registration


class _OtherHandler(PathHandler):
    def _get_supported_prefixes(self):
        return [model_zoo.SCHEME]

    def _get_local_path(self, path, **kwargs):
        return "/elsewhere/" + path[len(model_zoo.SCHEME) :]


def test_handler_registration_is_idempotent_and_keeps_an_existing_handler(caplog):
    manager = PathManagerBase()
    with caplog.at_level(logging.WARNING):
        assert handler.register_handler(manager) is True
        assert handler.register_handler(manager) is False  # a second time changes nothing
    assert not caplog.records  # iopath warns when it overrides a handler: it did not
    with pytest.raises(store.WeightsNotFoundError, match="resnest51"):
        manager.get_local_path("resnest://resnest51")
    # Someone else's handler for the scheme, registered first, stays in charge.
    other = PathManagerBase()
    other.register_handler(_OtherHandler())
    assert handler.register_handler(other) is False
    assert other.get_local_path("resnest://resnest50") == "/elsewhere/resnest50"


def test_reloading_the_handler_module_keeps_resnest_uris_working(isolated, monkeypatch, caplog):
    cache = isolated / "cache"
    cache.mkdir()
    torch.save({"model": {"w": torch.ones(1)}}, cache / "mine.pth")
    raw = {
        "name": "mine", "file": "mine.pth", "kind": "coco_detector",
        "urls": ["https://example.invalid/mine.pth"], "hash": {"algorithm": "sha256",
        "value": sha256(cache / "mine.pth")}, "format": "detectron2", "config": TOY_SEG,
        "source": "resnest_d2_readme",
    }  # fmt: skip
    monkeypatch.setenv("RESNEST_DENSE_REGISTRY", write_registry(isolated / "reg.json", raw))
    with caplog.at_level(logging.WARNING):
        reloaded = importlib.reload(handler)
    assert not caplog.records
    assert reloaded.register_handler() is False  # detectron2's PathManager has ours already
    assert PathManager.get_local_path("resnest://mine") == str(cache / "mine.pth")
    assert PathManager.get_local_path("resnest://mine.pth") == str(cache / "mine.pth")


# ------------------------------------- end to end: resnest:// into real (toy) models


@pytest.fixture
def toy_registry(isolated, monkeypatch):
    """Zipped Encoding-layout toy DeepLabV3 + an official-layout ResNeSt-14 ImageNet file,
    registered through $RESNEST_DENSE_REGISTRY; returns the source state dicts."""
    cfg = model_zoo.get_config(TOY_SEG)
    assert cfg.MODEL.RESNETS.STEM_WIDTH == 16 and cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 64
    # The toy ResNeSt-14: stem width 16, res2 bottleneck width 16 (-> 64 channels out).
    backbone = official_state("resnest14d", meta=False, stem_width=16, channels=(16, 32, 64, 128))
    h = cfg.MODEL.SEM_SEG_HEAD
    seg = encoding_deeplab_state(
        backbone, nclass=h.NUM_CLASSES, meta=False, in5=512, in4=256, aspp=h.CONVS_DIM,
        aux=h.AUX_CONVS_DIM,
    )  # fmt: skip
    store = isolated / "store"
    store.mkdir()
    torch.save(seg, store / "seg.pth")
    seg_sha1 = hashlib.sha1(open(store / "seg.pth", "rb").read()).hexdigest()
    seg_file = f"deeplab_toy_ade-{seg_sha1[:8]}.pth"
    # Encoding serves zips holding the .pth; the user dropped the zip into a weights dir.
    with zipfile.ZipFile(store / seg_file.replace(".pth", ".zip"), "w") as zf:
        zf.write(store / "seg.pth", arcname=seg_file)
    imagenet = official_state("resnest14d", meta=False)  # the standard resnest14d widths
    torch.save(imagenet, store / "in.pth")
    in_file = f"resnest14d-{sha256(store / 'in.pth')[:8]}.pth"
    os.rename(store / "in.pth", store / in_file)
    raws = [
        {"name": "deeplab_toy_ade", "file": seg_file, "kind": "ade20k_segmenter",
         "urls": ["https://example.invalid/" + seg_file.replace(".pth", ".zip")], "archive": "zip",
         "hash": {"algorithm": "sha1", "value": seg_sha1}, "format": "encoding_deeplab",
         "variant": "resnest14d", "config": TOY_SEG, "source": "encoding_model_store"},
        {"name": "resnest14d", "file": in_file, "kind": "imagenet_backbone",
         "urls": ["https://example.invalid/" + in_file],
         "hash": {"algorithm": "sha256", "value": in_file[-12:-4]}, "format": "resnest_official",
         "variant": "resnest14d", "config": None, "source": "resnest_torch_models"},
    ]  # fmt: skip
    monkeypatch.setenv("RESNEST_DENSE_REGISTRY", write_registry(isolated / "reg.json", *raws))
    monkeypatch.setenv("RESNEST_DENSE_WEIGHTS_DIRS", str(store))
    return {"seg": seg, "imagenet": imagenet}


def test_encoding_deeplab_checkpoint_converts_and_loads_via_model_zoo(toy_registry, isolated):
    cfg = model_zoo.get_config(TOY_SEG, trained=True)
    assert cfg.MODEL.WEIGHTS == "resnest://deeplab_toy_ade"
    model = model_zoo.get(TOY_SEG, trained=True, device="cpu")  # strict: raises on any gap
    seg = toy_registry["seg"]
    assert torch.equal(model.sem_seg_head.block[4].weight, seg["head.block.4.weight"])
    assert torch.equal(
        model.sem_seg_head.auxlayer.conv5[1].running_var, seg["auxlayer.conv5.1.running_var"]
    )
    assert torch.equal(
        model.backbone.res3[0].conv2.fc1.weight, seg["pretrained.layer2.0.conv2.fc1.weight"]
    )
    assert torch.equal(model.backbone.stem.conv1_3.norm.weight, seg["pretrained.bn1.weight"])
    # Extracted and converted once, into the cache.
    cache = isolated / "cache"
    released = registry.get_entry("deeplab_toy_ade").file
    assert os.listdir(cache / "converted") == [released.replace(".pth", ".d2.pth")]
    assert released in os.listdir(cache)


def test_imagenet_entry_loads_into_a_dilated_backbone_by_suffix(toy_registry):
    from detectron2.modeling import build_model

    cfg = model_zoo.get_config(TOY_SEG)
    # The toy config's backbone at the standard resnest14d widths.
    cfg.merge_from_list(["MODEL.RESNETS.STEM_WIDTH", 32, "MODEL.RESNETS.RES2_OUT_CHANNELS", 256])
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = "resnest://resnest14d"
    model = build_model(cfg)
    report = model_zoo.load_checked(model, cfg.MODEL.WEIGHTS, strict=False)
    assert report.missing and all(k.startswith("sem_seg_head.") for k in report.missing)
    assert not report.unexpected and not report.wrong_shape
    src = toy_registry["imagenet"]
    assert torch.equal(model.backbone.stem.conv1_1.weight, src["conv1.0.weight"])
    assert torch.equal(
        model.backbone.res5[0].conv3.norm.running_mean, src["layer4.0.bn3.running_mean"]
    )
    with pytest.raises(CheckpointMismatchError, match="missing"):
        model_zoo.load_checked(model, cfg.MODEL.WEIGHTS, strict=True)


def test_encoding_converter_fails_loudly_on_unmatched_names():
    state = encoding_deeplab_state(official_state("resnest14d"), nclass=4)
    state["head.conv5.0.weight"] = torch.empty(1, device="meta")  # an EncNet/PSP-style head
    with pytest.raises(CheckpointMismatchError, match="head.conv5.0.weight"):
        convert_encoding_deeplab_state_dict(state)
    state = encoding_deeplab_state(official_state("resnest14d"), nclass=4)
    state["pretrained.layer1.0.se.fc.weight"] = torch.empty(1, device="meta")
    with pytest.raises(CheckpointMismatchError, match="se.fc"):
        convert_encoding_deeplab_state_dict(state)


def test_convert_encoding_tool_checks_against_config(toy_registry, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "convert_encoding_deeplab_to_d2",
        os.path.join(os.path.dirname(__file__), "..", "tools", "convert_encoding_deeplab_to_d2.py"),
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = tmp_path / "enc.pth"
    torch.save(toy_registry["seg"], src)
    out = tmp_path / "out.pth"
    assert tool.main([str(src), str(out), "--config", TOY_SEG]) == 0
    converted = torch.load(out)["model"]
    # Exactly the toy config's names and shapes, holding the source checkpoint's values.
    check_state_dict(converted, conversion._config_model_state(TOY_SEG))
    seg = toy_registry["seg"]
    assert torch.equal(
        converted["sem_seg_head.aspp.b4.gap.1.weight"], seg["head.aspp.b4.gap.1.weight"]
    )
    assert torch.equal(
        converted["backbone.res5.0.conv2.fc2.bias"], seg["pretrained.layer4.0.conv2.fc2.bias"]
    )
    # The real ADE20K config has 150 classes and 256/256 head widths: shapes must not fit.
    assert (
        tool.main(
            [
                str(src),
                str(tmp_path / "o2.pth"),
                "--config",
                "ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml",
            ]
        )
        == 1
    )
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "o2.pth").exists()


def test_get_config_file_errors_list_available_configs():
    with pytest.raises(RuntimeError, match="toy_deeplabv3_S14_OS8"):
        model_zoo.get_config_file("COCO-Detection/nope.yaml")
    with pytest.raises(RuntimeError, match="No released trained model"):
        model_zoo.get_config(TOY_SEG, trained=True)
    cfg = model_zoo.get_config(
        "ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml", trained=True
    )
    assert cfg.MODEL.WEIGHTS == "resnest://deeplab_resnest50_ade"
