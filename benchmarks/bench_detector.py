#!/usr/bin/env python
"""Detector inference latency, training-step time and peak memory, ResNeSt vs ResNet.

Measured in one invocation, each case in its own subprocess (clean peak RSS), same threads:

* Faster R-CNN and Mask R-CNN inference at 800x1216 (batch 1): detectron2 R50-FPN and our
  S50-FPN, plain and with the inference fast path (``optimize_for_inference``: BN folding,
  channels_last). The fast path's outputs are checked against the plain path first.
* One training iteration (2 images of 512x768) of S-101 Faster R-CNN with and without
  ``MODEL.RESNETS.GRAD_CHECKPOINT``: time, peak memory, and the loss of both (must be equal).
* One training iteration of the S-101 backbone alone (2 x 512x768, train-mode BN, squared-output
  loss) in float32 and under bfloat16 autocast (what ``SOLVER.AMP.ENABLED`` runs on the CPU),
  each with and without checkpointing. (The whole detector under bfloat16 takes longer than 15
  minutes per step on an AVX2 CPU: its box head's 3x3 convs on 7x7 ROIs hit oneDNN's slow
  bfloat16 path, measured 200x slower than float32 for NCHW 3x3 convs.)
* The GEMM peak of this machine (2048^3 fp32 matmul) and the backbones' measured GFLOP/s.

FLOPs are counted with fvcore (``FlopCountAnalysis``, one multiply-add = 1 "flop", the
convention of the ResNet/ResNeSt papers' GFLOPs); GEMM peak is reported in the same unit.

    python benchmarks/bench_detector.py [--threads 2] [--repeats 3] [--out benchmarks/results]
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import PeakMemory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "faster R50-FPN": "COCO-Detection/faster_rcnn_R_50_FPN_syncbn_range-scale_1x.yaml",
    "faster S50-FPN": "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml",
    "mask R50-FPN": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_syncbn_1x.yaml",
    "mask S50-FPN": "COCO-InstanceSegmentation/mask_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml",
    "faster S101-FPN": "COCO-Detection/faster_rcnn_ResNeSt_101_FPN_syncbn_range-scale_1x.yaml",
    "faster R101-FPN": "COCO-Detection/faster_rcnn_R_101_FPN_syncbn_range-scale_1x.yaml",
    "faster S200-FPN": "COCO-Detection/faster_rcnn_ResNeSt_200_FPN_syncbn_range-scale_1x.yaml",
}


def load_cfg(name: str, opts=()):
    from resnest_dense import get_resnest_cfg

    return get_resnest_cfg(
        str(ROOT / "configs" / CONFIGS[name]), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts]
    )


def build(name: str, opts=()):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return build_model(load_cfg(name, opts))


@torch.no_grad()
def build_for_inference(name: str, opts=()):
    """``build`` in eval mode, with the work of a trained detector: 1000 proposals, 100
    detections per image.

    With random weights, the number of boxes depends on chance: deep backbones' features grow
    until the RPN's boxes are degenerate (measured 0 proposals for R-101 and 22 for S-200 at
    320x480, 1000 for R-50), and the class scores decide how many detections reach the mask
    head. So: the backbone's batch-norm statistics are measured on two random images (as precise
    BN does), the RPN's box deltas are zero (proposals = the top-scored anchors after NMS), and
    the box predictor gives every proposal its own box and class 1 with probability ~0.65.
    """
    model = build(name, opts)
    norms = [
        m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batch
    model.backbone.train()
    model.backbone(model.preprocess_image(_inputs(320, 480, n=2)).tensor)
    deltas = model.proposal_generator.rpn_head.anchor_deltas
    predictor = model.roi_heads.box_predictor
    for layer in (deltas, predictor.bbox_pred, predictor.cls_score):
        layer.weight.zero_()
        layer.bias.zero_()
    predictor.cls_score.bias[0] = 5.0  # class 1 of 80 (+ background): p = e^5 / (e^5 + 80)
    return model.eval()


def _inputs(h: int, w: int, n: int = 1):
    g = torch.Generator().manual_seed(0)
    return [
        {"image": (torch.rand(3, h, w, generator=g) * 255), "height": h, "width": w}
        for _ in range(n)
    ]


def gemm_peak(threads: int) -> float:
    """Best of 5 fp32 2048^3 matmuls, in multiply-adds per second (GMAC/s)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2048**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    times = sorted(_timed(fn) for _ in range(repeats))
    return times[repeats // 2]


def run_worker(script: str, *args) -> dict:
    """Run ``python script *args`` and return the JSON its last stdout line holds. The worker
    imports this checkout's resnest_dense, not another installed copy."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    proc = subprocess.run(
        [sys.executable, script, *map(str, args)], capture_output=True, text=True, env=env
    )
    if proc.returncode:
        sys.exit(f"benchmark worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gmacs(module: torch.nn.Module, h: int, w: int) -> float:
    """Multiply-adds (billions) of ``module`` on one ``h`` x ``w`` image, counted as
    ``tools/analyze_model.py`` counts (:func:`resnest_dense.engine.analysis.module_flops`)."""
    from resnest_dense.engine.analysis import module_flops

    return module_flops(module, h, w) / 1e9


def backbone_gmacs(name: str, h: int, w: int) -> float:
    return gmacs(build(name).eval().backbone.bottom_up, h, w)


def check_fast_path(name: str) -> float:
    """Max relative difference of the FPN features between plain and fast path, in float64.

    Folding is exact algebra, so in float64 the paths agree to ~1e-13; in float32 a deep
    random-weight network (S-200) accumulates rounding of ~3e-4 relative, which says nothing.
    """
    from resnest_dense.utils import optimize_for_inference

    model = build_for_inference(name).double()
    fast = optimize_for_inference(copy.deepcopy(model))
    x = torch.randn(1, 3, 320, 480, dtype=torch.float64)
    with torch.no_grad():
        a, b = model.backbone(x), fast.backbone(x)
    return max(((a[k] - b[k]).abs().max() / a[k].abs().max()).item() for k in a)


def infer_worker(name: str, fast: bool, repeats: int) -> dict:
    from resnest_dense.utils import optimize_for_inference

    model = build_for_inference(name)
    if fast:
        optimize_for_inference(model)
    inputs = _inputs(800, 1216)
    with torch.inference_mode(), PeakMemory() as mem:
        model(inputs)
        backbone = [
            _timed(lambda: model.backbone.bottom_up(torch.zeros(1, 3, 800, 1216)))
            for _ in range(repeats)
        ]
        full = [_timed(lambda: model(inputs)) for _ in range(repeats)]
    return {
        "latency_s": sorted(full)[repeats // 2],
        "backbone_s": sorted(backbone)[repeats // 2],
        "peak_mb": mem.mb,
    }


TRAIN_MODES = {  # label: (gradient checkpointing, bfloat16 autocast)
    "plain": (False, False),
    "ckpt": (True, False),
    "bf16": (False, True),
    "bf16+ckpt": (True, True),
}


def train_worker(name: str, mode: str, part: str) -> dict:
    """One forward + backward of the detector (``part`` "detector") or its bottom-up backbone
    ("backbone") in training mode; time, peak RSS growth and the loss."""
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    checkpoint, amp = TRAIN_MODES[mode]
    opts = ["MODEL.RESNETS.GRAD_CHECKPOINT", checkpoint, "MODEL.BACKBONE.FREEZE_AT", 0]
    model = build(name, opts).train()
    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(2):
        inst = Instances((512, 768))
        inst.gt_boxes = Boxes(
            torch.tensor([[50.0, 60.0, 300.0, 400.0], [400.0, 100.0, 700.0, 450.0]])
        )
        inst.gt_classes = torch.tensor([1, 5])
        batch.append({"image": torch.rand(3, 512, 768, generator=g) * 255, "instances": inst})
    if part == "backbone":
        images = model.preprocess_image(batch).tensor
        model = model.backbone.bottom_up

        def forward():
            return sum(v.float().square().mean() for v in model(images).values())

    else:

        def forward():
            return sum(model(batch).values())

    torch.manual_seed(0)
    with PeakMemory() as mem, EventStorage(0):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):  # as AutocastTrainer
            total = forward()
        total.backward()
        elapsed = time.perf_counter() - t0
    return {"step_s": elapsed, "peak_mb": mem.mb, "loss": total.item()}


def _sub(*args) -> dict:
    return run_worker(__file__, *args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--infer", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--train", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.infer:
        print(json.dumps(infer_worker(args.infer[0], args.infer[1] == "fast", args.repeats)))
        return
    if args.train:
        print(json.dumps(train_worker(*args.train)))
        return

    peak = gemm_peak(args.threads)
    print(f"GEMM peak (2048^3 fp32): {peak:.1f} GMAC/s = {2 * peak:.1f} GFLOP/s", flush=True)
    err = max(check_fast_path(n) for n in ("faster S50-FPN", "faster R50-FPN"))
    print(f"fast path vs plain, FPN features (float64): max relative difference {err:.2e}")
    if err > 1e-9:
        sys.exit("fast path differs from the plain path: not timing")

    rows = {}
    for name in ("faster R50-FPN", "faster S50-FPN", "mask R50-FPN", "mask S50-FPN"):
        for mode in ("plain", "fast"):
            rows[(name, mode)] = _sub(
                "--infer", name, mode, "--repeats", args.repeats, "--threads", args.threads
            )
            print(f"  {name} {mode}: {rows[(name, mode)]['latency_s']:.2f} s", flush=True)
    gmacs = {n: backbone_gmacs(n, 800, 1216) for n in ("faster R50-FPN", "faster S50-FPN")}
    train = {}
    for part, modes in (("detector", ("plain", "ckpt")), ("backbone", list(TRAIN_MODES))):
        for mode in modes:
            r = _sub("--train", "faster S101-FPN", mode, part, "--threads", args.threads)
            train[(part, mode)] = r
            print(f"  S-101 {part} train step {mode}: {r['step_s']:.2f} s", flush=True)

    lines = [
        f"CPU, {args.threads} threads, fp32, torch {torch.__version__}, median of "
        f"{args.repeats}; GEMM peak {peak:.1f} GMAC/s ({2 * peak:.1f} GFLOP/s).",
        "",
        "| model @ 800x1216 | path | latency s | vs R50 same path | bottom-up s | bottom-up GMAC/s "
        "| % of GEMM peak | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, mode in rows:
        r = rows[(name, mode)]
        ref = rows[(name.replace("S50", "R50"), mode)]
        key = "faster " + name.split(" ")[1]
        rate = gmacs[key] / r["backbone_s"]
        lines.append(
            f"| {name} | {mode} | {r['latency_s']:.2f} | {r['latency_s'] / ref['latency_s']:.2f}x "
            f"| {r['backbone_s']:.2f} | {rate:.1f} | {100 * rate / peak:.0f}% | {r['peak_mb']:.0f} |"
        )
    lines += [
        "",
        f"Backbone cost at 800x1216 (fvcore): R-50 {gmacs['faster R50-FPN']:.1f} GMAC, "
        f"S-50 {gmacs['faster S50-FPN']:.1f} GMAC (ratio "
        f"{gmacs['faster S50-FPN'] / gmacs['faster R50-FPN']:.2f}).",
        "",
        "| S-101 train step, 2 x 512x768 | step s | vs fp32 time | peak MB | vs fp32 peak "
        "| loss |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "plain": "fp32",
        "ckpt": "fp32, gradient checkpointing",
        "bf16": "bf16 autocast",
        "bf16+ckpt": "bf16 autocast + gradient checkpointing",
    }
    for (part, mode), r in train.items():
        ref = train[(part, "plain")]
        lines.append(
            f"| {'Faster R-CNN' if part == 'detector' else 'backbone'}: {labels[mode]} "
            f"| {r['step_s']:.2f} | {r['step_s'] / ref['step_s']:.2f}x | {r['peak_mb']:.0f} "
            f"| {r['peak_mb'] / ref['peak_mb']:.2f}x | {r['loss']:.6f} |"
        )
    lines.append("")
    for (part, mode), r in train.items():
        if mode != "plain":
            change = r["peak_mb"] / train[(part, "plain")]["peak_mb"] - 1
            lines.append(
                f"- {part} step, {labels[mode]}: peak memory {100 * change:+.0f}% vs fp32."
            )
    table = "\n".join(lines)
    print(table)
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "detector.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
