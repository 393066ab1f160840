#!/usr/bin/env python
"""Draw the detections of a ``coco_instances_results.json`` next to the ground truth of the
config's test set.

Example::

    python tools/train_net.py --eval-only --config-file <config.yaml> MODEL.WEIGHTS model.pth
    python tools/visualize_json_results.py --config-file <config.yaml> \
        --output output/visualize/results --conf-threshold 0.5

``--input`` defaults to ``<OUTPUT_DIR>/inference/coco_instances_results.json``, where
``--eval-only`` writes it. Each output PNG shows the predictions with ``score >=
--conf-threshold`` (left; boxes, classes, scores, masks) and the ground truth of
``DATASETS.TEST[0]`` (right) of one test image, named after the image (collisions -> ``x-2.png``,
... as in the demos); ``--num-images`` limits how many (default 8, 0: all).

The results must belong to that dataset: every image id and category id of the file must be one
of the dataset's (the category ids are the dataset's own, as detectron2's ``COCOEvaluator``
writes them), and every box and mask must fit its image. The results of another dataset are
refused with a message naming the file and the mismatch (exit code 2), never drawn over the
wrong images. The config goes through the evaluation start-up checks of the test set
(``resnest_dense.engine.load_config``); no weights are needed.
"""

import argparse
import logging
import os
import sys
from collections import defaultdict
from typing import List, Optional

import cv2
import tqdm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

from resnest_dense.config import weights_override
from resnest_dense.engine import SETUP_ERRORS, load_config
from resnest_dense.engine.visualize import (
    RESULTS_FILE,
    check_output_dir,
    check_results_match,
    data_folders,
    draw_predictions,
    read_coco_results,
    result_instances,
)
from resnest_dense.utils.image_inputs import unique_stems

logger = logging.getLogger("resnest_dense.visualize_json_results")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML or LazyConfig")
    parser.add_argument(
        "--input", help=f"the results JSON (default: <OUTPUT_DIR>/inference/{RESULTS_FILE})"
    )
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument("--conf-threshold", type=float, default=0.5, help="minimum score drawn")
    parser.add_argument(
        "--num-images", type=int, default=8, help="test images to draw (default 8; 0: all)"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs (LazyConfig: a.b=c)"
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.num_images < 0:
        parser.error(f"--num-images must be >= 0, got {args.num_images}")
    setup_logger(name="resnest_dense")
    try:
        check_output_dir(args.output, "--output")
        # No weights: the predictions are read from the file, no model is built or loaded.
        cfg = load_config(
            args.config_file,
            list(args.opts) + weights_override(args.config_file, ""),
            purpose="eval",
            allow_random_weights=True,
        )
        dataset = cfg.DATASETS.TEST[0]
        path = args.input or os.path.join(cfg.OUTPUT_DIR, "inference", RESULTS_FILE)
        results = read_coco_results(path)
        records = DatasetCatalog.get(dataset)
        category_map = check_results_match(path, results, dataset, records)
        check_output_dir(args.output, "--output", data_folders([dataset], records))
    except SETUP_ERRORS as e:
        print(f"Refusing to run: {e}", file=sys.stderr)
        return 2
    metadata = MetadataCatalog.get(dataset)
    by_image = defaultdict(list)
    for entry in results:
        by_image[entry["image_id"]].append(entry)
    if args.num_images:
        records = records[: args.num_images]
    os.makedirs(args.output, exist_ok=True)
    drawn = 0
    stems = unique_stems([r["file_name"] for r in records])
    for record, stem in zip(tqdm.tqdm(records, desc="results", unit="image"), stems):
        entries = by_image[record["image_id"]]
        size = (record["height"], record["width"])
        instances = result_instances(entries, size, category_map, args.conf_threshold)
        drawn += len(instances)
        out = os.path.join(args.output, stem + ".png")
        if not cv2.imwrite(out, draw_predictions(record, instances, metadata)[:, :, ::-1]):
            raise OSError(f"Cannot write {out}: check that --output is a writable folder.")
        logger.info(
            "%s: %d of %d predictions drawn -> %s",
            record["file_name"],
            len(instances),
            len(entries),
            out,
        )
    if results and not drawn:
        best = max(e["score"] for e in results)
        logger.warning(
            "No prediction of these %d images reaches --conf-threshold %g (the file's best score "
            "is %.3f): only the ground truth is drawn. Lower --conf-threshold to see them.",
            len(records),
            args.conf_threshold,
            best,
        )
    elif not results:
        logger.warning("%s holds no predictions: only the ground truth is drawn.", path)
    logger.info("Wrote %d images to %s", len(records), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
