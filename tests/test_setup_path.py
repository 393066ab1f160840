"""Every tool builds its config through the one set-up path.

``resnest_dense.config.get_resnest_cfg`` (keys, file, options, fork names; its ``merge_config``
is recorded here) is the config path of everything that reads a YAML file, and
``resnest_dense.config.get_lazy_cfg`` (recorded as called by ``load_config``) that of a
LazyConfig file; the tools that run a model on data go on through
``resnest_dense.engine.load_config``, whose start-up checks (``validate``, recorded with the
purpose) they cannot skip. Each tool is stopped right there.
"""

import importlib.util
import os

import pytest
from PIL import Image

import resnest_dense.config
import resnest_dense.engine.entry
from resnest_dense.engine import argument_parser
from detection_helpers import CONFIGS, REPO, RESNEST_CONFIGS, TINY, load_tool, train_net_args

CONFIG = os.path.join(CONFIGS, RESNEST_CONFIGS["mask"])
LAZY = os.path.join(CONFIGS, "lazy", "quick_schedules", "toy_mask_rcnn_S14_FPN.py")
SEMSEG = os.path.join(CONFIGS, "quick_schedules", "toy_deeplabv3_S14_OS8.yaml")


class _Stop(Exception):
    pass


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    merge = resnest_dense.config.merge_config

    def record_merge(cfg, config_file, opts=()):
        calls.append(("merge", os.path.basename(config_file or "")))
        return merge(cfg, config_file, opts)

    lazy = resnest_dense.engine.entry.get_lazy_cfg

    def record_lazy(config_file, overrides=()):
        calls.append(("lazy", os.path.basename(config_file)))
        return lazy(config_file, overrides)

    def record_validate(cfg, purpose="train", **kwargs):
        calls.append(("validate", purpose))
        raise _Stop

    monkeypatch.setattr(resnest_dense.config, "merge_config", record_merge)
    monkeypatch.setattr(resnest_dense.engine.entry, "get_lazy_cfg", record_lazy)
    monkeypatch.setattr(resnest_dense.engine.entry, "validate", record_validate)
    return calls


def _bench(name):
    path = os.path.join(REPO, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOLS = {
    "train_net train": (
        lambda: load_tool("train_net").main(train_net_args(CONFIG, *TINY)),
        "train",
    ),
    "train_net --eval-only": (
        lambda: load_tool("train_net").main(train_net_args(CONFIG, *TINY, eval_only=True)),
        "eval",
    ),
    "demo": (
        lambda: load_tool("demo").main(
            [
                "--config-file",
                CONFIG,
                "--input",
                "in.png",
                "--output",
                "x",
                "--opts",
                "MODEL.DEVICE",
                "cpu",
            ]
        ),
        "demo",
    ),
    "demo_semseg": (
        lambda: load_tool("demo_semseg").main(
            ["--config-file", SEMSEG, "--input", "in.png", "--output", "x"]
        ),
        "demo",
    ),
    "lazyconfig_train_net train": (
        lambda: load_tool("lazyconfig_train_net").main(
            argument_parser().parse_args(["--config-file", LAZY, "train.max_iter=1"])
        ),
        "train",
    ),
    "lazyconfig_train_net --eval-only": (
        lambda: load_tool("lazyconfig_train_net").main(
            argument_parser().parse_args(["--eval-only", "--config-file", LAZY])
        ),
        "eval",
    ),
    "visualize_data": (
        lambda: load_tool("visualize_data").main(
            ["--source", "annotation", "--config-file", CONFIG, "--output-dir", "x"]
        ),
        "train",
    ),
    "visualize_json_results": (
        lambda: load_tool("visualize_json_results").main(
            ["--config-file", CONFIG, "--output", "x"]
        ),
        "eval",
    ),
    "export_model": (
        lambda: load_tool("deploy/export_model").main(
            ["--config-file", CONFIG, "--output", "m.onnx", "MODEL.DEVICE", "cpu"]
        ),
        "export",
    ),
    "analyze_model": (
        lambda: load_tool("analyze_model").main(
            ["--tasks", "flop", "--config-file", CONFIG, "MODEL.DEVICE", "cpu"]
        ),
        "analyze",
    ),
    "reproduce --smoke": (
        lambda: load_tool("reproduce").main(["--smoke", "--only", "mask_rcnn_ResNeSt_50"]),
        "train",
    ),
    "reproduce --eval-released": (
        lambda: load_tool("reproduce").main(["--eval-released", "--only", "mask_rcnn_ResNeSt_50"]),
        "eval",
    ),
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tool_goes_through_load_config(recorded, tool, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "in.png")
    run, purpose = TOOLS[tool]
    with pytest.raises(_Stop):
        run()
    first = ("lazy", ".py") if tool.startswith("lazyconfig") else ("merge", ".yaml")
    assert recorded[0][0] == first[0] and recorded[0][1].endswith(first[1]), recorded
    assert recorded[-1] == ("validate", purpose), recorded


def test_benchmarks_build_configs_through_get_resnest_cfg(recorded):
    cfg = _bench("bench_detector").load_cfg(next(iter(_bench("bench_detector").CONFIGS)))
    assert recorded and recorded[0][0] == "merge", recorded
    assert cfg.MODEL.DEVICE == "cpu"
