#!/usr/bin/env python
"""Semantic-segmentation demo: colour-coded masks, overlays and legends for images or a video.

For every input image ``NAME`` it writes, into ``--output``:

* ``NAME_mask.png``: the predicted class of every pixel, as a palette PNG of the input size
  (pixel values are class ids; viewers show the ADE20K colours);
* ``NAME_overlay.png``: the input blended with the colour mask;
* ``NAME_legend.png``: colour, name and area of every class present.

A video gives ``NAME_overlay.mp4`` and ``NAME_mask.mp4``. The model must have trained weights:
with an empty or missing ``MODEL.WEIGHTS`` the demo stops, unless ``--allow-random-weights``.

Example:
    python tools/demo_semseg.py \\
        --config-file configs/ADE20K-SemanticSegmentation/deeplabv3_S_50_OS8_syncbn_120ep.yaml \\
        --input images/ --output demo_out/ --opts MODEL.WEIGHTS model_final.pth
"""

import argparse
import glob
import logging
import os
import sys
from typing import Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from PIL import Image
from tqdm import tqdm

from resnest_dense.data.ade20k import palette_for
from resnest_dense.engine import SETUP_ERRORS, build_predictor, load_config

logger = logging.getLogger("demo_semseg")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Semantic segmentation demo (masks + overlays).")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", default=[], help="images, folders or glob patterns")
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


def expand_inputs(patterns: Sequence[str]) -> List[str]:
    """Image files named by ``patterns``: files, folders (non-recursive) or glob patterns."""
    files = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            names = sorted(os.listdir(pattern))
            files += [
                os.path.join(pattern, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)
            ]
        elif os.path.isfile(pattern):
            files.append(pattern)
        else:
            matches = sorted(glob.glob(os.path.expanduser(pattern)))
            if not matches:
                raise SystemExit(f"demo_semseg: no image matches {pattern!r}")
            files += matches
    return files


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
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else None
        names = list(metadata.get("stuff_classes", [])) if metadata is not None else []
        colours = metadata.get("stuff_colors", None) if metadata is not None else None
        if len(names) != num_classes:
            names = [f"class {i}" for i in range(num_classes)]
        self.names = names
        self.palette = palette_for(num_classes, colours)
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


def run_images(demo: SemSegDemo, files: List[str], out_dir: str) -> None:
    for path in tqdm(files, desc="images", unit="img"):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            logger.warning("Skipping %s: not an image OpenCV can read.", path)
            continue
        labels = demo.predict(image)
        views = demo.render(image, labels)
        stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
        save_palette_png(stem + "_mask.png", labels, demo.palette)
        Image.fromarray(views["overlay"]).save(stem + "_overlay.png")
        Image.fromarray(views["legend"]).save(stem + "_legend.png")
        present = [demo.names[i] for i in np.unique(labels)]
        logger.info("%s: %s", os.path.basename(path), ", ".join(present))


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
    setup_logger(name="demo_semseg")
    setup_logger(name="resnest_dense")
    try:
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
    files = expand_inputs(args.input)
    os.makedirs(args.output, exist_ok=True)
    if files:
        run_images(demo, files, args.output)
    if args.video_input:
        run_video(demo, args.video_input, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
