"""Shared pieces of the detection tests: tiny overrides, the toy set, train_net in-process."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from typing import List

from detectron2.data import DatasetCatalog

from resnest_dense.data.toy_coco import register_toy_coco
from resnest_dense.engine import argument_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
TOY_PREFIX = "dettest"

# The four R-CNN families with a ResNeSt-50 backbone (depth is overridden to 14 in tests).
RESNEST_CONFIGS = {
    "faster": "COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml",
    "cascade": "COCO-Detection/faster_cascade_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml",
    "mask": "COCO-InstanceSegmentation/mask_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml",
    "cascade_mask": "COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_50_FPN_syncBN_1x.yaml",
}

# A ResNeSt-14 detector on 64-128 px images with narrow heads: seconds per iteration batch.
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", 14, "MODEL.RESNETS.STEM_WIDTH", 16,
    "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
    "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]],
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, "TEST.DETECTIONS_PER_IMAGE", 10,
    "INPUT.MIN_SIZE_TRAIN", (64, 80), "INPUT.MAX_SIZE_TRAIN", 128,
    "INPUT.MIN_SIZE_TEST", 80, "INPUT.MAX_SIZE_TEST", 128,
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.01, "SOLVER.STEPS", (),
    "SOLVER.WARMUP_ITERS", 0, "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 2,
    "TEST.PRECISE_BN.ENABLED", False, "DATALOADER.NUM_WORKERS", 0,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS", False,
    "DATASETS.TRAIN", (f"{TOY_PREFIX}_train",), "DATASETS.TEST", (f"{TOY_PREFIX}_val",),
]  # fmt: skip


def register_test_toy_set(root: str) -> None:
    """``dettest_{train,val}``: 12 + 4 toy images (image 9 has no object), once per process."""
    if f"{TOY_PREFIX}_train" not in DatasetCatalog.list():
        register_toy_coco(root=root, prefix=TOY_PREFIX, num_train=12, num_val=4)


def load_tool(name: str, folder: str = "tools"):
    """Import ``<folder>/<name>.py`` (a script of tools/ or datasets/, not packages) as a
    module."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, folder, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    # In sys.modules as an import would put it, so its functions pickle (multiprocessing).
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def train_net_args(
    config: str, *opts, eval_only: bool = False, resume: bool = False, allow_random: bool = False
):
    """``tools/train_net.py`` arguments for a config under configs/ (or an absolute path)."""
    argv = ["--config-file", config if os.path.isabs(config) else os.path.join(CONFIGS, config)]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    argv += ["--allow-random-weights"] if allow_random else []
    return argument_parser().parse_args(argv + [str(o) for o in opts])


def run_tool_killed_after_checkpoint(
    tool_argv: List[str], toy_root: str, out, iteration: int = 3, timeout: float = 180
) -> None:
    """Run ``tools/<tool_argv[0]>`` with the given arguments in a subprocess (the test toy set
    registered under ``toy_root``) and SIGKILL it right after ``out/last_checkpoint`` names the
    checkpoint of ``iteration`` (so inside the next iteration)."""
    argv = [os.path.join(REPO, "tools", tool_argv[0])] + [str(a) for a in tool_argv[1:]]
    code = (
        f"import sys, runpy; sys.path.insert(0, {os.path.join(REPO, 'tests')!r}); "
        f"import detection_helpers; detection_helpers.register_test_toy_set({toy_root!r}); "
        f"sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + timeout
    marker = os.path.join(str(out), "last_checkpoint")
    wanted = f"model_{iteration:07d}.pth"
    while time.time() < deadline and proc.poll() is None:
        if os.path.isfile(marker) and open(marker).read() == wanted:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
