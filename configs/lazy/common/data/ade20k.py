"""ADE20K loaders of the PyTorch-Encoding DeepLabV3 recipe (the ``INPUT`` keys of
``Base-DeepLabV3-OS8.yaml``): a random long-side scale of the 520 base size in [0.5, 2.0], a
480x480 crop padded with black pixels / the ignore label, horizontal flip, Gaussian blur with
probability 0.5; test images unresized (the model scales and tiles them itself)."""

from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from omegaconf import OmegaConf

from resnest_dense.engine.semseg import RandomGaussianBlur

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="ade20k_sem_seg_train", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeScale)(min_scale=0.5, max_scale=2.0, target_height=520, target_width=520),
            L(T.FixedSizeCrop)(crop_size=(480, 480), pad=True, pad_value=0.0, seg_pad_value=255),
            L(T.RandomFlip)(horizontal=True),
            L(RandomGaussianBlur)(prob=0.5),
        ],
        image_format="RGB",
    ),
    total_batch_size=16,
    aspect_ratio_grouping=False,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="ade20k_sem_seg_val", filter_empty=False),
    mapper=L(DatasetMapper)(is_train=False, augmentations=[], image_format="RGB"),
    num_workers=4,
)
