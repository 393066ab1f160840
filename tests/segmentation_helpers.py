"""Shared helpers of the segmentation tests: tiny configs and models."""

import os


from detectron2.modeling import build_model

from resnest_dense import get_resnest_cfg
from resnest_dense.modeling import meta_arch, sem_seg_heads  # noqa: F401  (registration)
from resnest_dense.modeling.backbone import dilated  # noqa: F401  (registration)

TOY_YAML = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "configs",
    "quick_schedules",
    "toy_deeplabv3_S14_OS8.yaml",
)


def segmentation_cfg(yaml_file: str = TOY_YAML, opts=()):
    """A mutable config: ResNeSt + segmentation keys, ``yaml_file`` and ``opts`` merged."""
    cfg = get_resnest_cfg(yaml_file, opts)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def tiny_cfg(backbone: str = "resnest", output_stride: int = 8, opts=()):
    """The toy DeepLabV3 with a ResNeSt-14 (or a narrow ResNet-50 baseline) and plain BN."""
    extra = [
        "MODEL.RESNETS.OUTPUT_STRIDE", output_stride,
        "MODEL.RESNETS.NORM", "BN",
        "MODEL.SEM_SEG_HEAD.NORM", "BN",
    ]  # fmt: skip
    if backbone == "resnet":
        extra += [
            "MODEL.BACKBONE.NAME", "build_resnet_dilated_backbone",
            "MODEL.RESNETS.DEPTH", 50,
            "MODEL.RESNETS.RADIX", 1,
            "MODEL.RESNETS.AVD", False,
            "MODEL.RESNETS.AVG_DOWN", False,
            "MODEL.RESNETS.WIDTH_PER_GROUP", 16,
        ]  # fmt: skip
    return segmentation_cfg(TOY_YAML, extra + list(opts))


def tiny_model(backbone: str = "resnest", output_stride: int = 8, opts=()):
    return build_model(tiny_cfg(backbone, output_stride, opts))
