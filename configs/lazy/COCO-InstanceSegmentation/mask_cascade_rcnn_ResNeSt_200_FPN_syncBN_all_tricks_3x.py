"""Cascade Mask R-CNN, ResNeSt-200, the "all tricks" 3x recipe of the detectron2-ResNeSt model zoo
(8-conv mask head, random crop, range-scale 640..864, 270k iterations): the LazyConfig twin of
``configs/COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_200_FPN_syncBN_all_tricks_3x.yaml``.
"""

from ..common.all_tricks_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(depth=200, stem_width=64)
train.init_checkpoint = "resnest://resnest200"
