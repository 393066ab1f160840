#!/usr/bin/env python
"""DCNv2 ResNeSt-50-FPN Faster R-CNN vs the plain one: CPU latency and deform_conv2d's share.

Both detectors are the configs of configs/COCO-Detection (the DCN one has modulated deformable
split-attention convs in res3-res5, 2 deformable groups), on one 800x1216 image, inference fast
path (``optimize_for_inference``), with a trained detector's load (``bench_detector``'s
``build_for_inference``: 1000 proposals, 100 detections). The offset convs get small random
weights so the sampling positions are fractional, as in a trained model (a zero-initialised
offset conv would sample the regular grid; the op's cost does not depend on it).

Before timing, the DCN detector's fast path is checked against its plain path in float64. Then,
per model and in its own subprocess: a warm-up, ``--repeats`` timed forwards (median), and one
forward under ``torch.profiler`` whose self CPU time is split by operator, giving the share of
``torchvision::deform_conv2d``.

    python benchmarks/bench_dcn.py [--threads 2] [--repeats 3] [--out benchmarks/results]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_detector  # noqa: E402

MODELS = {
    "faster S50-FPN": "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml",
    "faster S50-FPN DCNv2": (
        "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.yaml"
    ),
}
bench_detector.CONFIGS.update(MODELS)
DEFORM_OP = "torchvision::deform_conv2d"


@torch.no_grad()
def build(name: str):
    """``build_for_inference`` plus random offset convs (std 0.01: offsets of ~0.1-1 px)."""
    model = bench_detector.build_for_inference(name)
    torch.manual_seed(1)
    for module in model.modules():
        offset = getattr(module, "conv2_offset", None)
        if offset is not None:
            offset.weight.normal_(std=0.01)
    return model


def check_fast_path(name: str) -> float:
    """Max relative difference of the FPN features, plain vs fast path, float64, 320x480."""
    import copy

    from resnest_dense.utils import optimize_for_inference

    model = build(name).double()
    fast = optimize_for_inference(copy.deepcopy(model))
    x = torch.randn(1, 3, 320, 480, dtype=torch.float64)
    with torch.no_grad():
        a, b = model.backbone(x), fast.backbone(x)
    return max(((a[k] - b[k]).abs().max() / a[k].abs().max()).item() for k in a)


def worker(name: str, repeats: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from resnest_dense.utils import optimize_for_inference

    model = optimize_for_inference(build(name))
    inputs = bench_detector._inputs(800, 1216)
    image = torch.zeros(1, 3, 800, 1216)
    times, backbone = [], []
    with torch.inference_mode():
        model(inputs)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.backbone.bottom_up(image)
            backbone.append(time.perf_counter() - t0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(inputs)
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    deform = [e for e in events if e.key == DEFORM_OP]
    deform_us = sum(e.self_cpu_time_total for e in deform)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    n_offset = sum(1 for m in model.modules() if getattr(m, "conv2_offset", None) is not None)
    return {
        "latency_s": sorted(times)[repeats // 2],
        "backbone_s": sorted(backbone)[repeats // 2],
        "profiled_s": total_us / 1e6,
        "deform_s": deform_us / 1e6,
        "deform_calls": sum(e.count for e in deform),
        "deform_blocks": n_offset,
        "top_ops": [(e.key, round(e.self_cpu_time_total / total_us, 3)) for e in top],
    }


def _sub(*args) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *map(str, args)], capture_output=True, text=True
    )
    if proc.returncode:
        sys.exit(f"benchmark worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return

    err = check_fast_path("faster S50-FPN DCNv2")
    print(f"DCN fast path vs plain, FPN features (float64): max relative difference {err:.2e}")
    if err > 1e-9:
        sys.exit("fast path differs from the plain path: not timing")
    results = {}
    for name in MODELS:
        results[name] = _sub("--worker", name, "--threads", args.threads, "--repeats", args.repeats)
        print(name, results[name], flush=True)

    base = results["faster S50-FPN"]
    lines = [
        f"CPU, {args.threads} threads, fp32, torch {torch.__version__}, inference fast path, "
        f"one 800x1216 image, median of {args.repeats} after a warm-up; fast path vs plain "
        f"(DCN, float64): max relative difference {err:.1e}.",
        "",
        "| model @ 800x1216 | latency s | vs S50-FPN | bottom-up s | vs S50-FPN | "
        "deform_conv2d s (calls) | deform_conv2d share of profiled CPU time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        share = r["deform_s"] / r["profiled_s"]
        lines.append(
            f"| {name} | {r['latency_s']:.2f} | {r['latency_s'] / base['latency_s']:.2f}x | "
            f"{r['backbone_s']:.2f} | {r['backbone_s'] / base['backbone_s']:.2f}x | "
            f"{r['deform_s']:.2f} ({r['deform_calls']}) | {100 * share:.0f}% |"
        )
    dcn = results["faster S50-FPN DCNv2"]
    lines += [
        "",
        f"Profiled DCN forward: {dcn['profiled_s']:.2f} s of self CPU time; top operators: "
        + ", ".join(f"{k} {100 * v:.0f}%" for k, v in dcn["top_ops"])
        + ".",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dcn.md").write_text("\n".join(lines) + "\n")
    (out / "dcn.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
