"""Bad inputs give one clear error before any work, never a plausible wrong number.

Weights (evaluation strict, training reports), CPU fallback, resume and divergence, the saved
config; each case asserts the error type, that the message names the file / key and what was
expected, and that no result file was written. Data checks: tests/test_data_validation.py;
demos: tests/test_detection_demo.py; reproduce.py: tests/test_reproduce.py.
"""

import json
import logging
import os

import pytest
import torch
import yaml
from detectron2.data import DatasetCatalog
from detectron2.modeling.proposal_generator.rpn import RPN

from detection_helpers import CONFIGS, RESNEST_CONFIGS, TINY, TOY_PREFIX, train_net_args
from resnest_dense.checkpoint import CheckpointMismatchError, CheckpointReadError, Checkpointer
from resnest_dense.engine import SETUP_ERRORS, StartupError, Trainer, load_config

CONFIG = RESNEST_CONFIGS["faster"]
NO_EVAL = ["DATASETS.TEST", (), "SEED", 3]

pytestmark = pytest.mark.usefixtures("toy_set")  # conftest.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_net):
    """A tiny Faster R-CNN trained for 2 iterations (its model_final.pth and output dir)."""
    out = tmp_path_factory.mktemp("trained")
    DatasetCatalog.get(f"{TOY_PREFIX}_train")
    train_net.main(train_net_args(CONFIG, *TINY, *NO_EVAL, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out))
    return out


def _eval(train_net, out, *opts, allow_random=False):
    return train_net.main(
        train_net_args(CONFIG, *TINY, "OUTPUT_DIR", out, *opts, eval_only=True,
                       allow_random=allow_random)
    )  # fmt: skip


# ------------------------------------------------------------------- 1. weights must fit


def _backbone_only(trained, tmp_path):
    state = torch.load(trained / "model_final.pth", map_location="cpu", weights_only=False)
    model = {k: v for k, v in state["model"].items() if k.startswith("backbone.")}
    torch.save({"model": model}, tmp_path / "backbone.pth")
    return tmp_path / "backbone.pth", "missing", "proposal_generator.rpn_head"


def _other_num_classes(trained, tmp_path):
    """The same detector trained for 2 classes (the data has 3)."""
    state = torch.load(trained / "model_final.pth", map_location="cpu", weights_only=False)
    model = dict(state["model"])
    for key, rows in (("cls_score", 3), ("bbox_pred", 8)):
        for part in ("weight", "bias"):
            name = f"roi_heads.box_predictor.{key}.{part}"
            model[name] = model[name][:rows]
    torch.save({"model": model}, tmp_path / "two_classes.pth")
    return tmp_path / "two_classes.pth", "wrong shape", "roi_heads.box_predictor.cls_score.weight"


def _other_architecture(trained, tmp_path):
    torch.save({"model": torch.nn.Linear(3, 2).state_dict()}, tmp_path / "linear.pth")
    return tmp_path / "linear.pth", "unexpected 2", "weight"


