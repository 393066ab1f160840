"""Gradient checkpointing gives the plain step's gradients and running statistics."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from resnest_dense import add_resnest_config
from resnest_dense.modeling.backbone.variants import variant_opts


@pytest.mark.parametrize(
    "norm,dropblock",
    [
        pytest.param("BN", 0.0, marks=pytest.mark.slow),
        pytest.param("FrozenBN", 0.0, marks=pytest.mark.slow),
        ("BN", 0.1),  # inner loop: replays both running statistics and DropBlock masks
    ],
)
def test_checkpointed_step_equals_plain(norm, dropblock):
    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list(variant_opts("resnest26d"))
    cfg.MODEL.BACKBONE.NAME = "build_resnest_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.DROPBLOCK_PROB = dropblock
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    plain = build_backbone(cfg).train()
    cfg.MODEL.RESNETS.GRAD_CHECKPOINT = True
    ckpt = build_backbone(cfg).train()
    ckpt.load_state_dict(plain.state_dict())
    assert all(b.grad_checkpoint for s in (ckpt.res2, ckpt.res5) for b in s)

    x = torch.randn(2, 3, 96, 96)
    results, calls = [], []
    for model in (plain, ckpt):
        torch.manual_seed(7)  # same DropBlock masks in both runs
        calls.append([])
        model.res3[0].conv1.register_forward_hook(lambda *_, c=calls[-1]: c.append(1))
        out = model(x)
        loss = sum(
            (v * torch.linspace(-1, 1, v.shape[1]).view(1, -1, 1, 1)).mean() for v in out.values()
        )
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((loss.detach(), grads, copy.deepcopy(model.state_dict())))
    (loss_a, grads_a, state_a), (loss_b, grads_b, state_b) = results
    # The checkpointed block ran its forward again during backward; the plain one did not.
    assert [len(c) for c in calls] == [1, 2]
    torch.testing.assert_close(loss_b, loss_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)
    # Running statistics are updated once per step, not once more during recomputation.
    for name in state_a:
        torch.testing.assert_close(state_b[name], state_a[name], msg=name)


def test_no_checkpoint_in_eval():
    cfg = add_resnest_config(get_cfg())
    cfg.merge_from_list(variant_opts("resnest14d") + ["MODEL.RESNETS.GRAD_CHECKPOINT", True])
    cfg.MODEL.BACKBONE.NAME = "build_resnest_backbone"
    model = build_backbone(cfg).eval()
    calls = []
    model.res3[0].conv1.register_forward_hook(lambda *_: calls.append(1))
    # With gradients enabled (as in a validation loss), eval mode still runs each block once.
    out = model(torch.randn(1, 3, 64, 64))
    assert out["res4"].shape == (1, 1024, 4, 4)
    out["res4"].sum().backward()
    assert len(calls) == 1
