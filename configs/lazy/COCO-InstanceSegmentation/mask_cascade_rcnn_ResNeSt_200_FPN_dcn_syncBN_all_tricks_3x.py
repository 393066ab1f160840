"""Cascade Mask R-CNN, ResNeSt-200 with modulated deformable convs (DCNv2, 2 deformable groups)
in res3-res5, the "all tricks" 3x recipe of the detectron2-ResNeSt model zoo: the LazyConfig twin
of ``configs/COCO-InstanceSegmentation/mask_cascade_rcnn_ResNeSt_200_FPN_dcn_syncBN_all_tricks_3x
.yaml``."""

from ..common.all_tricks_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(
    depth=200,
    stem_width=64,
    deform_on_per_stage=[False, True, True, True],
    deform_modulated=True,
    deform_num_groups=2,
)
train.init_checkpoint = "resnest://resnest200"
