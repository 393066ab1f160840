"""Multi-process training on CPU (gloo, detectron2's ``launch``): synchronised norms, empty inputs.

* Two processes with 2 + 2 images give the gradients and BN statistics of one process with the
  same 4 images: the data stream makes the global batch independent of the world size, SyncBN
  becomes ``naiveSyncBN_N`` (all-reduced statistics) on CPU, and the RPN loss is normalised by a
  constant, so the two runs differ only by float rounding. detectron2's naive SyncBN keeps a
  biased running variance (``nn.BatchNorm2d``/``nn.SyncBatchNorm``: unbiased), so running
  variances are compared after the ``n / (n - 1)`` correction, n = values per channel.
* Mask R-CNN with one image per worker, one of them without objects (zero mask-head inputs on
  that worker), trains without hanging and its head norms hold identical statistics on both
  workers.
* ``tools/train_net.py --num-machines 2 --machine-rank R --dist-url tcp://...`` as two
  processes on this host.
* A NaN loss on one worker stops every worker with the named error (no hang).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import launch
from detectron2.layers import FrozenBatchNorm2d
from torch.nn.modules.batchnorm import _BatchNorm

from detection_helpers import (
    REPO,
    RESNEST_CONFIGS,
    TINY,
    TOY_PREFIX,
    register_test_toy_set,
    train_net_args,
)
from resnest_dense.engine import Trainer, setup

# Every test here starts two processes (or two train_net.py subprocesses) and trains.
pytestmark = pytest.mark.slow

# Tolerance of the 1-process vs 2-process comparison, elementwise |a - b| <= ATOL + RTOL * |b|
# with ATOL relative to the largest value of the model (float32 sums taken in another order;
# measured: max |a - b| = 2e-7 x the largest gradient, see docs/training.md).
RTOL, ATOL = 1e-4, 1e-6

# RPN-only detector (backbone + FPN + RPN) on 64x64 crops; RPN samples every anchor, so nothing
# depends on how the RNG is split across processes.
PROPOSAL_OPTS = [
    "MODEL.META_ARCHITECTURE", "ProposalNetwork", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 100000,
    "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", [64, 64],
    "INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 64,
    "SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_ITER", 1, "SOLVER.CHECKPOINT_PERIOD", 100,
    "SOLVER.MOMENTUM", 0.0, "SEED", 7, "DATASETS.TEST", (),
]  # fmt: skip


def _bn_modules(model):
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, _BatchNorm) and not isinstance(m, FrozenBatchNorm2d)
    }


def _train_and_dump(toy_root, config, opts, out_dir):
    """Train ``SOLVER.MAX_ITER`` iterations; save this rank's grads, norm buffers and counts."""
    from detectron2.utils import comm

    torch.set_num_threads(1 if comm.get_world_size() > 1 else 2)
    register_test_toy_set(toy_root)
    _register_empty_pair()
    cfg = setup(train_net_args(config, *TINY, *opts, "OUTPUT_DIR", out_dir))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    counts, mask_inputs = {}, []

    def count(name):
        def hook(module, inputs):
            x = inputs[0]
            counts.setdefault(name, []).append(x.numel() // max(1, x.shape[1]))

        return hook

    for name, m in _bn_modules(model).items():
        m.register_forward_pre_hook(count(name))
    if hasattr(model, "roi_heads") and hasattr(model.roi_heads, "mask_head"):
        model.roi_heads.mask_head.register_forward_pre_hook(
            lambda m, inputs: mask_inputs.append(int(inputs[0].shape[0]))
        )
    trainer.train()
    state = {
        "world_size": comm.get_world_size(),
        "norms": {n: type(m).__name__ for n, m in _bn_modules(model).items()},
        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        "buffers": {
            f"{n}.{b}": getattr(m, b).clone()
            for n, m in _bn_modules(model).items()
            for b in ("running_mean", "running_var")
        },
        "counts": counts,
        "mask_inputs": mask_inputs,
    }
    torch.save(state, os.path.join(out_dir, f"state_rank{comm.get_rank()}.pt"))


def _register_empty_pair():
    """``distpair_train``: one image with objects and one without, same aspect-ratio group."""
    if "distpair_train" in DatasetCatalog.list():
        return
    dicts = DatasetCatalog.get(f"{TOY_PREFIX}_train")
    group = lambda d: d["width"] > d["height"]  # noqa: E731
    empty = next(d for d in dicts if not d["annotations"])
    full = next(d for d in dicts if d["annotations"] and group(d) == group(empty))
    DatasetCatalog.register("distpair_train", lambda: [dict(full), dict(empty)])


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "toy")
    register_test_toy_set(root)
    DatasetCatalog.get(f"{TOY_PREFIX}_train")  # generate once, before workers start
    return root


