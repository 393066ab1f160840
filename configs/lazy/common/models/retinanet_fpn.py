"""RetinaNet of this project's RetinaNet recipe (twin of ``Base-RetinaNet-ResNeSt.yaml``):
detectron2's ``common/models/retinanet.py`` (4-conv heads without norm, 3 scales x 3 aspect
ratios of anchors on P3-P7, IoU thresholds 0.4 / 0.5, focal loss 0.25 / 2, L1 box loss) on the
ResNeSt-50 FPN of ``build_retinanet_resnest_fpn_backbone``: res3-res5 into the FPN, P6 / P7
convs on C5 (res5), SyncBN in backbone and FPN; RGB input with torchvision's mean/std.

``resnet_backbone`` is the ResNet baseline's, ``build_retinanet_resnet_fpn_backbone`` of
detectron2 (``*_R_*`` YAMLs): detectron2's ResNet with the same P6 / P7 convs on C5. ``res5``
has 2048 channels at depth 50 / 101; a narrower backbone sets ``top_block.in_channels``.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from .resnest_fpn import backbone
from .resnet_fpn import backbone as resnet_backbone

_LEVELS = ["res3", "res4", "res5"]

backbone.bottom_up.out_features = _LEVELS
backbone.top_block = L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}")
resnet_backbone.bottom_up.out_features = _LEVELS
resnet_backbone.top_block = L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}")

model = get_config("common/models/retinanet.py").model
model.backbone = backbone
# One input shape per level, following the FPN width (64 in the toy schedule).
model.head.input_shape = [L(ShapeSpec)(channels="${....backbone.out_channels}")] * 5
model.pixel_mean = [123.68, 116.779, 103.939]
model.pixel_std = [58.393, 57.12, 57.375]
model.input_format = "RGB"