def _truncated(trained, tmp_path):
    data = (trained / "model_final.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.pth", "Cannot read checkpoint", "truncated"


@pytest.mark.parametrize(
    "make,error",
    [
        (_backbone_only, CheckpointMismatchError),
        (_other_num_classes, CheckpointMismatchError),
        (_other_architecture, CheckpointMismatchError),
        (_truncated, CheckpointReadError),
    ],
    ids=["backbone_only", "num_classes", "other_architecture", "truncated"],
)
def test_eval_only_refuses_weights_that_do_not_fit(train_net, trained, tmp_path, make, error):
    weights, kind, key = make(trained, tmp_path)
    out = tmp_path / "eval"
    with pytest.raises(error) as info:
        _eval(train_net, out, "MODEL.WEIGHTS", weights)
    message = str(info.value)
    assert kind in message and key in message, message
    assert str(weights) in message
    assert not (out / "results.json").exists()
    assert issubclass(error, SETUP_ERRORS)


def test_eval_only_refuses_empty_and_imagenet_weights(train_net, tmp_path):
    for weights, why in (("", "MODEL.WEIGHTS is empty"), ("resnest://resnest50", "ImageNet")):
        with pytest.raises(StartupError, match=why) as info:
            _eval(train_net, tmp_path, "MODEL.WEIGHTS", weights)
        assert "--allow-random-weights" in str(info.value)
    assert not (tmp_path / "results.json").exists()


def test_eval_only_of_a_segmenter_release_with_a_detector_config(train_net, tmp_path):
    with pytest.raises(StartupError, match="ade20k_segmenter but the config builds"):
        _eval(train_net, tmp_path, "MODEL.WEIGHTS", "resnest://deeplab_resnest50_ade")


def test_eval_only_with_allow_random_weights_runs(train_net, trained, tmp_path, caplog):
    weights, _, _ = _backbone_only(trained, tmp_path)
    caplog.set_level(logging.WARNING, logger="resnest_dense")
    results = _eval(train_net, tmp_path / "eval", "MODEL.WEIGHTS", weights, allow_random=True)
    assert "bbox" in results
    assert "as asked although missing" in caplog.text
    saved = json.load(open(tmp_path / "eval" / "results.json"))
    assert saved["weights"] == str(weights)


def test_eval_only_of_the_trained_model_is_clean(train_net, trained, tmp_path):
    results = _eval(train_net, tmp_path, "MODEL.WEIGHTS", trained / "model_final.pth")
    assert "bbox" in results and (tmp_path / "results.json").is_file()


def test_training_logs_what_fine_tuning_loaded_and_refuses_unreadable(
    train_net, trained, tmp_path, caplog
):
    weights, _, _ = _backbone_only(trained, tmp_path)
    caplog.set_level(logging.INFO, logger="resnest_dense")
    opts = [*TINY, *NO_EVAL, "SOLVER.MAX_ITER", 1, "MODEL.WEIGHTS", weights]
    train_net.main(train_net_args(CONFIG, *opts, "OUTPUT_DIR", tmp_path / "ft"))
    line = next(r.getMessage() for r in caplog.records if "for fine-tuning" in r.getMessage())
    assert line.startswith(f"Loaded {weights} for fine-tuning: missing ")
    assert "missing 32 (proposal_generator.rpn_head" in line and "unexpected 0" in line

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    opts[-1] = garbage
    with pytest.raises(CheckpointReadError, match="garbage.pth.*not a PyTorch checkpoint"):
        train_net.main(train_net_args(CONFIG, *opts, "OUTPUT_DIR", tmp_path / "bad"))
    assert not (tmp_path / "bad" / "last_checkpoint").exists()


# ------------------------------------------------------------------------- 5. CPU only


def test_cuda_config_falls_back_to_cpu_with_one_warning(caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    caplog.set_level(logging.WARNING, logger="resnest_dense")
    cfg = load_config(os.path.join(CONFIGS, CONFIG), [*TINY, "MODEL.DEVICE", "cuda"])
    assert cfg.MODEL.DEVICE == "cpu"
    warnings = [r for r in caplog.records if "CUDA is not available" in r.getMessage()]
    assert len(warnings) == 1 and "MODEL.DEVICE=cuda" in warnings[0].getMessage()


# ---------------------------------------------------------------- 6. resume, divergence


def _train(train_net, out, *opts, resume=False):
    args = train_net_args(CONFIG, *TINY, *NO_EVAL, *opts, "OUTPUT_DIR", out, resume=resume)
    return train_net.main(args)


@pytest.mark.slow
def test_resume_from_a_truncated_checkpoint_names_the_intact_one(train_net, tmp_path):
    _train(train_net, tmp_path, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2)
    # A checkpoint damaged after it was written (disk, copy): the tag names a bad file.
    last = tmp_path / "model_0000003.pth"
    last.write_bytes(last.read_bytes()[:1000])
    (tmp_path / "last_checkpoint").write_text("model_0000003.pth")
    with pytest.raises(CheckpointReadError) as info:
        _train(train_net, tmp_path, "SOLVER.MAX_ITER", 6, resume=True)
    message = str(info.value)
    assert str(last) in message and "model_0000001.pth" in message
    assert "echo model_0000001.pth > " in message


@pytest.mark.slow
def test_resume_with_a_changed_model_is_named_before_the_optimizer(train_net, tmp_path):
    _train(train_net, tmp_path, "SOLVER.MAX_ITER", 2)
    with pytest.raises(CheckpointMismatchError) as info:
        _train(train_net, tmp_path, "SOLVER.MAX_ITER", 4, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
               resume=True)  # fmt: skip
    message = str(info.value)
    assert "checkpoint to resume from" in message and "roi_heads.box_head.fc1.weight" in message
    assert "config changed" in message and "new OUTPUT_DIR" in message


@pytest.mark.slow
def test_detectron2_divergence_gets_the_named_error(train_net, tmp_path, monkeypatch):
    """Weights that became non-finite make detectron2's RPN raise "Training has diverged"
    inside the forward; the run stops with the project's message and no checkpoint of it."""
    forward = RPN.forward

    def diverge_at_2(self, *args, **kwargs):
        from detectron2.utils.events import get_event_storage

        if self.training and get_event_storage().iter == 2:
            with torch.no_grad():
                self.rpn_head.objectness_logits.weight.fill_(float("inf"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(RPN, "forward", diverge_at_2)
    with pytest.raises(FloatingPointError) as info:
        _train(train_net, tmp_path, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 1)
    message = str(info.value)
    assert message.startswith("Non-finite values at iteration 2: ")
    assert "Training has diverged" in message and "last checkpoint" in message
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    weights = torch.load(tmp_path / "model_0000001.pth", weights_only=False)["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_checkpointer_never_writes_non_finite_weights(tmp_path):
    model = torch.nn.Linear(3, 2)
    checkpointer = Checkpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_0000000")
    with torch.no_grad():
        model.bias[1] = float("nan")
    with pytest.raises(FloatingPointError, match=r"1 tensors of the model \(bias\)"):
        checkpointer.save("model_0000001")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000000.pth"]


# ------------------------------------------------------------- 8. docs say what code does


def test_saved_config_of_a_fork_yaml_describes_the_built_network(tmp_path, caplog):
    """A fork-style YAML (detectron2 builder name, RADIX 2, no DEEP_STEM): the saved config
    says deep stem / avd / avg_down, as built, and the switch warning reaches log.txt."""
    from resnest_dense.engine import argument_parser, setup

    fork = tmp_path / "fork.yaml"
    base = os.path.join(CONFIGS, "Base-RCNN-FPN-ResNeSt.yaml")
    fork.write_text(
        f'_BASE_: "{base}"\nMODEL:\n  BACKBONE:\n    NAME: "build_resnet_fpn_backbone"\n'
        "  RESNETS:\n    RADIX: 2\n    DEPTH: 14\n    DEEP_STEM: False\n    AVD: False\n"
        "    AVG_DOWN: False\n"
    )
    out = tmp_path / "out"
    args = argument_parser().parse_args(
        ["--config-file", str(fork)] + [str(o) for o in [*TINY, *NO_EVAL, "OUTPUT_DIR", out]]
    )
    cfg = setup(args)
    saved = yaml.safe_load(open(out / "config.yaml"))["MODEL"]
    assert saved["BACKBONE"]["NAME"] == "build_resnest_fpn_backbone"
    assert saved["RESNETS"]["DEEP_STEM"] and saved["RESNETS"]["AVD"]
    assert saved["RESNETS"]["AVG_DOWN"]
    model = Trainer.build_model(cfg)
    assert hasattr(model.backbone.bottom_up.stem, "conv1_3")  # the deep stem was built
    log = (out / "log.txt").read_text()
    assert "a config written for the detectron2-ResNeSt fork" in log


@pytest.mark.parametrize("purpose", ["train", "demo"])
def test_coco_format_data_missing(tmp_path, caplog, purpose):
    """Training needs the data (named error); a demo does not (class names come from the
    checkpoint), so the config of a run trained on data that is not on this machine works."""
    entry = [["gone_train", str(tmp_path / "train.json"), str(tmp_path / "images")]]
    opts = [*TINY, "DATASETS.COCO_FORMAT", entry, "DATASETS.TRAIN", ("gone_train",)]
    opts += ["DATASETS.TEST", ("gone_train",)]
    config = os.path.join(CONFIGS, CONFIG)
    if purpose == "train":
        with pytest.raises(FileNotFoundError) as info:
            load_config(config, opts)
        assert "annotation file" in str(info.value) and "train.json" in str(info.value)
        assert isinstance(info.value, StartupError)
    else:
        caplog.set_level(logging.WARNING, logger="resnest_dense")
        cfg = load_config(config, opts, purpose="demo", allow_random_weights=True)
        assert cfg.DATASETS.TEST == ("gone_train",)
        assert "of dataset 'gone_train' do(es) not exist; not registered" in caplog.text


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("unclosed.yaml", "MODEL:\n  WEIGHTS: [\n", ["is not valid YAML", "line 3"]),
        ("tab.yaml", "MODEL:\n\tWEIGHTS: ''\n", ["is not valid YAML", "line 2"]),
        ("unclosed.py", "x = 1\ny = (\n", ["cannot be loaded", "line 2", "never closed"]),
        ("imports.py", "import no_such_module\n", ["ModuleNotFoundError", "no_such_module"]),
    ],
)
@pytest.mark.parametrize("purpose", ["train", "demo"])
def test_malformed_config_file_is_named_before_any_work(tmp_path, name, text, expected, purpose):
    """A config file that does not parse is a start-up error naming the file and the line (the
    tools print it as "Refusing to ...", exit code 2), not a traceback."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(StartupError) as e:
        load_config(str(path), purpose=purpose)
    message = str(e.value)
    assert str(path) in message and all(x in message for x in expected), message
