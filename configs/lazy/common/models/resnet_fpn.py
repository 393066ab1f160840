"""The ResNet-50 baseline backbone of the paper's R-CNN recipe: detectron2's ResNet (7x7 stem,
stride in the 3x3 conv) + FPN with SyncBN; the twin of ``build_resnet_fpn_backbone`` in the
``*_R_50_FPN_*`` YAMLs. Other depths: ``backbone.bottom_up.stages.depth = 101``.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

backbone = L(FPN)(
    bottom_up=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="SyncBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="SyncBN"),
        out_features=["res2", "res3", "res4", "res5"],
        freeze_at=2,
    ),
    in_features="${.bottom_up.out_features}",
    out_channels=256,
    norm="SyncBN",
    top_block=L(LastLevelMaxPool)(),
)