def _launch(fn, n, *args):
    launch(fn, n, num_machines=1, machine_rank=0, dist_url="auto", args=args)


def test_two_processes_match_one(toy_root, tmp_path):
    config = RESNEST_CONFIGS["faster"]
    one, two = tmp_path / "one", tmp_path / "two"
    _train_and_dump(toy_root, config, PROPOSAL_OPTS, str(one))
    _launch(_train_and_dump, 2, toy_root, config, PROPOSAL_OPTS, str(two))
    ref = torch.load(one / "state_rank0.pt")
    ranks = [torch.load(two / f"state_rank{r}.pt") for r in range(2)]
    assert ref["world_size"] == 1 and ranks[0]["world_size"] == 2

    # SyncBN in the backbone and FPN became the all-reduced naive SyncBN in both workers.
    synced = [n for n, kind in ranks[0]["norms"].items() if kind == "NaiveSyncBatchNorm"]
    assert any(n.startswith("backbone.bottom_up") for n in synced)
    assert any(n.startswith("backbone.fpn_") for n in synced)
    assert set(ref["norms"]) == set(ranks[0]["norms"])

    # DDP averaged the gradients: both workers hold the same ones, equal to the 1-process ones.
    assert set(ref["grads"]) == set(ranks[0]["grads"]) and len(ref["grads"]) > 50
    scale = max(float(g.abs().max()) for g in ref["grads"].values())
    worst = max(float((ranks[0]["grads"][k] - g).abs().max()) for k, g in ref["grads"].items())
    for k, g in ref["grads"].items():
        torch.testing.assert_close(ranks[1]["grads"][k], ranks[0]["grads"][k])
        torch.testing.assert_close(ranks[0]["grads"][k], g, rtol=RTOL, atol=ATOL * scale)

    # Running statistics: identical on both workers (synchronised) and equal to one process's.
    momentum = 0.1
    worst_bn = 0.0
    bn_scale = max(float(v.abs().max()) for v in ref["buffers"].values())
    for key, value in ref["buffers"].items():
        torch.testing.assert_close(ranks[1]["buffers"][key], ranks[0]["buffers"][key])
        got = ranks[0]["buffers"][key]
        if key.endswith("running_var"):
            (n,) = ref["counts"][key.rsplit(".", 1)[0]]  # each norm runs once per step
            # running_var starts at 1: 1-proc = 0.9 + 0.1 * var * n/(n-1), 2-proc = 0.9 + 0.1 * var
            got = (1 - momentum) + (got - (1 - momentum)) * n / (n - 1)
        worst_bn = max(worst_bn, float((got - value).abs().max()))
        torch.testing.assert_close(got, value, rtol=RTOL, atol=ATOL * bn_scale)
    print(
        f"1 vs 2 processes: max |diff| gradients {worst / scale:.1e} x max |grad| ({scale:.1e}), "
        f"BN statistics {worst_bn / bn_scale:.1e} x max |stat| ({bn_scale:.1e})"
    )


def test_worker_without_objects(toy_root, tmp_path):
    """One image per worker, one without objects: no hang, synchronised head statistics."""
    opts = [
        "DATASETS.TRAIN", ("distpair_train",), "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 100, "SEED", 3, "DATASETS.TEST", (),
    ]  # fmt: skip
    _launch(_train_and_dump, 2, toy_root, RESNEST_CONFIGS["mask"], opts, str(tmp_path))
    ranks = [torch.load(tmp_path / f"state_rank{r}.pt") for r in range(2)]
    # Every iteration one worker had zero mask-head inputs (its image has no objects).
    assert [0 in pair for pair in zip(ranks[0]["mask_inputs"], ranks[1]["mask_inputs"])] == [
        True,
        True,
    ]
    heads = [k for k in ranks[0]["buffers"] if k.startswith("roi_heads.")]
    assert any("box_head" in k for k in heads) and any("mask_head" in k for k in heads)
    for key, value in ranks[0]["buffers"].items():
        torch.testing.assert_close(ranks[1]["buffers"][key], value, rtol=1e-5, atol=1e-6)
    for key in heads:
        assert ranks[0]["norms"][key.rsplit(".", 1)[0]] == "NaiveSyncBatchNorm"
        if key.endswith("running_mean"):
            assert ranks[0]["buffers"][key].abs().max() > 0, f"{key} never updated"
    assert (tmp_path / "model_final.pth").is_file()


