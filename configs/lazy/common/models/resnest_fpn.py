"""ResNeSt-50 + FPN (P2-P6) of the paper's R-CNN recipe: the LazyConfig twin of
``MODEL.BACKBONE.NAME build_resnest_fpn_backbone`` with the ``MODEL.RESNETS`` keys of a
ResNeSt leaf YAML (radix 2, deep stem, avd, avg_down; SyncBN in backbone and FPN).

Other depths: ``backbone.bottom_up.update(depth=101, stem_width=64)`` (stem width 64 from
ResNeSt-101 on, as the released weights).
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from resnest_dense.modeling.backbone import build_resnest

backbone = L(FPN)(
    bottom_up=L(build_resnest)(
        depth=50,
        radix=2,
        deep_stem=True,
        stem_width=32,
        avd=True,
        avg_down=True,
        norm="SyncBN",
        out_features=["res2", "res3", "res4", "res5"],
        # detectron2's default MODEL.BACKBONE.FREEZE_AT, which the paper's YAMLs keep.
        freeze_at=2,
    ),
    in_features="${.bottom_up.out_features}",
    out_channels=256,
    norm="SyncBN",
    top_block=L(LastLevelMaxPool)(),
)
