#!/usr/bin/env python
"""How inference cost grows with input size and depth: backbones and Faster R-CNN.

For ResNeSt-50/101/200 and detectron2's ResNet-50/101 (the bottom-up networks and the full
Faster R-CNN FPN detectors of configs/COCO-Detection, random weights, eval mode, the inference
fast path, batch 1), measured in one run at input sizes of short side ``--sizes`` with the
COCO aspect 800:1216 (width rounded to a multiple of 32):

* backbone and detector latency (median of ``--repeats`` after one warm-up);
* backbone multiply-adds (fvcore) at each size;
* fitted growth per model: ``time = a * megapixels ** b`` (least squares in log-log) and
  ``time = c0 + c1 * megapixels`` (the fixed cost c0 is mostly the ROI heads, which see a
  fixed number of proposals at any size);
* against depth at 800x1216: time vs backbone multiply-adds, ``time = k * GMAC`` through the
  origin.

Before timing, each detector's fast path is checked against its plain path (FPN features, in
float64, where folding is exact to ~1e-13).

    python benchmarks/bench_scaling.py [--threads 2] [--repeats 3] [--sizes 320 512 800 1024]

Writes ``benchmarks/results/scaling.{md,json,png}``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector import (  # noqa: E402
    CONFIGS,
    _inputs,
    build_for_inference,
    check_fast_path,
    gmacs,
    median_time,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # label: bench_detector.CONFIGS key
    "R-50": "faster R50-FPN",
    "R-101": "faster R101-FPN",
    "S-50": "faster S50-FPN",
    "S-101": "faster S101-FPN",
    "S-200": "faster S200-FPN",
}
assert all(v in CONFIGS for v in MODELS.values())


def input_shape(short: int) -> tuple:
    """(height, width) with the 800:1216 aspect of COCO's test resolution, width % 32 == 0."""
    return short, int(round(short * 1216 / 800 / 32)) * 32


def power_fit(x, y) -> tuple:
    """``y = a * x ** b``: (a, b, R^2 in log space)."""
    lx, ly = np.log(x), np.log(y)
    b, la = np.polyfit(lx, ly, 1)
    resid = ly - (la + b * lx)
    r2 = 1 - resid.var() / ly.var() if ly.var() > 0 else 1.0
    return float(np.exp(la)), float(b), float(r2)


def affine_fit(x, y) -> tuple:
    """``y = c0 + c1 * x``: (c0, c1, R^2)."""
    c1, c0 = np.polyfit(x, y, 1)
    resid = np.asarray(y) - (c0 + c1 * np.asarray(x))
    r2 = 1 - resid.var() / np.var(y) if np.var(y) > 0 else 1.0
    return float(c0), float(c1), float(r2)


def measure(label: str, sizes, repeats: int) -> dict:
    from resnest_dense.utils import optimize_for_inference

    model = optimize_for_inference(build_for_inference(MODELS[label]))
    rows = []
    for short in sizes:
        h, w = input_shape(short)
        inputs = _inputs(h, w)
        x = torch.zeros(1, 3, h, w)
        with torch.inference_mode():
            backbone = median_time(lambda: model.backbone.bottom_up(x), repeats)
            detector = median_time(lambda: model(inputs), repeats)
        rows.append(
            {
                "short": short,
                "height": h,
                "width": w,
                "megapixels": h * w / 1e6,
                "backbone_s": backbone,
                "detector_s": detector,
                "backbone_gmac": gmacs(model.backbone.bottom_up, h, w),
            }
        )
        print(
            f"  {label} {h}x{w}: backbone {backbone:.3f} s, detector {detector:.3f} s", flush=True
        )
    return {"rows": rows}


def fits(result: dict) -> dict:
    mp = [r["megapixels"] for r in result["rows"]]
    out = {}
    for part in ("backbone", "detector"):
        t = [r[f"{part}_s"] for r in result["rows"]]
        a, b, r2p = power_fit(mp, t)
        c0, c1, r2a = affine_fit(mp, t)
        out[part] = {"a": a, "b": b, "r2_power": r2p, "c0": c0, "c1": c1, "r2_affine": r2a}
    return out


