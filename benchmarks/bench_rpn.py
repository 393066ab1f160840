#!/usr/bin/env python
"""Cost of the defined tie order in the RPN: the project's ``select_rpn_proposals`` (a stable
sort per level) against detectron2's ``find_top_rpn_proposals`` (``torch.topk`` per level), on
the inputs a COCO-size image gives the paper's R-CNN recipe, measured in one run.

Inputs: the five FPN levels P2-P6 of an 800x1216 image with 3 anchors per position (182,400 +
45,600 + 11,400 + 2,850 + 741 anchors), random boxes and logits (no ties: a sort does the same
work either way), the recipe's test setting (1000 per level before NMS, 1000 after) for one
image and the training setting (2000 / 1000) for a batch of two. Both functions get the same
tensors and must return the same proposals (checked first). For scale, one R50-FPN Faster R-CNN
forward at this size takes ~4 s on these machines.

    python benchmarks/bench_rpn.py [--threads 2] [--repeats 5] [--out benchmarks/results]
"""

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector import _timed  # noqa: E402

HEIGHT, WIDTH, ANCHORS = 800, 1216, 3
STRIDES = (4, 8, 16, 32, 64)
# (name, images, pre_nms_topk, post_nms_topk, training)
SETTINGS = [("test, 1 image", 1, 1000, 1000, False), ("train, 2 images", 2, 2000, 1000, True)]


def level_inputs(images: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    boxes, logits = [], []
    for stride in STRIDES:
        n = -(-HEIGHT // stride) * -(-WIDTH // stride) * ANCHORS
        xy = torch.rand(images, n, 2, generator=g) * torch.tensor([WIDTH, HEIGHT])
        wh = torch.rand(images, n, 2, generator=g) * 8 * stride
        boxes.append(torch.cat([xy, xy + wh], dim=2))
        logits.append(torch.randn(images, n, generator=g))
    return boxes, logits


def interleaved_medians(first, second, repeats: int):
    """Median times of two functions called alternately (after a warm-up of each), so that a
    load burst on a shared machine hits both alike."""
    first(), second()
    times = [(_timed(first), _timed(second)) for _ in range(repeats)]
    return tuple(sorted(column)[repeats // 2] for column in zip(*times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals

    from resnest_dense.modeling.proposal_generator import select_rpn_proposals

    rows = []
    for name, images, pre, post, training in SETTINGS:
        boxes, logits = level_inputs(images)
        call = (boxes, logits, [(HEIGHT, WIDTH)] * images, 0.7, pre, post, 0.0, training)
        with torch.no_grad():
            for ours, theirs in zip(select_rpn_proposals(*call), find_top_rpn_proposals(*call)):
                assert torch.equal(ours.proposal_boxes.tensor, theirs.proposal_boxes.tensor)
            stock, stable = interleaved_medians(
                lambda: find_top_rpn_proposals(*call),
                lambda: select_rpn_proposals(*call),
                args.repeats,
            )
        rows.append((name, stock, stable))

    lines = [
        f"RPN proposal selection, 800x1216, P2-P6 x 3 anchors, CPU, {args.threads} threads, "
        f"median of {args.repeats} calls of each, alternating (`benchmarks/bench_rpn.py`)",
        "",
        "| setting | detectron2 topk ms | stable top-k ms | ratio | difference ms |",
        "|---|---|---|---|---|",
    ]
    for name, stock, stable in rows:
        lines.append(
            f"| {name} | {stock * 1e3:.1f} | {stable * 1e3:.1f} | {stable / stock:.2f}x "
            f"| {(stable - stock) * 1e3:+.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "rpn.md").write_text(text)


if __name__ == "__main__":
    main()
