#!/usr/bin/env python
"""Train or evaluate any config of resnest_dense (detection, instance and semantic segmentation).

Examples::

    python tools/train_net.py --config-file configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml \
        OUTPUT_DIR output/toy_mask_rcnn
    python tools/train_net.py --config-file configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml \
        --eval-only MODEL.WEIGHTS output/toy_mask_rcnn/model_final.pth
    python tools/train_net.py --num-gpus 8 \
        --config-file configs/COCO-Detection/faster_rcnn_ResNeSt_50_FPN_syncbn_range-scale_1x.yaml

After evaluation, ``<OUTPUT_DIR>/results.json`` holds the results (read by tools/reproduce.py);
TensorBoard events and metrics.json come from detectron2's writers. ``--eval-only`` loads the
weights strictly (``--allow-random-weights`` to evaluate anyway) and folds batch norms for speed
(exact) unless ``TEST.FAST_INFERENCE False``. ``MODEL.WEIGHTS`` may also name a file written by
``tools/deploy/export_model.py`` (``.onnx`` / ``.ts``): ``--eval-only`` then evaluates it in
onnxruntime / TorchScript on the same data (docs/deployment.md).
"""

from resnest_dense.engine import argument_parser, run_from_args
from resnest_dense.engine.launch import launch_from_args


def main(args):
    return run_from_args(args)


def invoke_main() -> None:
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    # Under torchrun or srun the processes already exist (rank / world size in the environment);
    # otherwise detectron2's launch spawns --num-gpus workers.
    launch_from_args(main, args)


if __name__ == "__main__":
    invoke_main()
