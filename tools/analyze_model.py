#!/usr/bin/env python
"""FLOPs, activations, parameters and structure of a config's model (detectron2's
analyze_model.py for this project's YAML and LazyConfig files).

Examples::

    python tools/analyze_model.py --tasks flop parameter \\
        --config-file configs/COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml
    python tools/analyze_model.py --tasks flop --size 512 512 --output out/s50.json \\
        --config-file configs/ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml
    python tools/analyze_model.py --tasks flop activation --input images/*.jpg \\
        --config-file configs/lazy/quick_schedules/toy_mask_rcnn_S14_FPN.py

The model has random weights and runs on the CPU in one process (synchronised norms run as the
eval-mode BN they are); no dataset or weight file is needed. One multiply-add counts as one flop
(the papers' GFLOPs). Inputs: one synthetic image at the config's test size (a detector:
INPUT.MIN_SIZE_TEST x INPUT.MAX_SIZE_TEST; a semantic segmentor: one window of its test
procedure, TEST.SEM_SEG.CROP_SIZE, run as a single pass), ``--size H W``, or ``--input`` image
files resized by the config's test resize as the demos do (counts averaged). See
docs/backbones.md, "Model complexity".
"""

import argparse
import datetime
import logging
import sys
from typing import Dict, List, Optional

import numpy as np
from detectron2.utils.analysis import parameter_count_table
from detectron2.utils.logger import setup_logger

from resnest_dense.engine import SETUP_ERRORS, count_activations, count_flops, count_parameters
from resnest_dense.engine import load_config
from resnest_dense.engine.analysis import (
    CONVENTION,
    analysis_model,
    check_size,
    default_size,
    image_input,
    synthetic_input,
)
from resnest_dense.utils import list_image_inputs, read_image_bgr
from resnest_dense.utils.io import atomic_write_json

TASKS = ("flop", "activation", "parameter", "structure")
logger = logging.getLogger("resnest_dense.analyze_model")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML or .py")
    parser.add_argument(
        "--tasks", nargs="+", required=True, choices=TASKS, help="one or more of %(choices)s"
    )
    parser.add_argument(
        "--size", nargs=2, type=int, metavar=("H", "W"), help="one synthetic H x W image"
    )
    parser.add_argument(
        "--input", nargs="+", metavar="IMAGE", help="image files / folders / globs (averaged)"
    )
    parser.add_argument("--output", metavar="FILE.json", help="also write the numbers here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE / a.b=c overrides")
    return parser


def _mean(counts, table: str, key: str) -> float:
    return float(np.mean([getattr(c, table).get(key, 0.0) for c in counts])) / 1e9


def _flop_report(counts) -> Dict:
    totals = [c.total for c in counts]
    modules = sorted({k for c in counts for k in c.by_module})
    operators = sorted({k for c in counts for k in c.by_operator})
    skipped: Dict[str, int] = {}
    for c in counts:
        for k, v in c.skipped.items():
            skipped[k] = max(skipped.get(k, 0), v)
    return {
        "gflops_mean": float(np.mean(totals)) / 1e9,
        "gflops_std": float(np.std(totals)) / 1e9,
        "gflops_per_image": [t / 1e9 for t in totals],
        "gflops_by_module": {m: _mean(counts, "by_module", m) for m in modules},
        "gflops_by_operator": {o: _mean(counts, "by_operator", o) for o in operators},
        "skipped_operators": skipped,
        "boxes_per_image": [c.boxes for c in counts],
    }


def _log_flops(report: Dict, n: int) -> None:
    lines = [f"GFLOPs (1 multiply-add = 1 flop), mean of {n} input(s):", "| part | GFLOPs |"]
    lines.append("|---|---|")
    lines += [f"| {m} | {v:.2f} |" for m, v in report["gflops_by_module"].items()]
    lines.append(f"| total | {report['gflops_mean']:.2f} ± {report['gflops_std']:.2f} |")
    operators = report["gflops_by_operator"].items()
    lines.append("by operator: " + ", ".join(f"{k} {v:.2f}" for k, v in operators))
    if report["skipped_operators"]:
        lines.append("not counted (no flop handle): " + ", ".join(report["skipped_operators"]))
    boxes = [b for b in report["boxes_per_image"] if b]
    if boxes:
        counts = ", ".join(f"{b.get('proposals', '-')} / {b.get('detections', '-')}" for b in boxes)
        lines.append("proposals / detections per image: " + counts)
    logger.info("\n".join(lines))


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="resnest_dense")
    setup_logger(name="fvcore")
    try:
        check_size(args.size)
        if args.size and args.input:
            raise ValueError("--size and --input exclude each other: give one.")
        images = list_image_inputs(args.input) if args.input else []
        cfg = load_config(args.config_file, args.opts, purpose="analyze")
        size, size_reason = (tuple(args.size), "--size") if args.size else default_size(cfg)
        if images:
            inputs = [image_input(cfg, read_image_bgr(i.path)) for i in images]
            sources = [i.path for i in images]
        else:
            inputs = [synthetic_input(*size)]
            sources = [f"synthetic {size[0]}x{size[1]} ({size_reason})"]
    except SETUP_ERRORS + (KeyError, ValueError, OSError) as e:
        print(f"Refusing to analyze: {e}", file=sys.stderr)
        return 2
    model, notes = analysis_model(cfg)
    result = {
        "config_file": args.config_file,
        "opts": list(args.opts),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "convention": CONVENTION,
        "weights": "random (FLOPs and parameters do not depend on them; see notes)",
        "notes": notes,
        "inputs": [
            {"source": s, "size": list(x["image"].shape[-2:])} for s, x in zip(sources, inputs)
        ],
    }
    logger.info("Analyzing %s on %s; %s", args.config_file, "; ".join(sources), "; ".join(notes))
    for task in dict.fromkeys(args.tasks):
        if task == "flop":
            counts = [count_flops(model, [x], warn=i == 0) for i, x in enumerate(inputs)]
            result["flop"] = _flop_report(counts)
            _log_flops(result["flop"], len(inputs))
        elif task == "activation":
            per_image = [count_activations(model, [x]) for x in inputs]
            totals = [sum(c.values()) for c in per_image]
            result["activation"] = {
                "mactivations_mean": float(np.mean(totals)) / 1e6,
                "mactivations_std": float(np.std(totals)) / 1e6,
            }
            logger.info("Activations: %.1f ± %.1f million", *result["activation"].values())
        elif task == "parameter":
            params = count_parameters(model)
            result["parameter"] = {"total": params.pop(""), "by_module": params}
            logger.info("Parameters:\n%s", parameter_count_table(model, max_depth=2))
        else:
            logger.info("Model structure:\n%s", model)
    if args.output:
        atomic_write_json(args.output, result)
        logger.info("Wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
