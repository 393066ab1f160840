"""DeepLabV3+ (separable ASPP + res2 decoder) on a tiny ResNeSt-14 trained from scratch on the
generated toy segmentation set on CPU: the LazyConfig twin of
``configs/quick_schedules/toy_deeplabv3plus_S14_OS8.yaml`` (the ADE20K DeepLabV3+ recipe, narrow:
200 iterations of 8 images, random resize of (112, 96) x U(0.5, 2.0), 96 x 96 crops)."""

from ..common.ade20k_deeplabv3plus import dataloader, lr_multiplier, model, optimizer, train
from ..common.data.mmseg import resize_crop_flip

model.backbone.update(depth=14, stem_width=16, out_channels=64)
shapes = model.sem_seg_head.input_shape
# ResNeSt-14 with 64 res2 channels: 64 / 256 / 512 channels at res2 / res4 / res5.
shapes.res2.channels, shapes.res4.channels, shapes.res5.channels = 64, 256, 512
model.sem_seg_head.update(num_classes=4, channels=64, low_level_channels=16, aux_channels=32)

dataloader.train.dataset.names = "toy_sem_seg_train"
dataloader.train.mapper.augmentations = resize_crop_flip(long=112, short=96, crop_size=(96, 96))
dataloader.train.update(total_batch_size=8, num_workers=2)
dataloader.test.dataset.names = "toy_sem_seg_val"
# INPUT.MIN_SIZE_TEST 0: the toy images are tested at their own size.
dataloader.test.mapper.augmentations = []
dataloader.test.num_workers = 2

train.update(
    device="cpu", init_checkpoint="", output_dir="./output/toy_deeplabv3plus_lazy", max_iter=200
)
train.checkpointer.period = 200
