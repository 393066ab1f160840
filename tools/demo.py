#!/usr/bin/env python
"""Draw detections / instance masks of a trained model on images (detectron2 ``Visualizer``).

Example::

    python tools/demo.py --config-file configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml \
        --input datasets/toy_coco/val --output output/toy_mask_rcnn_S14/demo \
        --opts MODEL.WEIGHTS output/toy_mask_rcnn_S14/model_final.pth

One overlay PNG per input image is written to ``--output``. The tool refuses to run on a
randomly initialised detector (no ``MODEL.WEIGHTS``, a missing file, or ImageNet backbone-only
weights) unless ``--allow-random-weights`` is given: such a model detects nothing, which is the
most common "0 instances detected" report. Semantic segmentation has its own demo,
``tools/demo_semseg.py``.
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

import cv2
import torch
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

from resnest_dense.engine import SETUP_ERRORS, build_predictor, load_config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

logger = logging.getLogger("resnest_dense.demo")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input", nargs="+", required=True, help="image files and/or folders of images"
    )
    parser.add_argument("--output", required=True, help="folder for the overlay PNGs")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run even when MODEL.WEIGHTS does not hold a trained detector",
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE pairs")
    return parser


def list_images(inputs: List[str]) -> List[str]:
    """Image files of ``inputs`` (folders expanded, sorted)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(os.listdir(item))
            paths += [os.path.join(item, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"--input {item!r} does not exist")
    if not paths:
        raise FileNotFoundError(f"No images in --input {' '.join(inputs)}")
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="resnest_dense")
    setup_logger(name="fvcore")
    try:
        cfg = load_config(
            args.config_file,
            args.opts,
            purpose="demo",
            allow_random_weights=args.allow_random_weights,
        )
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.confidence_threshold
        cfg.freeze()
        predictor = build_predictor(cfg, args.allow_random_weights)
    except SETUP_ERRORS as e:
        print(f"Refusing to run: {e}", file=sys.stderr)
        return 2
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    os.makedirs(args.output, exist_ok=True)
    for path in tqdm.tqdm(list_images(args.input), desc="demo", unit="image"):
        image = read_image(path, format="BGR")
        with torch.no_grad():
            predictions = predictor(image)
        instances = predictions["instances"].to("cpu")
        visualizer = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
        overlay = visualizer.draw_instance_predictions(instances).get_image()
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out, overlay[:, :, ::-1])
        logger.info("%s: %d instances -> %s", path, len(instances), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