def render(results: dict, args, at: int) -> str:
    sizes = [r["short"] for r in next(iter(results.values()))["rows"]]
    shapes = ", ".join("x".join(map(str, input_shape(s))) for s in sizes)
    lines = [
        f"CPU, {args.threads} threads, fp32, torch {torch.__version__}, inference fast path, "
        f"batch 1, median of {args.repeats} after a warm-up; inputs {shapes}.",
        "",
        "### Time vs input size",
        "",
        "| model | part | " + " | ".join(f"{s} s" for s in sizes) + " | time ~ MP^b: b (R²) "
        "| time = c0 + c1·MP: c0 s, c1 s/MP (R²) |",
        "|---|---|" + "---|" * len(sizes) + "---|---|",
    ]
    for label, res in results.items():
        for part in ("backbone", "detector"):
            f = res["fits"][part]
            times = " | ".join(f"{r[f'{part}_s']:.2f}" for r in res["rows"])
            lines.append(
                f"| {label} | {part} | {times} | {f['b']:.2f} ({f['r2_power']:.3f}) "
                f"| {f['c0']:.2f}, {f['c1']:.2f} ({f['r2_affine']:.3f}) |"
            )
    h, w = input_shape(at)
    lines += [
        "",
        f"### Time vs depth at {h}x{w}",
        "",
        "| model | backbone GMAC | backbone s | ms per GMAC | detector s | GMAC vs S-50 "
        "| backbone time vs S-50 | detector time vs S-50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref = next(r for r in results["S-50"]["rows"] if r["short"] == at)
    depth = {}
    for label, res in results.items():
        r = next(r for r in res["rows"] if r["short"] == at)
        depth[label] = r
        lines.append(
            f"| {label} | {r['backbone_gmac']:.1f} | {r['backbone_s']:.2f} "
            f"| {1000 * r['backbone_s'] / r['backbone_gmac']:.1f} | {r['detector_s']:.2f} "
            f"| {r['backbone_gmac'] / ref['backbone_gmac']:.2f}x "
            f"| {r['backbone_s'] / ref['backbone_s']:.2f}x "
            f"| {r['detector_s'] / ref['detector_s']:.2f}x |"
        )
    g = np.array([r["backbone_gmac"] for r in depth.values()])
    t = np.array([r["backbone_s"] for r in depth.values()])
    k = float(g @ t / (g @ g))
    r2 = 1 - ((t - k * g) ** 2).sum() / ((t - t.mean()) ** 2).sum()
    lines += [
        "",
        f"Backbone time vs multiply-adds over the {len(depth)} backbones at {h}x{w}: time = "
        f"{1000 * k:.1f} ms x GMAC (R² {r2:.3f}), i.e. {1 / k:.1f} GMAC/s.",
    ]
    return "\n".join(lines)


def plot(results: dict, path: Path, at: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, res in results.items():
        mp = [r["megapixels"] for r in res["rows"]]
        (line,) = ax1.plot(mp, [r["detector_s"] for r in res["rows"]], "o-", label=f"{label} det")
        ax1.plot(mp, [r["backbone_s"] for r in res["rows"]], "s--", color=line.get_color())
        r = next(r for r in res["rows"] if r["short"] == at)
        ax2.plot(r["backbone_gmac"], r["backbone_s"], "s", color=line.get_color(), label=label)
        ax2.plot(r["backbone_gmac"], r["detector_s"], "o", color=line.get_color())
    ax1.set(xscale="log", yscale="log", xlabel="input megapixels", ylabel="seconds")
    ax1.set_title("Faster R-CNN (solid) and backbone (dashed)")
    ax1.legend(fontsize=8)
    h, w = input_shape(at)
    ax2.set(xlabel=f"backbone GMAC at {h}x{w}", ylabel="seconds")
    ax2.set_title("vs depth: backbone (squares), detector (circles)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 512, 800, 1024])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    if "S-50" not in args.models or 800 not in args.sizes or len(args.sizes) < 2:
        parser.error("--models must include S-50 and --sizes must include 800 and one more size")
    torch.set_num_threads(args.threads)

    results = {}
    for label in args.models:
        err = check_fast_path(MODELS[label])
        print(f"{label}: fast path vs plain, FPN features (float64), max relative diff {err:.1e}")
        if err > 1e-9:
            sys.exit(f"{label}: fast path differs from the plain path: not timing")
        results[label] = measure(label, sorted(args.sizes), args.repeats)
        results[label]["fits"] = fits(results[label])
    table = render(results, args, at=800)
    print(table)
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.md").write_text(table + "\n")
    (out / "scaling.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "scaling.png", at=800)
    print(f"wrote {out / 'scaling.md'}, scaling.json, scaling.png")


if __name__ == "__main__":
    main()