def test_two_machines_command_line(toy_root, tmp_path):
    """``tools/train_net.py --num-machines 2 --machine-rank R --dist-url tcp://...``: two
    "machines" (processes on this host) with one CPU worker each train together."""
    from detectron2.data import MetadataCatalog
    from detectron2.engine.launch import _find_free_port

    meta = MetadataCatalog.get(f"{TOY_PREFIX}_train")
    opts = [
        *TINY, "DATASETS.COCO_FORMAT", [["machines_train", meta.json_file, meta.image_root]],
        "DATASETS.TRAIN", ("machines_train",), "DATASETS.TEST", (), "SOLVER.IMS_PER_BATCH", 4,
        "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 100, "OUTPUT_DIR", tmp_path,
    ]  # fmt: skip
    url = f"tcp://127.0.0.1:{_find_free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(REPO, "tools", "train_net.py")]
            + ["--config-file", os.path.join(REPO, "configs", RESNEST_CONFIGS["faster"])]
            + ["--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(rank)]
            + ["--dist-url", url]
            + [str(o) for o in opts],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for rank in range(2)
    ]
    try:
        errors = [p.communicate(timeout=240)[1].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, err in zip(procs, errors):
        assert p.returncode == 0, err[-3000:]
    assert (tmp_path / "model_final.pth").is_file()
    assert (tmp_path / "log.txt.rank1").is_file()
    log = (tmp_path / "log.txt").read_text()
    assert "World size: 2" in log
    # SyncBN in the YAML became the gloo-capable naive SyncBN in every worker.
    assert "Effective batch 4 images (2 per process), backbone norm naiveSyncBN_N" in log
    with open(tmp_path / "losses.jsonl") as f:
        assert [json.loads(line)["iteration"] for line in f] == [0, 1]


def _nan_on_rank1_and_report(toy_root, out_dir):
    """Rank 1's RPN box loss is NaN at iteration 1; each rank writes the error it raised."""
    from detectron2.modeling.proposal_generator.rpn import RPN
    from detectron2.utils import comm
    from detectron2.utils.events import get_event_storage

    torch.set_num_threads(1)
    losses = RPN.losses

    def nan_on_rank1(self, *args, **kwargs):
        out = losses(self, *args, **kwargs)
        if comm.get_rank() == 1 and get_event_storage().iter == 1:
            out["loss_rpn_loc"] = out["loss_rpn_loc"] * float("nan")
        return out

    RPN.losses = nan_on_rank1
    register_test_toy_set(toy_root)
    opts = ["SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 1]
    opts += ["DATASETS.TEST", (), "SEED", 1, "OUTPUT_DIR", out_dir]
    trainer = Trainer(setup(train_net_args(RESNEST_CONFIGS["faster"], *TINY, *opts)))
    trainer.resume_or_load(resume=False)
    try:
        trainer.train()
        message = "no error"
    except FloatingPointError as e:
        message = str(e)
    with open(os.path.join(out_dir, f"error_rank{comm.get_rank()}.txt"), "w") as f:
        f.write(message)


def test_nonfinite_loss_on_one_worker_stops_all(toy_root, tmp_path):
    _launch(_nan_on_rank1_and_report, 2, toy_root, str(tmp_path))
    for rank in range(2):
        message = (tmp_path / f"error_rank{rank}.txt").read_text()
        assert message.startswith("Non-finite loss at iteration 1: loss_rpn_loc ("), message
    # Only the checkpoint of iteration 0 exists: nothing was written after the failure.
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == ["model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"
