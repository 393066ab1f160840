#!/usr/bin/env python
"""Train or evaluate a detectron2 LazyConfig (Python) config of resnest_dense, in detectron2's
``tools/lazyconfig_train_net.py`` convention, on the engine of ``tools/train_net.py``: the same
start-up checks, exact ``--resume``, checkpoints with class names, evaluator and results file.

Examples::

    python tools/lazyconfig_train_net.py \
        --config-file configs/lazy/quick_schedules/toy_mask_rcnn_S14_FPN.py
    python tools/lazyconfig_train_net.py --num-gpus 8 \
        --config-file configs/lazy/new_baselines/mask_rcnn_ResNeSt_50_FPN_100ep_LSJ.py
    python tools/lazyconfig_train_net.py --resume \
        --config-file configs/lazy/quick_schedules/toy_mask_rcnn_S14_FPN.py
    python tools/lazyconfig_train_net.py --eval-only \
        --config-file configs/lazy/quick_schedules/toy_mask_rcnn_S14_FPN.py \
        train.init_checkpoint=output/toy_mask_rcnn_lazy/model_final.pth

Overrides are ``dotted.key=value`` and must name existing keys (``train.max_iter=100``,
``dataloader.train.total_batch_size=16``, ``train.init_checkpoint=resnest://resnest50``).
``<train.output_dir>/results.json`` holds the evaluation results. See docs/configs.md.
"""

from resnest_dense.engine import argument_parser, run_from_args
from resnest_dense.engine.launch import launch_from_args

EPILOG = """LazyConfig overrides: trailing dotted.key=value pairs, e.g.
  train.max_iter=100 train.output_dir=output/run1 train.init_checkpoint=resnest://resnest50
The same engine as tools/train_net.py (which takes YAML configs and KEY VALUE options)."""


def main(args):
    return run_from_args(args)


def invoke_main() -> None:
    args = argument_parser(epilog=EPILOG).parse_args()
    print("Command Line Args:", args)
    launch_from_args(main, args)


if __name__ == "__main__":
    invoke_main()
