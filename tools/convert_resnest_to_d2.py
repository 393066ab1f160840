#!/usr/bin/env python
"""Convert an official ResNeSt or timm ``resnest*`` ImageNet checkpoint to a detectron2 one.

Example:
    python tools/convert_resnest_to_d2.py resnest50-528c19ca.pth resnest50_d2.pth \
        --variant resnest50

The output loads into the FPN configs with no missing or unexpected backbone keys
(use ``--prefix backbone.`` for backbones without FPN, e.g. DeepLabV3).
"""

import argparse
import logging
import sys

from resnest_dense.checkpoint import (
    REQUIRED_INPUT_SETTINGS,
    CheckpointMismatchError,
    convert_resnest_checkpoint,
)
from resnest_dense.modeling.backbone.variants import RESNEST_VARIANTS, variant_opts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("input", help="official ResNeSt / timm resnest .pth state dict")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pth)")
    parser.add_argument(
        "--variant", required=True, choices=sorted(RESNEST_VARIANTS), help="network of the input"
    )
    parser.add_argument(
        "--prefix",
        default="backbone.bottom_up.",
        help="name prefix in the detector: 'backbone.bottom_up.' (FPN, default) or 'backbone.'",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        converted = convert_resnest_checkpoint(
            args.input, args.output, args.variant, prefix=args.prefix, overwrite=args.overwrite
        )
    except (CheckpointMismatchError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({len(converted)} tensors, variant {args.variant})")
    print("config keys for this backbone:", " ".join(str(o) for o in variant_opts(args.variant)))
    print("input settings these weights require:")
    for key, value in REQUIRED_INPUT_SETTINGS.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
