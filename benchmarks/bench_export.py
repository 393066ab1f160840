#!/usr/bin/env python
"""CPU latency of exported models in onnxruntime vs the PyTorch inference fast path.

Cases: Mask R-CNN S50-FPN at 800x1216 and DeepLabV3 S-50 (OS8, single scale, whole image) at
512x512, batch 1. Weights are random (latency does not depend on their values), but the
detector is given a trained detector's workload first (``bench_detector.build_for_inference``:
backbone BN statistics measured on two images, 1000 proposals, 100 detections reaching the
mask head), so both runtimes do the work a real model does.

Both sides run the same model object: PyTorch with ``optimize_for_inference`` (BN folded,
channels_last: what ``--eval-only`` and the demos run) and the ONNX file exported from it by
:func:`resnest_dense.export.export_model` (traced at the benchmark size), run by
:class:`resnest_dense.export.ExportedModel` (onnxruntime, CPU provider, the same number of
threads). Both timings include the postprocessing (boxes rescaled and masks pasted into the
image by detectron2's ``detector_postprocess``; logits cropped); "graph" is onnxruntime's
``session.run`` alone. Outputs are compared before timing. Median of ``--repeats`` runs after
one warm-up run.

    python benchmarks/bench_export.py [--threads 2] [--repeats 3] [--out benchmarks/results]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_detector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEEPLAB = "ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml"
# Export runs eval-mode BN in place of the synchronised norms (engine.checks, purpose "export").
BN_OPTS = ["MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "BN", "MODEL.ROI_BOX_HEAD.NORM", "BN"]
BN_OPTS += ["MODEL.ROI_MASK_HEAD.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN"]


def mask_rcnn_case():
    cfg = bench_detector.load_cfg("mask S50-FPN", BN_OPTS)
    model = bench_detector.build_for_inference("mask S50-FPN", BN_OPTS)
    return "Mask R-CNN S50-FPN", cfg, model, (800, 1216)


def deeplab_case():
    from detectron2.modeling import build_model

    from resnest_dense import get_resnest_cfg

    opts = ["MODEL.DEVICE", "cpu", "TEST.SEM_SEG.BASE_SIZE", 0, "TEST.SEM_SEG.CROP_SIZE", 0]
    cfg = get_resnest_cfg(str(ROOT / "configs" / DEEPLAB), opts + BN_OPTS)
    torch.manual_seed(0)
    return "DeepLabV3 S-50 OS8", cfg, build_model(cfg).eval(), (512, 512)


def compare(got: dict, want: dict) -> str:
    if "sem_seg" in want:
        equal = (got["sem_seg"].argmax(0) == want["sem_seg"].argmax(0)).double().mean()
        diff = (got["sem_seg"] - want["sem_seg"]).abs().max()
        return f"pixels equal {100 * equal:.3f}%, max logit diff {diff:.1e}"
    got, want = got["instances"], want["instances"]
    # build_for_inference scores every detection alike (zero class weights, one class bias),
    # so which of the tied candidates fill the 100 slots is up to the top-k of each runtime:
    # only the count and the score values are comparable here. Box and mask parity is
    # tested on models with distinct scores (tests/test_export.py, docs/deployment.md).
    scores = (got.scores.sort().values - want.scores.sort().values).abs().max()
    return f"{len(got)} vs {len(want)} detections (tied scores), sorted scores {scores:.1e}"


def run_case(case, threads: int, repeats: int, workdir: str) -> dict:
    from resnest_dense.export import ExportedModel, export_model
    from resnest_dense.utils import optimize_for_inference

    name, cfg, model, (h, w) = case()
    optimize_for_inference(model)
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = str(Path(workdir) / "model.onnx")
    t0 = time.perf_counter()
    export_model(model, cfg, path, fmt="onnx", method="tracing", sample_image=image)
    export_s = time.perf_counter() - t0
    exported = ExportedModel(path, num_threads=threads)
    tensor = torch.as_tensor(image.transpose(2, 0, 1).astype("float32"))
    inputs = [{"image": tensor, "height": h, "width": w}]
    with torch.inference_mode():
        check = compare(exported(inputs)[0], model(inputs)[0])
        pytorch = bench_detector.median_time(lambda: model(inputs), repeats)
    onnx = bench_detector.median_time(lambda: exported(inputs), repeats)
    graph = bench_detector.median_time(lambda: exported.run_graph(tensor), repeats)
    return {
        "model": name,
        "input": f"{h}x{w}",
        "pytorch_s": pytorch,
        "onnx_s": onnx,
        "graph_s": graph,
        "export_s": export_s,
        "check": check,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in (mask_rcnn_case, deeplab_case):
            rows.append(run_case(case, args.threads, args.repeats, workdir))
            print(rows[-1], flush=True)
    lines = [
        f"CPU, {args.threads} threads, median of {args.repeats} (after one warm-up), batch 1, "
        f"random weights; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}.",
        "",
        "| model | input | PyTorch fast path s | onnxruntime s | ORT vs PyTorch | ORT graph only s "
        "| export s | outputs (ORT vs PyTorch) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['pytorch_s']:.2f} | {r['onnx_s']:.2f} | "
            f"{r['pytorch_s'] / r['onnx_s']:.2f}x | {r['graph_s']:.2f} | {r['export_s']:.0f} | "
            f"{r['check']} |"
        )
    from resnest_dense.utils.io import atomic_write

    out = str(Path(args.out) / "export.md")
    text = "# Exported models: onnxruntime vs PyTorch fast path\n\n" + "\n".join(lines) + "\n"
    atomic_write(out, lambda f: f.write(text), mode="w")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
