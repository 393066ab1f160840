"""DeepLabV3+ (output stride 8) on ResNeSt-50 in mmsegmentation's layout: the twin of
``ADE20K-SemanticSegmentation/Base-DeepLabV3Plus-OS8.yaml`` with a ResNeSt-50 leaf.

The backbone of :mod:`.deeplabv3` also returns res2, which the decoder fuses. The head is
:class:`~resnest_dense.modeling.sem_seg_heads.SeparableDeepLabV3PlusHead`: separable ASPP
(rates 12 / 24 / 36) 512 wide, a 48-channel res2 projection, a separable decoder, and the
auxiliary FCN head on res4 at loss weight 0.4; every bilinear resize with ``align_corners``
False (``MODEL.SEM_SEG_HEAD.ALIGN_CORNERS``). The test runs the whole image at its mapper size
(``TEST.SEM_SEG.BASE_SIZE / CROP_SIZE`` 0): the test loader resizes it (``INPUT.MIN_SIZE_TEST``
in the YAML). As in :mod:`.deeplabv3`, ``input_shape`` is written out and follows the backbone.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from resnest_dense.modeling.sem_seg_heads import SeparableDeepLabV3PlusHead

from .deeplabv3 import model

model.backbone.out_features = ["res2", "res4", "res5"]
model.sem_seg_head = L(SeparableDeepLabV3PlusHead)(
    input_shape={
        "res2": ShapeSpec(channels=256, stride=4),
        "res4": ShapeSpec(channels=1024, stride=8),
        "res5": ShapeSpec(channels=2048, stride=8),
    },
    in_feature="res5",
    low_level_feature="res2",
    num_classes=150,
    channels=512,
    low_level_channels=48,
    atrous_rates=[12, 24, 36],
    separable=True,
    norm="SyncBN",
    aux_in_feature="res4",
    aux_channels=256,
    aux_loss_weight=0.4,
    loss_weight=1.0,
    ignore_value=255,
    align_corners=False,
)
model.update(base_size=0, crop_size=0, align_corners=False)
