"""Panoptic FPN on the toy ResNeSt-14 of ``toy_mask_rcnn_S14_FPN.py``, trained on the generated
toy panoptic set (toy shapes as things on sky / ground stuff) on CPU: the LazyConfig twin of
``configs/quick_schedules/toy_panoptic_fpn_S14.yaml``."""

from ..common.models.panoptic_fpn import model as panoptic
from .toy_mask_rcnn_S14_FPN import dataloader, lr_multiplier, model, optimizer, train

model.update(
    _target_=panoptic._target_,
    sem_seg_head=panoptic.sem_seg_head,
    combine_overlap_thresh=0.5,
    # Toy images are 64-160 px: COCO's 4096-pixel minimum would drop every stuff region.
    combine_stuff_area_thresh=64,
    combine_instances_score_thresh=0.5,
)
# "things", sky, ground
model.sem_seg_head.update(num_classes=3, conv_dims=64)
dataloader.train.dataset.names = "toy_panoptic_train"
dataloader.test.dataset.names = "toy_panoptic_val"
train.output_dir = "./output/toy_panoptic_fpn_lazy"
