"""Panoptic FPN, ResNeSt-200, the detectron2-ResNeSt fork's "tricks" 3x model (Cascade R-CNN
heads, SyncBN stuff head, range-scale 400..1000 with max 1440, 270k iterations, PreciseBN): the
LazyConfig twin of ``configs/COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x
.yaml``.

One YAML key has no LazyConfig counterpart: ``TEST.AUG.ENABLED True`` (detectron2's test-time
augmentation is a YAML-only switch of the engine). It changes nothing here: detectron2 0.7.2's
TTA wrapper cannot call PanopticFPN, so ``tools/train_net.py --eval-only`` evaluates the YAML
without TTA too (with a warning), and both report the same single-scale numbers.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ..common.data.coco_panoptic import dataloader
from ..common.models.cascade_panoptic_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_3x_tricks as lr_multiplier
from ..common.train import train

model.backbone.bottom_up.update(depth=200, stem_width=64)
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(400, 1000), sample_style="range", max_size=1440),
    L(T.RandomFlip)(horizontal=True),
]
train.update(init_checkpoint="resnest://resnest200", max_iter=270000)
