#!/usr/bin/env python
"""Semantic-segmentation demo: colour-coded masks, overlays and legends for images or a video.

For every input image ``NAME`` it writes, into ``--output``:

* ``NAME_mask.png``: the predicted class of every pixel, as a palette PNG of the input size
  (pixel values are class ids; viewers show the ADE20K colours);
* ``NAME_overlay.png``: the input blended with the colour mask;
* ``NAME_legend.png``: colour, name and area of every class present.

``--input`` takes image files, folders (their image files) and glob patterns. ``NAME`` is the
image's file name without extension; images whose names would collide (``a/x.png`` and
``b/x.png``, ``x.jpg`` and ``x.png``) get ``x-2``, ``x-3``, ... in input order
(:mod:`resnest_dense.utils.image_inputs`). A file that cannot be read as an image is skipped
with a warning; the others are processed, and the tool then exits with code 1 and a summary
"N of M images skipped". A missing input or a folder without images stops it before the model
is built (exit code 2).

Class names and colours come from the checkpoint (stored by ``tools/train_net.py``), else from
``DATASETS.TEST[0]``, else ``class N`` with the ADE20K palette.

A video gives ``NAME_overlay.mp4`` and ``NAME_mask.mp4``. The model must have trained weights:
with an empty or missing ``MODEL.WEIGHTS`` the demo stops, unless ``--allow-random-weights``.
``MODEL.WEIGHTS`` may also be an exported ``model.onnx`` / ``model.ts``
(``tools/deploy/export_model.py``), run in onnxruntime / TorchScript. ``--config-file`` may be a
LazyConfig (``configs/lazy/...py``, ``--opts train.init_checkpoint=model.pth``; docs/configs.md).

Example:
    python tools/demo_semseg.py \\
        --config-file configs/ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml \\
        --input images/ --output demo_out/ --opts MODEL.WEIGHTS model_final.pth
"""

import argparse
import logging
import os
import sys
from typing import Dict, Iterator, Sequence, Tuple

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.utils.logger import setup_logger
from PIL import Image
from tqdm import tqdm

from resnest_dense.data.ade20k import palette_for
from resnest_dense.engine import SETUP_ERRORS, build_predictor, load_config
from resnest_dense.errors import MissingFileError
from resnest_dense.utils import ImageInput, ImageStream, check_outputs, list_image_inputs

logger = logging.getLogger("resnest_dense.demo_semseg")

# The files written for an input image NAME.
OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_legend.png")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Semantic segmentation demo (masks + overlays).")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input", nargs="+", default=[], help="image files, folders of images, glob patterns"
    )
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--output", required=True, help="output folder (created if missing)")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlay")
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run even without trained weights (the output is then meaningless)",
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE pairs")
    args = parser.parse_args(argv)
    if not args.input and not args.video_input:
        parser.error("give --input and/or --video-input")
    return args


