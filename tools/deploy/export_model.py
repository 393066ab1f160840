#!/usr/bin/env python
"""Export a trained detector or DeepLabV3 to TorchScript or ONNX (detectron2's export_model.py).

Examples::

    python tools/deploy/export_model.py \\
        --config-file configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml \\
        --format onnx --export-method tracing --output output/export/model.onnx \\
        --sample-image datasets/toy_coco/val/000000.png \\
        MODEL.WEIGHTS output/toy_mask_rcnn_S14/model_final.pth
    python tools/train_net.py --config-file configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml \\
        --eval-only MODEL.WEIGHTS output/export/model.onnx

The weights are loaded strictly, synchronised norms run as the eval-mode BN they are, and with
``TEST.FAST_INFERENCE`` (default) the exported graph holds the folded batch norms. ``--output``
names the file (``.onnx`` / ``.ts``); a folder gets ``model.onnx`` / ``model.ts`` as in
detectron2. The file stores its preprocessing and class names, so ``tools/train_net.py
--eval-only``, ``tools/demo.py`` and ``tools/demo_semseg.py`` run it given as ``MODEL.WEIGHTS``.
See docs/deployment.md for what exports, with which tolerances, and the limits. ``--config-file``
may be a LazyConfig (``configs/lazy/...py``, options ``train.init_checkpoint=model.pth``): the
file is the one its YAML twin exports (docs/configs.md).
"""

import argparse
import os
import sys
from typing import List, Optional

from detectron2.utils.logger import setup_logger

from resnest_dense.engine import SETUP_ERRORS, build_predictor, load_config
from resnest_dense.export import (
    EXPORT_FORMATS,
    EXPORT_METHODS,
    check_export_request,
    check_exportable,
    export_model,
)
from resnest_dense.utils import list_image_inputs, read_image_bgr


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=sorted(EXPORT_FORMATS), default="onnx")
    parser.add_argument("--export-method", choices=EXPORT_METHODS, default="tracing")
    parser.add_argument("--output", required=True, help="the .onnx / .ts file, or a folder")
    parser.add_argument(
        "--sample-image", help="image traced through the model (default: a random image)"
    )
    parser.add_argument("--dump-ir", action="store_true", help="TorchScript: also dump the IR")
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="export even when MODEL.WEIGHTS does not hold a trained model",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config options")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="resnest_dense")
    output = args.output
    if os.path.isdir(output) or output.endswith(os.sep):
        output = os.path.join(output, "model" + EXPORT_FORMATS[args.format])
    try:
        check_export_request(args.format, args.export_method)
        sample = None
        if args.sample_image:
            sample = read_image_bgr(list_image_inputs([args.sample_image])[0].path)
        cfg = load_config(
            args.config_file,
            args.opts,
            purpose="export",
            allow_random_weights=args.allow_random_weights,
        )
        check_exportable(cfg, args.export_method, args.format)
        cfg.freeze()
        predictor = build_predictor(cfg, args.allow_random_weights)
    except SETUP_ERRORS as e:
        print(f"Refusing to export: {e}", file=sys.stderr)
        return 2
    export_model(
        predictor.model,
        cfg,
        output,
        fmt=args.format,
        method=args.export_method,
        sample_image=sample,
        class_metadata=predictor.metadata.as_dict(),
        dump_ir=args.dump_ir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
