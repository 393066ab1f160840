"""DeepLabV3 on a tiny ResNeSt-14 (radix 2, OS8, reference avd / dilation) trained from scratch on
the generated toy segmentation set on CPU: the LazyConfig twin of
``configs/quick_schedules/toy_deeplabv3_S14_OS8.yaml`` (the PyTorch-Encoding ADE20K recipe,
narrow: 200 iterations of 8 images at lr 0.01, 96 x 96 crops from a 112 base size)."""

from ..common.data.ade20k import dataloader
from ..common.models.deeplabv3 import model
from ..common.optim import SemSegSGD as optimizer
from ..common.schedule import poly as lr_multiplier
from ..common.train import train

model.backbone.update(depth=14, stem_width=16, out_channels=64)
shapes = model.sem_seg_head.input_shape
# ResNeSt-14 with 64 res2 channels: 256 / 512 channels at res4 / res5.
shapes.res4.channels, shapes.res5.channels = 256, 512
model.sem_seg_head.update(num_classes=4, aspp_channels=64, aux_channels=32)
# The model tests the toy images at their own size (TEST.SEM_SEG.BASE_SIZE / CROP_SIZE 0).
model.update(base_size=0, crop_size=0)

dataloader.train.dataset.names = "toy_sem_seg_train"
augs = dataloader.train.mapper.augmentations
augs[0].update(target_height=112, target_width=112)
augs[1].crop_size = (96, 96)
dataloader.train.update(total_batch_size=8, num_workers=2)
dataloader.test.dataset.names = "toy_sem_seg_val"
dataloader.test.num_workers = 2

optimizer.lr = 0.01
train.update(
    device="cpu",
    init_checkpoint="",
    output_dir="./output/toy_deeplabv3_lazy",
    max_iter=200,
    precise_bn=dict(enabled=False, num_iter=200),
)
train.checkpointer.period = 200
