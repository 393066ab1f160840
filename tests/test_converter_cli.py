"""tools/convert_resnest_to_d2.py as a user runs it."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from resnest_dense import add_resnest_config
from resnest_dense.modeling.backbone.variants import variant_opts

timm = pytest.importorskip("timm")
ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "convert_resnest_to_d2.py"


def _run(*args):
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.parametrize("nested", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_convert_and_load_into_fpn(tmp_path, nested):
    src = tmp_path / "resnest14d.pth"
    sd = timm.create_model("resnest14d").state_dict()
    torch.save({"state_dict": sd} if nested else sd, src)
    dst = tmp_path / "resnest14d_d2.pth"
    proc = _run(src, dst, "--variant", "resnest14d")
    assert proc.returncode == 0, proc.stderr
    assert "INPUT.FORMAT: RGB" in proc.stdout and "STRIDE_IN_1X1: False" in proc.stdout

    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list(variant_opts("resnest14d"))
    cfg.MODEL.BACKBONE.NAME = "build_resnest_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    model = torch.nn.Module()
    model.backbone = build_backbone(cfg)
    ckpt = torch.load(dst, weights_only=False)
    result = model.load_state_dict(ckpt["model"], strict=False)
    assert not result.unexpected_keys
    # Only the FPN's own layers are left to train from scratch.
    assert result.missing_keys and all(
        not k.startswith("backbone.bottom_up.") for k in result.missing_keys
    )
    torch.testing.assert_close(
        model.backbone.bottom_up.res3[0].conv2.fc1.weight, sd["layer2.0.conv2.fc1.weight"]
    )


@pytest.mark.slow
def test_errors_are_clear_and_output_untouched(tmp_path):
    dst = tmp_path / "out.pth"
    proc = _run(tmp_path / "missing.pth", dst, "--variant", "resnest50")
    assert proc.returncode == 1 and "checkpoint file not found" in proc.stderr
    assert not dst.exists()

    src = tmp_path / "r14.pth"
    torch.save(timm.create_model("resnest14d").state_dict(), src)
    proc = _run(src, dst, "--variant", "resnest50")
    assert proc.returncode == 1 and "missing" in proc.stderr and "res2.1." in proc.stderr
    assert not dst.exists()

    dst.write_bytes(b"keep me")
    proc = _run(src, dst, "--variant", "resnest14d")
    assert proc.returncode == 1 and "exists" in proc.stderr
    assert dst.read_bytes() == b"keep me"

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    proc = _run(bad, tmp_path / "o2.pth", "--variant", "resnest14d")
    assert proc.returncode == 1 and "not a readable torch checkpoint" in proc.stderr
