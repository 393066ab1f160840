#!/usr/bin/env python
"""Train or evaluate any config of resnest_dense (detection, instance and semantic segmentation).

Examples::

    python tools/train_net.py --config-file configs/quick_schedules/toy_mask_rcnn_S_50_FPN.yaml \
        OUTPUT_DIR output/toy_mask_rcnn
    python tools/train_net.py --config-file configs/quick_schedules/toy_mask_rcnn_S_50_FPN.yaml \
        --eval-only MODEL.WEIGHTS output/toy_mask_rcnn/model_final.pth
    python tools/train_net.py --num-gpus 8 \
        --config-file configs/COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml

After evaluation, ``<OUTPUT_DIR>/results.json`` holds the results (read by tools/reproduce.py);
TensorBoard events and metrics.json come from detectron2's writers. ``--eval-only`` folds batch
norms for speed (exact) unless ``TEST.FAST_INFERENCE False``.
"""

import logging
import os

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from resnest_dense.engine import Trainer, setup, write_results
from resnest_dense.engine.atomic_checkpoint import AtomicDetectionCheckpointer
from resnest_dense.engine.launch import launch_from_args
from resnest_dense.utils import optimize_for_inference

logger = logging.getLogger("resnest_dense.train_net")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        if cfg.TEST.FAST_INFERENCE:
            optimize_for_inference(model)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
            write_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # The final evaluation of detectron2's EvalHook (also run when TEST.EVAL_PERIOD is 0).
    results = getattr(trainer, "_last_eval_results", None)
    if results and comm.is_main_process():
        write_results(cfg, results, weights=os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    return results


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    # Under torchrun or srun the processes already exist (rank / world size in the environment);
    # otherwise detectron2's launch spawns --num-gpus workers.
    launch_from_args(main, args)


if __name__ == "__main__":
    invoke_main()
