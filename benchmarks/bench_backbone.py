#!/usr/bin/env python
"""Backbone speed and peak memory: our ResNeSt-50 vs timm ``resnest50d`` vs detectron2's R-50.

Every (model, input) pair runs in its own subprocess so peak memory (peak RSS growth during
the forwards, model building excluded) is not polluted by the other models; all pairs run in one invocation with
the same thread count, so the printed ratios compare like with like. Before timing, our
backbone's outputs are checked against timm's with the same (converted) weights.

    python benchmarks/bench_backbone.py [--threads 2] [--repeats 5] [--out benchmarks/results]
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
from peak_memory import PeakMemory  # noqa: E402

SIZES = {"224x224 b8": (8, 224, 224), "800x1216 b1": (1, 800, 1216)}
MODELS = [
    "resnest_dense S-50",
    "resnest_dense S-50 fast",
    "timm resnest50d",
    "timm resnest50d channels_last",
    "detectron2 R-50",
    "detectron2 R-50 fast",
]


def build(name: str) -> torch.nn.Module:
    """The backbone ``name``; "fast" = our inference fast path, "channels_last" = timm's."""
    if name.startswith("timm resnest50d"):
        import timm

        model = timm.create_model("resnest50d", features_only=True, out_indices=(1, 2, 3, 4))
        if name.endswith("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        return model
    from detectron2.modeling import build_backbone

    from resnest_dense import get_resnest_cfg

    cfg = get_resnest_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    if name.startswith("resnest_dense S-50"):
        from resnest_dense.modeling.backbone.variants import variant_opts

        cfg.merge_from_list(variant_opts("resnest50d"))
        cfg.MODEL.BACKBONE.NAME = "build_resnest_backbone"
    else:
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    model = build_backbone(cfg)
    if name.endswith("fast"):
        from resnest_dense.utils import optimize_for_inference

        optimize_for_inference(model)
    return model


def check_equal() -> float:
    """Max relative difference of res5, ours (plain and fast path) vs timm, same weights."""
    import timm

    from resnest_dense.checkpoint import convert_resnest_state_dict
    from resnest_dense.utils import optimize_for_inference

    ref = timm.create_model("resnest50d").eval()
    ours = build("resnest_dense S-50").eval()
    ours.load_state_dict(convert_resnest_state_dict(ref.state_dict())[0], strict=False)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        b = ref.forward_features(x)
        a = ours(x)["res5"]
        fast = optimize_for_inference(ours)(x)["res5"]
    return max(((y - b).abs().max() / b.abs().max()).item() for y in (a, fast))


def worker(name: str, size: str, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model = build(name).eval()
    batch, h, w = SIZES[size]
    x = torch.randn(batch, 3, h, w)
    if "channels_last" in name:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), PeakMemory() as mem:
        model(x)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    return {"model": name, "input": size, "img_per_s": batch / median, "peak_mb": mem.mb}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats, args.threads)))
        return
    torch.set_num_threads(args.threads)
    err = check_equal()
    print(f"output check: ResNeSt-50 res5 (plain, fast) vs timm, max relative diff {err:.2e}")
    if err > 1e-4:
        sys.exit("outputs differ: not timing")
    rows = []
    for size in SIZES:
        for name in MODELS:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    name,
                    size,
                    "--repeats",
                    str(args.repeats),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  measured {name} @ {size}: {rows[-1]['img_per_s']:.2f} img/s", flush=True)
    lines = [
        f"Backbone forward (res2-res5), fp32, eval, CPU, {args.threads} threads, "
        f"median of {args.repeats} runs, torch {torch.__version__}",
        "",
        "| input | model | img/s | vs timm | vs timm channels_last | vs d2 R-50 | peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        by = {r["model"]: r for r in rows if r["input"] == size}
        for name in MODELS:
            r = by[name]
            lines.append(
                f"| {size} | {name} | {r['img_per_s']:.2f} | "
                f"{r['img_per_s'] / by['timm resnest50d']['img_per_s']:.2f}x | "
                f"{r['img_per_s'] / by['timm resnest50d channels_last']['img_per_s']:.2f}x | "
                f"{r['img_per_s'] / by['detectron2 R-50']['img_per_s']:.2f}x | {r['peak_mb']:.0f} |"
            )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "backbone.md").write_text(table + "\n")
    (out / "backbone.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
