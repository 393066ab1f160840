#!/usr/bin/env python
"""Draw the training data as a config sees them: the raw annotations of ``DATASETS.TRAIN``, or
what the training data loader feeds the model after the config's augmentations.

Example::

    python tools/visualize_data.py --source annotation \
        --config-file configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml \
        --output-dir output/visualize/annotation --num-images 8

    # custom COCO-format data, after the training augmentations
    python tools/visualize_data.py --source dataloader --config-file <config.yaml> \
        --output-dir output/visualize/loader \
        DATASETS.COCO_FORMAT "[['my_train','data/train.json','data/train']]" \
        DATASETS.TRAIN "('my_train',)" MODEL.ROI_HEADS.NUM_CLASSES 5

``--source annotation`` draws the training dicts as the trainer loads them (boxes, masks,
keypoints, semantic labels, panoptic segments) over the original images, labelled with the
dataset's class names. ``--source dataloader`` draws the output of the trainer's own train
loader: the mapper of ``tools/train_net.py`` for a YAML config (the segmentation recipe's
scale / crop / flip / blur for DeepLab configs), ``dataloader.train.mapper`` for a LazyConfig
(``configs/lazy/...py``, overrides as ``a.b=c``); images have the augmented size. One PNG per
image is written into ``--output-dir``, named after the image (``x.jpg`` -> ``x.png``; repeats
and collisions -> ``x-2.png``, ... as in the demos).

The config goes through the training start-up checks (``resnest_dense.engine.load_config``):
an unregistered or missing dataset, a class count that does not fit the model, a bad label or
image is refused with the message training would give (exit code 2), before anything is
written. Weights are not needed (``MODEL.WEIGHTS`` is ignored).
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

import cv2
import tqdm
from detectron2.utils.logger import setup_logger

from resnest_dense.config import weights_override
from resnest_dense.engine import SETUP_ERRORS, load_config
from resnest_dense.engine.visualize import (
    check_output_dir,
    data_folders,
    draw_record,
    draw_sample,
    training_metadata,
    training_records,
    training_samples,
)
from resnest_dense.utils.image_inputs import unique_stems

logger = logging.getLogger("resnest_dense.visualize_data")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML or LazyConfig")
    parser.add_argument(
        "--source",
        choices=["annotation", "dataloader"],
        required=True,
        help="the raw annotations, or the train loader's output (after the augmentations)",
    )
    parser.add_argument("--output-dir", required=True, help="folder for the PNGs")
    parser.add_argument(
        "--num-images",
        type=int,
        default=8,
        help="images to draw (default 8; 0 with --source annotation: the whole training set)",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs (LazyConfig: a.b=c)"
    )
    return parser


def _write(path: str, rgb) -> None:
    if not cv2.imwrite(path, rgb[:, :, ::-1]):
        raise OSError(f"Cannot write {path}: check that --output-dir is a writable folder.")


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.num_images < 0:
        parser.error(f"--num-images must be >= 0, got {args.num_images}")
    setup_logger(name="resnest_dense")
    try:
        check_output_dir(args.output_dir, "--output-dir")
        # No weights: nothing is loaded, a missing weights file must not stop a look at the data.
        opts = list(args.opts) + weights_override(args.config_file, "")
        cfg = load_config(args.config_file, opts, purpose="train")
        metadata = training_metadata(cfg)
        if args.source == "annotation":
            items = training_records(cfg, args.num_images)
            draw = lambda record: draw_record(record, metadata)  # noqa: E731
        else:
            items = list(training_samples(cfg, args.num_images))
            draw = lambda sample: draw_sample(sample, metadata, cfg.INPUT.FORMAT)  # noqa: E731
        check_output_dir(args.output_dir, "--output-dir", data_folders(cfg.DATASETS.TRAIN, items))
    except SETUP_ERRORS as e:
        print(f"Refusing to run: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    stems = unique_stems([item["file_name"] for item in items])
    for item, stem in zip(tqdm.tqdm(items, desc=args.source, unit="image"), stems):
        out = os.path.join(args.output_dir, stem + ".png")
        _write(out, draw(item))
        logger.info("%s -> %s", item["file_name"], out)
    logger.info("Wrote %d images to %s", len(items), args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
