"""Faster R-CNN, ResNeSt-50 with modulated deformable convs (DCNv2, 2 deformable groups) as the
split-attention conv of res3-res5, the paper's COCO recipe: the LazyConfig twin of
``configs/COCO-Detection/faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x.yaml``."""

from ..common.data.coco import dataloader
from ..common.models.faster_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x as lr_multiplier
from ..common.train import train

model.backbone.bottom_up.update(
    deform_on_per_stage=[False, True, True, True], deform_modulated=True, deform_num_groups=2
)
train.init_checkpoint = "resnest://resnest50"
dataloader.train.mapper.use_instance_mask = False
