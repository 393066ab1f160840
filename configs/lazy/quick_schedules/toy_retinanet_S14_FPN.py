"""RetinaNet on a small ResNeSt-14 trained from scratch on the generated toy shapes on CPU: the
LazyConfig twin of ``configs/quick_schedules/toy_retinanet_S14_FPN.yaml`` (narrow FPN and
2-conv heads with GroupNorm, anchors from 16 px; 300 iterations of 8 images, lr 0.01, x0.1 at
240)."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.coco import dataloader
from ..common.models.retinanet_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.update(depth=14, stem_width=16, out_channels=64, freeze_at=0)
model.backbone.out_channels = 64
model.backbone.top_block.in_channels = 512  # res5 of this ResNeSt-14: 64 x 8
model.head.conv_dims = [64, 64]
# GroupNorm after each head conv (a from-scratch toy: the YAML says why).
model.head.norm = "GN"
# The recipe's 3 scales per level, halved for the small toy images (P3 anchors from 16 px).
model.anchor_generator.sizes = [
    [x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in (16, 32, 64, 128, 256)
]
model.update(num_classes=3, test_topk_candidates=300, max_detections_per_image=20)

# Keep the images without objects, so batches mix empty and annotated images.
dataloader.train.dataset.update(names="toy_coco_train", filter_empty=False)
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(
        short_edge_length=(128, 144, 160, 176, 192), sample_style="choice", max_size=320
    ),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.update(total_batch_size=8, num_workers=2)
dataloader.test.dataset.names = "toy_coco_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=160, max_size=320)
]
dataloader.test.num_workers = 2

optimizer.lr = 0.01
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[240], num_updates=300),
    warmup_length=50 / 300,
    warmup_method="linear",
    warmup_factor=0.001,
)
train.update(
    device="cpu",
    init_checkpoint="",
    output_dir="./output/toy_retinanet_lazy",
    max_iter=300,
    precise_bn=dict(enabled=True, num_iter=20),
)
train.checkpointer.period = 300
