"""DeepLabV3 (output stride 8) on ResNeSt-50 as trained by PyTorch-Encoding for the paper: the
twin of ``ADE20K-SemanticSegmentation/Base-DeepLabV3-OS8.yaml`` with a ResNeSt-50 leaf.

The backbone dilates res4 / res5 by 2 / 4 the reference way (``reference_dilation``: first block
of a dilated stage at the lower dilation, stride-1 avd pools). The head's ``input_shape`` is
written out (channels of res4 / res5, stride 8) because a LazyConfig head does not see the
backbone; change it with the backbone's width. ``atrous_rates`` are used as given (the YAML
builder rescales ``ATROUS_RATES`` to the feature stride; at stride 8 they are the same).
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from resnest_dense.modeling.backbone import build_resnest
from resnest_dense.modeling.meta_arch.multiscale_segmentor import MultiScaleSemanticSegmentor
from resnest_dense.modeling.sem_seg_heads import EncodingDeepLabV3Head

model = L(MultiScaleSemanticSegmentor)(
    backbone=L(build_resnest)(
        depth=50,
        radix=2,
        deep_stem=True,
        stem_width=32,
        avd=True,
        avg_down=True,
        norm="SyncBN",
        out_features=["res4", "res5"],
        freeze_at=0,
        dilations=(1, 1, 2, 4),
        reference_dilation=True,
    ),
    sem_seg_head=L(EncodingDeepLabV3Head)(
        input_shape={
            "res4": ShapeSpec(channels=1024, stride=8),
            "res5": ShapeSpec(channels=2048, stride=8),
        },
        in_feature="res5",
        num_classes=150,
        aspp_channels=256,
        atrous_rates=[12, 24, 36],
        norm="SyncBN",
        aux_in_feature="res4",
        aux_channels=256,
        aux_loss_weight=0.2,
        loss_weight=1.0,
        ignore_value=255,
        align_corners=True,
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    # Single-scale test: long side 520, 480 sliding windows (TEST.SEM_SEG of the YAML).
    scales=[1.0],
    flip=False,
    base_size=520,
    crop_size=480,
    stride_rate=2.0 / 3.0,
    align_corners=True,
)