def colorize(labels: np.ndarray, palette: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB."""
    return np.asarray(palette, dtype=np.uint8)[labels]


def save_palette_png(
    path: str, labels: np.ndarray, palette: Sequence[Tuple[int, int, int]]
) -> None:
    """Save class ids as an indexed PNG whose palette holds the class colours."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [v for colour in palette[:256] for v in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    image.save(path)


def draw_legend(
    labels: np.ndarray, names: Sequence[str], palette: Sequence[Tuple[int, int, int]]
) -> np.ndarray:
    """An RGB legend image: one row (swatch, name, % of pixels) per class present."""
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts)
    row, width = 22, 320
    legend = np.full((row * len(ids) + 8, width, 3), 255, np.uint8)
    for i, k in enumerate(order):
        y = 4 + i * row
        cls = int(ids[k])
        cv2.rectangle(legend, (6, y + 3), (30, y + row - 3), palette[cls], -1)
        cv2.rectangle(legend, (6, y + 3), (30, y + row - 3), (0, 0, 0), 1)
        text = f"{names[cls]}  {100.0 * counts[k] / labels.size:.1f}%"
        cv2.putText(legend, text, (38, y + row - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return legend


class SemSegDemo:
    """Runs a segmentation model on BGR images and renders masks, overlays and legends."""

    def __init__(self, cfg: CfgNode, alpha: float = 0.5, allow_random_weights: bool = False):
        """
        Args:
            cfg: a frozen config of a semantic segmentation model.
            alpha: mask opacity in the overlay.
            allow_random_weights: load weights that do not cover the model.
        """
        self.predictor = build_predictor(cfg, allow_random_weights)
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        # The names and colours stored with the weights (build_predictor), NUM_CLASSES at least.
        metadata = self.predictor.metadata
        self.names = list(metadata.stuff_classes)
        self.palette = palette_for(num_classes, metadata.get("stuff_colors", None))
        self.alpha = alpha

    def predict(self, image_bgr: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (H, W) int64 class ids."""
        logits = self.predictor(image_bgr)["sem_seg"]
        return logits.argmax(dim=0).cpu().numpy()

    def render(self, image_bgr: np.ndarray, labels: np.ndarray) -> Dict[str, np.ndarray]:
        """RGB ``mask``, ``overlay`` and ``legend`` images for one prediction."""
        mask = colorize(labels, self.palette)
        rgb = image_bgr[:, :, ::-1].astype(np.float32)
        overlay = (1 - self.alpha) * rgb + self.alpha * mask.astype(np.float32)
        return {
            "mask": mask,
            "overlay": np.clip(overlay, 0, 255).astype(np.uint8),
            "legend": draw_legend(labels, self.names, self.palette),
        }


def run_images(demo: SemSegDemo, inputs: Sequence[ImageInput], out_dir: str) -> int:
    """Write mask, overlay and legend of every readable input; return the exit code (0, or 1
    when unreadable files were skipped)."""
    images = ImageStream(inputs, progress=lambda items: tqdm(items, desc="images", unit="img"))
    for item, image in images:
        labels = demo.predict(image)
        views = demo.render(image, labels)
        stem = os.path.join(out_dir, item.stem)
        save_palette_png(stem + "_mask.png", labels, demo.palette)
        Image.fromarray(views["overlay"]).save(stem + "_overlay.png")
        Image.fromarray(views["legend"]).save(stem + "_legend.png")
        present = [demo.names[i] for i in np.unique(labels)]
        logger.info("%s -> %s_*.png: %s", item.path, stem, ", ".join(present))
    return images.finish()


def _frames(video: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = video.read()
        if not ok:
            return
        yield frame


def run_video(demo: SemSegDemo, path: str, out_dir: str) -> None:
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise SystemExit(f"demo_semseg: cannot open video {path!r}")
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    total = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    writers = {
        k: cv2.VideoWriter(f"{stem}_{k}.mp4", fourcc, fps, size) for k in ("overlay", "mask")
    }
    try:
        for frame in tqdm(_frames(video), total=total, desc="frames", unit="frame"):
            views = demo.render(frame, demo.predict(frame))
            for key, writer in writers.items():
                writer.write(np.ascontiguousarray(views[key][:, :, ::-1]))
    finally:
        video.release()
        for writer in writers.values():
            writer.release()
    logger.info("Wrote %s_overlay.mp4 and %s_mask.mp4", stem, stem)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="resnest_dense")
    try:
        inputs = list_image_inputs(args.input) if args.input else []
        check_outputs(inputs, args.output, OUTPUT_SUFFIXES)
        if args.video_input and not os.path.isfile(args.video_input):
            raise MissingFileError(f"--video-input {args.video_input!r} does not exist.")
        cfg = load_config(
            args.config_file,
            args.opts,
            purpose="demo",
            allow_random_weights=args.allow_random_weights,
        )
        cfg.freeze()
        demo = SemSegDemo(cfg, alpha=args.alpha, allow_random_weights=args.allow_random_weights)
    except SETUP_ERRORS as e:
        print(f"Refusing to run: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    code = run_images(demo, inputs, args.output) if inputs else 0
    if args.video_input:
        run_video(demo, args.video_input, args.output)
    return code


if __name__ == "__main__":
    sys.exit(main())
