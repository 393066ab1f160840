#!/usr/bin/env python
"""Reproduce the ResNeSt paper's COCO and ADE20K gains over ResNet baselines (and evaluate the
released PASCAL Context models).

Modes (see docs/results.md):
  --eval-released   evaluate every released model with our config; runs when the weights and
                    the dataset are on disk, else says what is missing and prints the command.
                    With --lazy: with the config's LazyConfig twin (configs/lazy/...py,
                    tools/lazyconfig_train_net.py) instead of the YAML.
  --train           train the ResNet / ResNeSt config pairs with tools/train_net.py, then
                    evaluate; with --dry-run only print the exact multi-GPU commands. Also the
                    "beyond the paper" rows: ResNeSt new baselines (LazyConfig, LSJ) with
                    tools/lazyconfig_train_net.py, beside detectron2's ResNet numbers.
  --collect ROOT    read finished runs under ROOT into results.md / results.csv / results.png:
                    measured box AP, mask AP, mIoU, pixAcc beside the paper's, and the
                    ResNeSt - ResNet gain.
  --smoke           the whole matrix (5 tasks x ResNet/ResNeSt) with tiny networks and
                    schedules on the generated toy datasets, on CPU, then --collect. Its numbers
                    are TOY numbers that prove the pipeline runs, not paper reproductions.

Every run directory holds run.json (what ran) and, once evaluated, results.json (detectron2's
evaluation results); --collect falls back to the last eval scalars of metrics.json.
"""

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from resnest_dense.model_zoo.paper_table import TOY_LABEL, collect, paper_rows, run_id  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("reproduce")


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Logs 'run i/n, step, ETA' from the durations of the runs done so far."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.time()

    def step(self, index: int, name: str, what: str) -> None:
        elapsed = time.time() - self.start
        eta = "unknown"
        if self.done:
            eta = _fmt_s(elapsed / self.done * (self.total - self.done))
        logger.info(
            "[run %d/%d] %s: %s (elapsed %s, ETA %s)", index, self.total, name, what,
            _fmt_s(elapsed), eta,
        )  # fmt: skip

    def finish_run(self) -> None:
        self.done += 1


# ------------------------------------------------------------------ evaluation


def register_smoke_sets(root: str) -> None:
    """Small copies of the generated toy sets (``smoke_toy_coco_*``, ``smoke_toy_sem_seg_*``)."""
    from detectron2.data import DatasetCatalog

    from resnest_dense.data.toy_coco import register_toy_coco
    from resnest_dense.data.toy_sem_seg import register_toy_sem_seg

    if "smoke_toy_coco_train" not in DatasetCatalog.list():
        register_toy_coco(os.path.join(root, "toy_coco"), "smoke_toy_coco", 96, 16)
    if "smoke_toy_sem_seg_train" not in DatasetCatalog.list():
        register_toy_sem_seg(os.path.join(root, "toy_sem_seg"), "smoke_toy_sem_seg", 64, 12)


def tool_config(config: str, opts: Sequence = (), purpose: str = "train"):
    """The checked config of ``configs/<config>`` + ``opts`` through the engine's set-up path."""
    from resnest_dense.engine import load_config
    from resnest_dense.model_zoo import get_config_file

    return load_config(get_config_file(config), [str(o) for o in opts], purpose=purpose)


def write_run_json(output_dir: str, row: Dict, **extra) -> None:
    from resnest_dense.utils.io import atomic_write_json

    info = {k: row[k] for k in ("task", "backbone", "config", "dataset")}
    info.update(extra)
    atomic_write_json(os.path.join(output_dir, "run.json"), info)


# -------------------------------------------------------------- released models


def eval_released(args) -> int:
    """Evaluate every selected released model; exit 1 unless all of them were evaluated.

    Each model goes through train_net's checks first (dataset on disk, weights name known), so
    a missing dataset is reported before anything is downloaded; ``--dry-run`` downloads and
    evaluates nothing.
    """
    from resnest_dense import model_zoo
    from resnest_dense.config import weights_override
    from resnest_dense.engine import SETUP_ERRORS, evaluate_weights

    entries = [e for e in model_zoo.default_registry().values() if e.config]
    entries = [e for e in entries if args.only.search(e.name)]
    progress = Progress(len(entries))
    ran = 0
    for i, entry in enumerate(entries, 1):
        out = os.path.join(args.output, "released", entry.name)
        weights = f"{model_zoo.SCHEME}{entry.name}"
        config = lazy_twin(entry.config) if args.lazy else entry.config
        opts = weights_override(config, weights) + _run_opts(config, out)
        cmd = shlex.join(
            ["python", f"tools/{_tool(config)}", "--config-file", f"configs/{config}"]
            + ["--eval-only", "--num-gpus", "1", *opts]
        )
        logger.info("[%d/%d] %s\n  command: %s", i, len(entries), entry.name, cmd)
        if args.dry_run:
            continue
        problems = []
        try:
            cfg = tool_config(config, opts, "eval")
        except SETUP_ERRORS as e:
            problems.append(e)
        try:
            # Download only when the rest of the set-up is fine.
            model_zoo.resolve_weights(entry.name, download=False if problems else args.download)
        except SETUP_ERRORS as e:
            problems.append(e)
        if problems:
            for e in problems:
                logger.error("  missing: %s", str(e).replace("\n", "\n    "))
            continue
        row = next(r for r in paper_rows() if r["config"] == entry.config)
        progress.step(i, entry.name, "evaluating")
        evaluate_weights(cfg)
        write_run_json(out, row, kind="released", weights=entry.name, evaluated_with=config)
        progress.finish_run()
        ran += 1
    logger.info("Evaluated %d of %d released models.", ran, len(entries))
    if ran:
        collect(os.path.join(args.output, "released"), os.path.join(args.output, "released"))
    return 0 if args.dry_run or ran == len(entries) else 1


