#!/usr/bin/env python
"""DCNv2 ResNeSt-50-FPN Faster R-CNN vs the plain one: CPU latency and deform_conv2d's share.

Both detectors are the configs of configs/COCO-Detection (the DCN one has modulated deformable
split-attention convs in res3-res5, 2 deformable groups), on one 800x1216 image, inference fast
path (``optimize_for_inference``), with a trained detector's load (``bench_detector``'s
``build_for_inference``: 1000 proposals, 100 detections). The offset convs get random weights
scaled to offsets / mask logits of 0.5 rms, so the sampling positions are fractional (a
zero-initialised offset conv would sample the regular grid).

Before timing, the DCN detector's fast path is checked against its plain path in float64. Then,
in one subprocess: a warm-up, ``--repeats`` timed forwards of each model, interleaved (median),
and one forward of each under ``torch.profiler``, whose CPU time split by operator gives the
share of ``torchvision::deform_conv2d`` (with its child operators).

    python benchmarks/bench_dcn.py [--threads 2] [--repeats 3] [--out benchmarks/results]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's resnest_dense
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
    """``build_for_inference`` plus random offset convs scaled to outputs of 0.5 rms.

    Unscaled random offset convs on a random network's growing features predict offsets of
    100+ pixels in res5 (measured), where sampling is chaotic; 0.5 px keeps the sampling
    positions fractional and near the grid.
    """
    model = bench_detector.build_for_inference(name)
    torch.manual_seed(1)
    hooks = []
    for module in model.modules():
        offset = getattr(module, "conv2_offset", None)
        if offset is not None:
            offset.weight.normal_()
            hooks.append(offset.register_forward_hook(_to_half_rms))
    # One pass in network order: each offset conv is scaled before the next one runs.
    model.backbone(model.preprocess_image(bench_detector._inputs(320, 480)).tensor)
    for hook in hooks:
        hook.remove()
    return model


def _to_half_rms(conv, inputs, output):
    factor = 0.5 / output.square().mean().sqrt().clamp_min(1e-12)
    conv.weight.mul_(factor)  # the bias is zero: the output scales by the same factor
    return output * factor


def check_fast_path(name: str) -> float:
    """Max relative difference of the FPN features, plain vs fast path, float64, 320x480."""
    import copy

    from resnest_dense.utils import optimize_for_inference

    model = build(name).double()
    fast = optimize_for_inference(copy.deepcopy(model))
    x = torch.randn(1, 3, 320, 480, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model.backbone(x), fast.backbone(x)
    return max(((a[k] - b[k]).abs().max() / a[k].abs().max()).item() for k in a)


def _profile(model, inputs) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(inputs)
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    deform = [e for e in events if e.key == DEFORM_OP]
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return {
        "profiled_s": total_us / 1e6,
        # Inclusive: torchvision's CPU kernel runs its im2col (the op's self time) plus aten::mm,
        # fill_ and copy_ children, which the profiler books as separate operators.
        "deform_s": sum(e.cpu_time_total for e in deform) / 1e6,
        "deform_self_s": sum(e.self_cpu_time_total for e in deform) / 1e6,
        "deform_calls": sum(e.count for e in deform),
        "top_ops": [(e.key, round(e.self_cpu_time_total / total_us, 3)) for e in top],
    }


def worker(repeats: int) -> dict:
    """Both models in one process, their timed forwards interleaved, so that the load of a
    shared machine changes during the run hits both alike."""
    from resnest_dense.utils import optimize_for_inference

    models = {name: optimize_for_inference(build(name)) for name in MODELS}
    for name, model in models.items():
        blocks = sum(1 for m in model.modules() if getattr(m, "conv2_offset", None) is not None)
        if ("DCN" in name) != (blocks > 0):
            # e.g. an installed resnest_dense without DCN, which ignores the DEFORM_* keys.
            sys.exit(f"{name}: {blocks} deformable blocks built by {resnest_dense_file()}")
    inputs = bench_detector._inputs(800, 1216)
    image = torch.zeros(1, 3, 800, 1216)
    times = {name: {"latency_s": [], "backbone_s": []} for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(inputs)  # warm-up
        for _ in range(repeats):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(inputs)
                times[name]["latency_s"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                model.backbone.bottom_up(image)
                times[name]["backbone_s"].append(time.perf_counter() - t0)
    results = {}
    for name, model in models.items():
        results[name] = {k: sorted(v)[repeats // 2] for k, v in times[name].items()}
        results[name]["all_latency_s"] = times[name]["latency_s"]
        results[name].update(_profile(model, inputs))
    return results


def resnest_dense_file() -> str:
    import resnest_dense

    return resnest_dense.__file__


def _sub(*args) -> dict:
    return bench_detector.run_worker(__file__, *args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.repeats)))
        return

    print(f"resnest_dense from {resnest_dense_file()}")
    err = check_fast_path("faster S50-FPN DCNv2")
    print(f"DCN fast path vs plain, FPN features (float64): max relative difference {err:.2e}")
    # Folding is exact algebra; the random network's features grow to ~1e3 in res4/res5 and its
    # rounding (~1e-16) is amplified there (7e-11 to 5e-10 measured; the plain S-50: 1.5e-12).
    if err > 1e-8:
        sys.exit("fast path differs from the plain path: not timing")
    results = _sub("--worker", "--threads", args.threads, "--repeats", args.repeats)
    for name, r in results.items():
        print(name, r, flush=True)

    base = results["faster S50-FPN"]
    lines = [
        f"CPU, {args.threads} threads, fp32, torch {torch.__version__}, inference fast path, "
        f"one 800x1216 image, median of {args.repeats} after a warm-up, the two models' "
        f"forwards interleaved in one process; fast path vs plain "
        f"(DCN, float64): max relative difference {err:.1e}.",
        "",
        "| model @ 800x1216 | latency s | vs S50-FPN | bottom-up s | vs S50-FPN | "
        "deform_conv2d s, with its children (calls) | share of the profiled forward | "
        "of which im2col (the op's self time) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        share = r["deform_s"] / r["profiled_s"]
        lines.append(
            f"| {name} | {r['latency_s']:.2f} | {r['latency_s'] / base['latency_s']:.2f}x | "
            f"{r['backbone_s']:.2f} | {r['backbone_s'] / base['backbone_s']:.2f}x | "
            f"{r['deform_s']:.2f} ({r['deform_calls']}) | {100 * share:.0f}% | "
            f"{r['deform_self_s']:.2f} s |"
        )
    dcn = results["faster S50-FPN DCNv2"]
    lines += [
        "",
        f"Profiled DCN forward: {dcn['profiled_s']:.2f} s (sum of self CPU times); top operators "
        "by self time: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in dcn["top_ops"]) + ".",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dcn.md").write_text("\n".join(lines) + "\n")
    (out / "dcn.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
