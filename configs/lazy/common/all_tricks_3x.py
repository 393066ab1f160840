"""The "all tricks" 3x recipe of the detectron2-ResNeSt model zoo (its ResNeSt-200 Cascade Mask
R-CNN rows): the twin of ``Base-Cascade-Mask-RCNN-FPN-ResNeSt-all-tricks-3x.yaml``.

* ``model``: the Cascade Mask R-CNN of :mod:`.models.cascade_mask_rcnn_fpn` (class-agnostic
  boxes, 2000 training proposals, SyncBN 4conv1fc box heads) with an 8-conv mask head;
* ``dataloader``: detectron2's random crop (relative 0.9 x 0.9, boxes recomputed from the
  cropped masks) before a range-scale resize with the short side drawn from 640..864 (max
  1440), then flip; test at 800 / 1333 (single scale, as the fork's val2017 numbers);
* ``lr_multiplier`` / ``train``: 270k iterations, x0.1 at 240k and 255k, PreciseBN;
  ``optimizer``: detectron2's SGD, lr 0.02 for batch 16.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .data.coco import dataloader
from .models.cascade_mask_rcnn_fpn import model
from .optim import SGD as optimizer
from .schedule import lr_multiplier_3x_tricks as lr_multiplier
from .train import train

# conv_dims lists the 8 convs and the deconv (detectron2: N - 1 convs + 1 upsampling layer).
model.roi_heads.mask_head.conv_dims = [256] * 9

dataloader.train.mapper.augmentations = [
    # detectron2's INPUT.CROP defaults (TYPE relative_range, SIZE [0.9, 0.9]), applied first.
    L(T.RandomCrop)(crop_type="relative_range", crop_size=[0.9, 0.9]),
    L(T.ResizeShortestEdge)(short_edge_length=(640, 864), sample_style="range", max_size=1440),
    L(T.RandomFlip)(horizontal=True),
]
# A crop cuts boxes: recompute them from the cropped masks, as DatasetMapper.from_config does.
dataloader.train.mapper.recompute_boxes = True

train.max_iter = 270000
