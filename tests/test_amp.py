"""Mixed-precision training (``SOLVER.AMP``): autocast on the CPU, bfloat16 or float16.

Gradients are compared with float32 where the comparison is well conditioned (frozen batch
norm, as when fine-tuning from pre-trained weights). With training-mode BN at random
initialisation the first layers' gradients are ill-conditioned for *any* backbone (detectron2's
ResNet-50 shows it too: gradient cosine 0.1-0.3 between float32 and bfloat16 at 128 px), so
there the test asserts finite losses close to float32's.
"""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from detection_helpers import CONFIGS, RESNEST_CONFIGS, TINY, train_net_args
from resnest_dense import add_resnest_config
from resnest_dense.engine import Trainer, load_config, setup
from resnest_dense.engine.amp import AutocastTrainer, amp_dtype
from resnest_dense.engine import StartupError
from resnest_dense.modeling.backbone.variants import variant_opts


@pytest.mark.parametrize(
    "device,precision,expected",
    [
        ("cpu", "", torch.bfloat16),
        ("cuda", "", torch.float16),
        ("cuda:1", "", torch.float16),
        ("cpu", "float16", torch.float16),
        ("cuda", "bfloat16", torch.bfloat16),
    ],
)
def test_amp_dtype(device, precision, expected):
    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list(["MODEL.DEVICE", device, "SOLVER.AMP.PRECISION", precision])
    assert amp_dtype(cfg) == expected


@pytest.mark.usefixtures("toy_set")
def test_unknown_precision_is_a_startup_error():
    with pytest.raises(StartupError, match=r"SOLVER.AMP.PRECISION='fp8'.*bfloat16"):
        load_config(
            os.path.join(CONFIGS, RESNEST_CONFIGS["faster"]),
            TINY + ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "fp8"],
        )


def _backbone(variant: str, norm: str):
    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list(variant_opts(variant))
    cfg.MODEL.BACKBONE.NAME = "build_resnest_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    model = build_backbone(cfg).train()
    if norm == "FrozenBN":  # non-trivial frozen statistics, as in pre-trained weights
        gen = torch.Generator().manual_seed(3)
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
            elif name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))
    return model


def _step(model, x, targets, dtype):
    model.zero_grad()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = model(x)
    if dtype is not None:
        assert all(v.dtype == dtype for v in out.values())
    loss = sum(F.mse_loss(out[k].float(), targets[k]) for k in out)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "variant,norm,min_cosine",
    [
        ("resnest14d", "FrozenBN", 0.99),
        pytest.param("resnest50d_4s2x40d", "FrozenBN", 0.99, marks=pytest.mark.slow),
        # per-sample statistics: measured 0.985 (bf16)
        pytest.param("resnest26d", "GN", 0.95, marks=pytest.mark.slow),
        ("resnest14d", "BN", None),  # ill-conditioned at random init (module docstring)
    ],
)
def test_autocast_step_matches_float32(variant, norm, min_cosine, dtype):
    model = _backbone(variant, norm)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        shapes = {k: v.shape for k, v in model(x).items()}
    targets = {k: torch.randn(s) for k, s in shapes.items()}
    loss32, grads32 = _step(model, x, targets, None)
    loss16, grads16 = _step(model, x, targets, dtype)
    assert torch.isfinite(loss16)
    assert abs(loss16 - loss32) <= 1e-2 * loss32
    assert all(torch.isfinite(g).all() for g in grads16.values())
    if min_cosine is None:
        return
    for stage in ("stem", "res2", "res3", "res4", "res5"):
        names = [n for n in grads32 if n.startswith(stage) and grads32[n].norm() > 0]
        a = torch.cat([grads32[n].flatten() for n in names])
        b = torch.cat([grads16[n].flatten() for n in names])
        cosine = F.cosine_similarity(a, b, dim=0)
        assert cosine > min_cosine, (stage, cosine)


@pytest.mark.slow
@pytest.mark.usefixtures("toy_set")
@pytest.mark.parametrize("precision", ["", "float16"])
def test_train_net_with_amp(train_net, tmp_path, precision):
    config = RESNEST_CONFIGS["mask"]
    amp = ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", precision, "DATASETS.TEST", ()]
    runs = {}
    for name, opts in (("fp32", ["DATASETS.TEST", ()]), ("amp", amp)):
        out = tmp_path / name
        train_net.main(train_net_args(config, *TINY, "OUTPUT_DIR", out, "SEED", 5, *opts))
        runs[name] = [json.loads(line) for line in open(out / "losses.jsonl")]
        assert len(runs[name]) == 3
    for row32, row16 in zip(runs["fp32"], runs["amp"]):
        for key, value in row16.items():
            if key == "iteration":
                continue
            assert math.isfinite(value), (row16["iteration"], key)
    # Same data and seeds: the first iteration's losses agree to autocast's precision.
    first32, first16 = runs["fp32"][0], runs["amp"][0]
    assert first16["total_loss"] == pytest.approx(first32["total_loss"], rel=2e-2)

    # The checkpoint holds the trainer state (gradient scaler) and resumes into autocast.
    ckpt = torch.load(tmp_path / "amp" / "model_final.pth", weights_only=False)
    scaler_state = ckpt["trainer"]["_trainer"]["grad_scaler"]
    assert ("scale" in scaler_state) == (precision == "float16")  # a disabled scaler saves {}
    cfg = setup(
        train_net_args(
            config, *TINY, "OUTPUT_DIR", tmp_path / "amp", *amp, "SOLVER.MAX_ITER", 4, resume=True
        )
    )
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, AutocastTrainer)
    assert trainer._trainer.precision == amp_dtype(cfg)
    assert trainer._trainer.grad_scaler.is_enabled() == (precision == "float16")
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 3
    trainer.train()
    rows = [json.loads(line) for line in open(tmp_path / "amp" / "losses.jsonl")]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert math.isfinite(rows[-1]["total_loss"])