# -------------------------------------------------------------------- training


def lazy_twin(config: str) -> str:
    """The LazyConfig twin of a YAML config, both relative to configs/ (docs/configs.md)."""
    return os.path.join("lazy", os.path.splitext(config)[0] + ".py")


def _tool(config: str) -> str:
    return "lazyconfig_train_net.py" if config.endswith(".py") else "train_net.py"


def _run_opts(config: str, output_dir: str, weights: Optional[str] = None) -> List[str]:
    """Output dir (and weights) options in the config's own form (YAML or LazyConfig)."""
    from resnest_dense.config import weights_override

    out = (
        [f"train.output_dir={output_dir}"] if config.endswith(".py") else ["OUTPUT_DIR", output_dir]
    )
    return out + (weights_override(config, weights) if weights else [])


def train_command(row: Dict, output_dir: str, num_gpus: int, opts: Sequence[str] = ()) -> List[str]:
    cmd = [
        "python", f"tools/{_tool(row['config'])}", "--config-file", f"configs/{row['config']}",
        "--num-gpus", str(num_gpus), *_run_opts(row["config"], output_dir),
    ]  # fmt: skip
    return cmd + [str(o) for o in opts]


def train(args) -> int:
    rows = [r for r in paper_rows(beyond=True) if args.only.search(run_id(r))]
    progress = Progress(len(rows))
    for i, row in enumerate(rows, 1):
        out = os.path.join(args.output, "train", run_id(row))
        cmd = train_command(row, out, args.num_gpus, args.opts)
        if args.dry_run:
            print(" ".join(shlex.quote(c) for c in cmd))
            continue
        tool = os.path.join(REPO, cmd[1])
        if not os.path.isfile(tool):
            logger.error("%s does not exist in this checkout", tool)
            return 1
        write_run_json(out, row, kind="trained", command=cmd)
        progress.step(i, run_id(row), f"training with {cmd[1]} (log in the run dir)")
        with open(os.path.join(out, "train_stdout.log"), "w") as log:
            status = subprocess.call([sys.executable] + cmd[1:], cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        if status != 0:
            logger.error("training %s failed (exit %d); see %s", run_id(row), status, out)
            return status
        if os.path.isfile(os.path.join(out, "results.json")):
            progress.finish_run()  # train_net evaluated the final model itself
            continue
        progress.step(i, run_id(row), "evaluating model_final.pth")
        from resnest_dense.engine import evaluate_weights

        final = os.path.join(out, "model_final.pth")
        evaluate_weights(tool_config(row["config"], [*args.opts, *_run_opts(row["config"], out,
                                                                             final)], "eval"))  # fmt: skip
        progress.finish_run()
    if not args.dry_run:
        collect(os.path.join(args.output, "train"), os.path.join(args.output, "train"))
    return 0


# ----------------------------------------------------------------------- smoke

_SMOKE_COMMON = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "DATALOADER.NUM_WORKERS", 0,
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.STEPS", (), "SOLVER.WARMUP_ITERS", 0,
    "SOLVER.CHECKPOINT_PERIOD", 100000, "TEST.EVAL_PERIOD", 0, "TEST.PRECISE_BN.ENABLED", False,
]  # fmt: skip
_SMOKE_COCO = [
    "DATASETS.TRAIN", ("smoke_toy_coco_train",), "DATASETS.TEST", ("smoke_toy_coco_val",),
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "INPUT.MIN_SIZE_TRAIN", (96, 112),
    "INPUT.MAX_SIZE_TRAIN", 160, "INPUT.MIN_SIZE_TEST", 112, "INPUT.MAX_SIZE_TEST", 160,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 300, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 300, "MODEL.RPN.POST_NMS_TOPK_TEST", 100,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, "TEST.PRECISE_BN.ENABLED", False,
    "MODEL.FPN.OUT_CHANNELS", 64, "MODEL.ROI_BOX_HEAD.CONV_DIM", 64,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 256, "MODEL.ROI_MASK_HEAD.CONV_DIM", 64,
    "TEST.DETECTIONS_PER_IMAGE", 20, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
    "SOLVER.BASE_LR", 0.02,
]  # fmt: skip
_SMOKE_ADE = [
    "DATASETS.TRAIN", ("smoke_toy_sem_seg_train",), "DATASETS.TEST", ("smoke_toy_sem_seg_val",),
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
    "MODEL.SEM_SEG_HEAD.AUX_CONVS_DIM", 32, "INPUT.BASE_SIZE", 112, "INPUT.CROP.SIZE", [96, 96],
    "TEST.SEM_SEG.BASE_SIZE", 0, "TEST.SEM_SEG.CROP_SIZE", 0, "SOLVER.BASE_LR", 0.01,
    "MODEL.RESNETS.STEM_WIDTH", 16, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
]  # fmt: skip


