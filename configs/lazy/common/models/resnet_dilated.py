"""The plain-ResNet baseline backbone of the DeepLabV3 recipe: PyTorch-Encoding's ``resnet50s``
(deep stem of width 64, torchvision-style bottlenecks, reference dilation for output stride 8);
the twin of ``build_resnet_dilated_backbone``. Use as ``model.backbone = backbone`` on
:mod:`.deeplabv3`; other depths: ``backbone.stages.depth = 101``."""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet

from resnest_dense.modeling.backbone import DeepStem
from resnest_dense.modeling.backbone.dilated import make_dilated_resnet_stages

backbone = L(ResNet)(
    stem=L(DeepStem)(in_channels=3, stem_width=64, norm="SyncBN"),
    stages=L(make_dilated_resnet_stages)(
        depth=50, in_channels=128, norm="SyncBN", dilations=(1, 1, 2, 4)
    ),
    out_features=["res4", "res5"],
    freeze_at=0,
)
