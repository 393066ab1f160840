#!/usr/bin/env python
"""Convert a PyTorch-Encoding DeepLabV3 or FCN checkpoint (ADE20K, PASCAL Context) to detectron2.

Example:
    python tools/convert_encoding_deeplab_to_d2.py deeplab_resnest50_ade-2225f09d.pth \
        deeplab_resnest50_ade_d2.pth \
        --config ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml
    python tools/convert_encoding_deeplab_to_d2.py fcn_resnest50_ade-4aba491a.pth \
        fcn_resnest50_ade_d2.pth --model fcn \
        --config ADE20K-SemanticSegmentation/fcn_S_50_OS8_syncbn_120ep.yaml

With --config the result is checked against the model of that config (names and shapes must
match exactly) before it is written. Evaluate it with:
    python tools/train_net.py --config-file configs/<config> --eval-only MODEL.WEIGHTS <output>
(or skip this tool: MODEL.WEIGHTS resnest://deeplab_resnest50_ade converts and caches it).
The PASCAL Context files (deeplab_resnest*_pcontext-*.pth, 59-class heads) go with the configs
in PascalContext-SemanticSegmentation/.
"""

import argparse
import logging
import os
import sys

import torch

from resnest_dense.checkpoint import CheckpointMismatchError
from resnest_dense.checkpoint.encoding import convert_encoding_deeplab_checkpoint


def _expected_state(config: str):
    from detectron2.modeling import build_model

    from resnest_dense import model_zoo

    from resnest_dense.config import get_resnest_cfg

    cfg = get_resnest_cfg(config) if os.path.isfile(config) else model_zoo.get_config(config)
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg).state_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "input",
        help="PyTorch-Encoding DeepLabV3 .pth (deeplab_*_ade-*.pth, deeplab_*_pcontext-*.pth)",
    )
    parser.add_argument("output", help="detectron2 checkpoint to write (.pth)")
    parser.add_argument(
        "--config",
        help="config (path, or name relative to configs/) whose model the output must fit",
    )
    parser.add_argument(
        "--model",
        choices=["deeplab", "fcn"],
        default="deeplab",
        help="Encoding model of the input: DeepLabV3 (deeplab_*) or FCN (fcn_*)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        expected = _expected_state(args.config) if args.config else None
        converted = convert_encoding_deeplab_checkpoint(
            args.input,
            args.output,
            expected=expected,
            overwrite=args.overwrite,
            model=args.model,
        )
    except (CheckpointMismatchError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    checked = f", checked against {args.config}" if args.config else ""
    print(f"wrote {args.output} ({len(converted)} tensors{checked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
