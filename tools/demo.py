#!/usr/bin/env python
"""Draw detections / instance masks / panoptic segments of a trained model on images
(detectron2 ``Visualizer``).

Example::

    python tools/demo.py --config-file configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml \
        --input datasets/toy_coco/val --output output/toy_mask_rcnn_S14/demo \
        --opts MODEL.WEIGHTS output/toy_mask_rcnn_S14/model_final.pth

``--input`` takes image files, folders (their image files) and glob patterns. One overlay PNG
per image is written to ``--output``, named after the image (``x.jpg`` -> ``x.png``); images
whose names would collide (``a/x.png`` and ``b/x.png``, ``x.jpg`` and ``x.png``) get ``x-2.png``,
``x-3.png``, ... in input order (:mod:`resnest_dense.utils.image_inputs`). A file that cannot be
read as an image is skipped with a warning; the others are processed, and the tool then exits
with code 1 and a summary "N of M images skipped". A missing input or a folder without images
stops it before the model is built (exit code 2).

A Panoptic FPN model's output is drawn as detectron2 draws panoptic segmentation (stuff regions
and thing instances). Objects are labelled with the class names stored in the checkpoint by ``tools/train_net.py``
(so a model fine-tuned on ``DATASETS.COCO_FORMAT`` data shows that data's names), else those of
``DATASETS.TEST[0]``, else ``class N``. No annotation file is read: a COCO config runs without
the COCO data.

The tool refuses to run on a randomly initialised detector (no ``MODEL.WEIGHTS``, a missing
file, or ImageNet backbone-only weights) unless ``--allow-random-weights`` is given: such a model
detects nothing, which is the most common "0 instances detected" report. Semantic segmentation
has its own demo, ``tools/demo_semseg.py``.

``--config-file`` may be a LazyConfig (``configs/lazy/...py``; options as ``--opts
train.init_checkpoint=model.pth``): the model is its ``model``, resized as its test mapper says
(docs/configs.md).

``MODEL.WEIGHTS`` may be a file written by ``tools/deploy/export_model.py`` (``model.onnx`` /
``model.ts``): the demo then runs it in onnxruntime / TorchScript, labelled with the class names
stored in it (``--confidence-threshold`` below the exported threshold cannot add detections).
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

import cv2
import torch
import tqdm
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

from resnest_dense.engine import SETUP_ERRORS, build_predictor, load_config
from resnest_dense.utils import ImageStream, check_outputs, list_image_inputs

logger = logging.getLogger("resnest_dense.demo")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input", nargs="+", required=True, help="image files, folders of images, glob patterns"
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


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="resnest_dense")
    setup_logger(name="fvcore")
    try:
        inputs = list_image_inputs(args.input)
        check_outputs(inputs, args.output, [".png"])
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
    os.makedirs(args.output, exist_ok=True)
    images = ImageStream(inputs, progress=lambda items: tqdm.tqdm(items, desc="demo", unit="image"))
    for item, image in images:
        with torch.no_grad():
            predictions = predictor(image)
        # predictor.metadata: the class names stored with the weights (build_predictor).
        visualizer = Visualizer(
            image[:, :, ::-1], predictor.metadata, instance_mode=ColorMode.IMAGE
        )
        if "panoptic_seg" in predictions:
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            drawn = visualizer.draw_panoptic_seg(panoptic_seg.to("cpu"), segments_info)
            found = f"{len(segments_info)} panoptic segments"
        else:
            instances = predictions["instances"].to("cpu")
            drawn = visualizer.draw_instance_predictions(instances)
            found = f"{len(instances)} instances"
        out = os.path.join(args.output, item.stem + ".png")
        if not cv2.imwrite(out, drawn.get_image()[:, :, ::-1]):
            raise OSError(f"Cannot write {out}: check that --output is a writable folder.")
        logger.info("%s: %s -> %s", item.path, found, out)
    return images.finish()


if __name__ == "__main__":
    sys.exit(main())