def smoke_opts(row: Dict, iters: int) -> List:
    """Overrides turning a paper config into a seconds-long CPU run on a toy dataset.

    ResNeSt rows train a ResNeSt-14 (split attention, deep stem, avd, avg_down as in the
    config), ResNet rows an R-18 (COCO) or a narrow R-50 (DeepLabV3).
    """
    resnest = row["backbone"].startswith("S-")
    opts = list(_SMOKE_COMMON) + ["SOLVER.MAX_ITER", iters]
    if row["dataset"].startswith("coco"):
        opts += _SMOKE_COCO
        opts += (
            ["MODEL.RESNETS.DEPTH", 14]
            if resnest
            else ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64]
        )
    else:
        opts += _SMOKE_ADE
        opts += (
            ["MODEL.RESNETS.DEPTH", 14]
            if resnest
            else ["MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.WIDTH_PER_GROUP", 16]
        )
    return opts


def smoke_backbone(row: Dict) -> str:
    if row["backbone"].startswith("S-"):
        return "S-14"
    return "R-18" if row["dataset"].startswith("coco") else "R-50 (width 16)"


def smoke(args) -> int:
    """Train + evaluate every matrix cell (R-50/S-50 row of each task) at toy scale, with the
    engine that tools/train_net.py runs (same checks, trainer, evaluator, results.json)."""
    import torch

    from resnest_dense import engine

    torch.manual_seed(0)
    # One thread: on a shared CPU, two OpenMP threads per process fighting other jobs are
    # several times slower than one.
    torch.set_num_threads(args.threads)
    root = os.path.abspath(args.output)
    register_smoke_sets(os.path.join(root, "datasets"))
    # The ResNet / ResNeSt pairs: tasks quoted without a ResNet baseline (PASCAL Context) have
    # no gain to show.
    paired = {r["task"] for r in paper_rows() if r["backbone"] == "R-50"}
    rows = [r for r in paper_rows() if r["backbone"] in ("R-50", "S-50") and r["task"] in paired]
    rows = [r for r in rows if args.only.search(run_id(r))]
    progress = Progress(len(rows))
    t0 = time.time()
    for i, row in enumerate(rows, 1):
        out = os.path.join(root, "smoke", run_id(row))
        opts = [str(o) for o in smoke_opts(row, args.iters)] + ["OUTPUT_DIR", out]
        cfg = tool_config(row["config"], opts)
        cfg.freeze()
        write_run_json(
            out, row, kind="toy", smoke_backbone=smoke_backbone(row), iters=args.iters, opts=opts
        )
        progress.step(i, run_id(row), f"training {smoke_backbone(row)} for {args.iters} iters")
        if not engine.train(cfg):
            logger.error("%s: training produced no evaluation results", run_id(row))
            return 1
        progress.finish_run()
    logger.info("Smoke matrix of %d runs took %s", len(rows), _fmt_s(time.time() - t0))
    collect(os.path.join(root, "smoke"), os.path.join(root, "smoke"))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--eval-released", action="store_true")
    mode.add_argument("--train", action="store_true")
    mode.add_argument("--collect", metavar="ROOT")
    mode.add_argument("--smoke", action="store_true")
    parser.add_argument("--output", default="output/reproduce", help="root of the run dirs")
    parser.add_argument("--only", help="regex on the run / entry names to select")
    parser.add_argument("--dry-run", action="store_true", help="print commands, run nothing")
    parser.add_argument("--num-gpus", type=int, default=8, help="GPUs per training run")
    parser.add_argument("--iters", type=int, default=30, help="--smoke iterations per run")
    parser.add_argument("--threads", type=int, default=1, help="--smoke torch CPU threads")
    parser.add_argument("--download", action="store_true", default=None,
                        help="allow downloading released weights (default: unless "
                             "RESNEST_DENSE_OFFLINE is set)")  # fmt: skip
    parser.add_argument("--lazy", action="store_true",
                        help="--eval-released with each config's LazyConfig twin")  # fmt: skip
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for --train")
    args = parser.parse_args(argv)
    if args.lazy and not args.eval_released:
        parser.error("--lazy applies to --eval-released (--train runs each row's own config)")
    try:
        args.only = re.compile(args.only or "")
    except re.error as e:
        parser.error(f"--only {args.only!r} is not a valid regular expression: {e}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    if args.collect:
        collect(args.collect)
        return 0
    if args.eval_released:
        return eval_released(args)
    if args.train:
        return train(args)
    return smoke(args)


if __name__ == "__main__":
    sys.exit(main())
