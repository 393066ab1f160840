"""FCN (output stride 8) on ResNeSt-50 as PyTorch-Encoding's ``fcn_resnest50_ade``: the twin of
``ADE20K-SemanticSegmentation/fcn_S_50_OS8_syncbn_120ep.yaml`` (``EncodingFCNHead``).

:mod:`.deeplabv3` with the ASPP head replaced by Encoding's FCN head on res5 (3x3 conv 2048 ->
512, norm, ReLU, dropout 0.1, 1x1 classifier) and the same auxiliary FCN head on res4 (256 wide,
loss weight 0.2); backbone, pixel statistics and test procedure as :mod:`.deeplabv3`.
"""

from resnest_dense.modeling.sem_seg_heads import EncodingFCNHead

from .deeplabv3 import model

# The DeepLabV3 head's arguments (inputs, classes, norm, auxiliary head, losses) with FCN's head
# in place of ASPP.
model.sem_seg_head._target_ = EncodingFCNHead
del model.sem_seg_head.aspp_channels, model.sem_seg_head.atrous_rates
model.sem_seg_head.channels = 512
