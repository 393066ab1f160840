"""FCN (output stride 8) on ResNeSt-50 as PyTorch-Encoding's ``fcn_resnest50_ade``: the twin of
``ADE20K-SemanticSegmentation/fcn_S_50_OS8_syncbn_120ep.yaml`` (``EncodingFCNHead``).

:mod:`.deeplabv3` with the ASPP head replaced by Encoding's FCN head on res5 (3x3 conv 2048 ->
512, norm, ReLU, dropout 0.1, 1x1 classifier) and the same auxiliary FCN head on res4 (256 wide,
loss weight 0.2); backbone, pixel statistics and test procedure as :mod:`.deeplabv3`.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from resnest_dense.modeling.sem_seg_heads import EncodingFCNHead

from .deeplabv3 import model

model.sem_seg_head = L(EncodingFCNHead)(
    input_shape={
        "res4": ShapeSpec(channels=1024, stride=8),
        "res5": ShapeSpec(channels=2048, stride=8),
    },
    in_feature="res5",
    num_classes=150,
    channels=512,
    norm="SyncBN",
    aux_in_feature="res4",
    aux_channels=256,
    aux_loss_weight=0.2,
    loss_weight=1.0,
    ignore_value=255,
    align_corners=True,
)
