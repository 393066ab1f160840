"""ResNeSt backbones for detectron2 (Zhang et al., "ResNeSt: Split-Attention Networks", 2020).

The blocks are :class:`detectron2.layers.CNNBlockBase` subclasses that go into detectron2's own
:class:`~detectron2.modeling.backbone.ResNet`, so stage naming (``res2..res5``), ``freeze_at``,
``out_features`` and ``output_shape()`` behave exactly as for detectron2's ResNet. Parameter names
equal the official detectron2-ResNeSt backbone (``stem.conv1_1``, ``res2.0.conv2.fc1``, ...).

Reading the config is kept apart: :func:`make_resnest_stages` is a plain function of keyword
arguments, :func:`build_resnest_backbone` only translates ``cfg.MODEL.RESNETS`` into them.
"""

import contextlib
import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, ResNet
from detectron2.modeling.backbone.resnet import BasicStem
from torch import nn

from ...layers import DropBlock2d, SplitAttentionConv2d
from ...layers.deform_conv import offset_channels

__all__ = [
    "RESNEST_DEPTHS",
    "DeepStem",
    "ResNeStBottleneckBlock",
    "make_resnest_stages",
    "build_resnest_backbone",
]

logger = logging.getLogger(__name__)

# Blocks per stage (res2..res5) for every depth of the paper and of timm's small variants.
RESNEST_DEPTHS: Dict[int, Sequence[int]] = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
    269: (3, 30, 48, 8),
}


def _c2_msra_init(conv: Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


class DeepStem(CNNBlockBase):
    """Three 3x3 convs (stride 2, 1, 1) and a 3x3 stride-2 max pool: the ResNeSt ("deep") stem.

    Output channels are ``2 * stem_width``; total stride 4.
    """

    def __init__(self, in_channels: int = 3, stem_width: int = 32, norm: str = "BN"):
        """
        Args:
            in_channels: image channels.
            stem_width: width of the first two convs; the third has twice as many channels.
            norm: a detectron2 norm name for ``get_norm``.
        """
        super().__init__(in_channels, 2 * stem_width, 4)
        widths = [(in_channels, stem_width, 2), (stem_width, stem_width, 1)]
        widths.append((stem_width, 2 * stem_width, 1))
        for i, (cin, cout, stride) in enumerate(widths, start=1):
            conv = Conv2d(
                cin, cout, 3, stride=stride, padding=1, bias=False, norm=get_norm(norm, cout)
            )
            _c2_msra_init(conv)
            self.add_module(f"conv1_{i}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1_1(x))
        x = F.relu_(self.conv1_2(x))
        x = F.relu_(self.conv1_3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNeStBottleneckBlock(CNNBlockBase):
    """1x1 conv -> 3x3 split-attention conv -> 1x1 conv, with a residual shortcut.

    With ``avd`` the block's stride moves from the 3x3 conv to a 3x3 average pool placed after
    (or, with ``avd_first``, before) the split-attention conv. With ``avg_down`` a projection
    shortcut downsamples with an average pool followed by a stride-1 1x1 conv.

    With ``deform`` the split-attention conv is deformable (DCNv2 when ``deform_modulated``) and
    a 3x3 ``conv2_offset`` (with bias, ``groups = deform_num_groups``, zero-initialised so a new
    block starts as the plain conv up to the mask's 0.5) predicts its offsets from the same input,
    as in the detectron2-ResNeSt fork's ``DeformBottleneckBlock``: same names, same shapes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        radix: int = 2,
        norm: str = "BN",
        dilation: int = 1,
        avd: bool = True,
        avd_first: bool = False,
        avd_at_stride_1: bool = False,
        avg_down: bool = True,
        dropblock_prob: float = 0.0,
        grad_checkpoint: bool = False,
        deform: bool = False,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        """
        Args:
            in_channels: input channels.
            out_channels: output channels.
            bottleneck_channels: width of the 3x3 split-attention conv (all cardinal groups).
            stride: spatial stride of the block.
            num_groups: cardinality.
            radix: splits per cardinal group.
            norm: a detectron2 norm name for ``get_norm``.
            dilation: dilation of the 3x3 conv.
            avd: downsample with a 3x3 average pool instead of a strided 3x3 conv.
            avd_first: place that pool before the 3x3 conv instead of after it.
            avd_at_stride_1: apply the avd pool (stride 1) even when ``stride == 1``; the
                official ResNeSt does so in the first block of a dilated stage.
            avg_down: average-pool the shortcut before its 1x1 conv when downsampling.
            dropblock_prob: DropBlock probability after each norm of the residual branch.
            grad_checkpoint: in training, keep only the block's input and recompute its
                activations during backward (less memory, about one more forward of compute).
                Eager only: a ``torch.jit.script``-ed block raises if it would checkpoint.
            deform: deformable split-attention conv with a ``conv2_offset`` predictor.
            deform_modulated: DCNv2 (offsets + mask) rather than DCNv1 (offsets only).
            deform_num_groups: deformable groups (channels sharing one set of offsets).
        """
        super().__init__(in_channels, out_channels, stride)
        self.grad_checkpoint = grad_checkpoint
        use_avd = avd and (stride > 1 or avd_at_stride_1)
        avd_pool = nn.AvgPool2d(3, stride, padding=1) if use_avd else None
        self.avd_first = avd_pool if avd_first else None
        self.avd_last = None if avd_first else avd_pool
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        conv2_stride = 1 if use_avd else stride
        if deform:
            if deform_num_groups < 1 or bottleneck_channels % deform_num_groups:
                raise ValueError(
                    f"MODEL.RESNETS.DEFORM_NUM_GROUPS={deform_num_groups} must be >= 1 and divide "
                    f"the {bottleneck_channels} channels of the 3x3 conv"
                )
            self.conv2_offset = Conv2d(
                bottleneck_channels,
                offset_channels(3, deform_num_groups, deform_modulated),
                kernel_size=3,
                stride=conv2_stride,
                padding=dilation,
                dilation=dilation,
                groups=deform_num_groups,
            )
            # Zero offsets and mask logits: training starts from the regular sampling grid.
            nn.init.zeros_(self.conv2_offset.weight)
            nn.init.zeros_(self.conv2_offset.bias)
        else:
            self.conv2_offset = None
        self.conv2 = SplitAttentionConv2d(
            bottleneck_channels,
            bottleneck_channels,
            stride=conv2_stride,
            dilation=dilation,
            cardinality=num_groups,
            radix=radix,
            norm=norm,
            dropblock_prob=dropblock_prob,
            deformable=deform,
            deform_modulated=deform_modulated,
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.dropblock = DropBlock2d(dropblock_prob, 3) if dropblock_prob > 0 else None
        if in_channels != out_channels or stride != 1:
            self.shortcut_pool = (
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                if avg_down and stride > 1
                else None
            )
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=1 if avg_down else stride,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
            _c2_msra_init(self.shortcut)
        else:
            self.shortcut_pool = None
            self.shortcut = None
        _c2_msra_init(self.conv1)
        _c2_msra_init(self.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpoint and self.training and torch.is_grad_enabled():
            return self._checkpointed_forward(x)
        return self._forward(x)

    # TorchScript cannot compile activation checkpointing (a lambda, a context manager); it is a
    # training-only path, so a scripted block keeps the eval forward and raises here if asked.
    @torch.jit.unused
    def _checkpointed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.utils.checkpoint.checkpoint(
            self._forward,
            x,
            use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), _frozen_running_stats(self)),
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.dropblock is not None:
            out = self.dropblock(out)
        out = F.relu_(out)
        if self.avd_first is not None:
            out = self.avd_first(out)
        offset: Optional[torch.Tensor] = None
        if self.conv2_offset is not None:
            offset = self.conv2_offset(out)
        out = self.conv2(out, offset)
        if self.avd_last is not None:
            out = self.avd_last(out)
        out = self.conv3(out)
        if self.dropblock is not None:
            out = self.dropblock(out)
        shortcut = x
        if self.shortcut is not None:
            if self.shortcut_pool is not None:
                shortcut = self.shortcut_pool(shortcut)
            shortcut = self.shortcut(shortcut)
            if self.dropblock is not None:
                shortcut = self.dropblock(shortcut)
        return F.relu_(out + shortcut)


@contextlib.contextmanager
def _frozen_running_stats(module: nn.Module):
    """Keep batch-norm running statistics unchanged while a checkpointed block is recomputed.

    The recomputation runs the norms in training mode a second time; momentum 0 makes that
    second pass use batch statistics without counting the batch twice in the running ones.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked) for m in norms]
    for m in norms:
        m.momentum = 0.0
        if m.num_batches_tracked is not None:
            m.num_batches_tracked = m.num_batches_tracked.clone()
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked = count


def _stage_dilations(dilation: int, num_blocks: int, reference_dilation: bool) -> List[int]:
    # The official ResNeSt (and PyTorch-Encoding) runs the first block of a dilated stage at the
    # next lower dilation (1 for dilation 2, 2 for dilation 4); detectron2 keeps it at `dilation`.
    first = max(dilation // 2, 1) if reference_dilation else dilation
    return [first] + [dilation] * (num_blocks - 1)


def make_resnest_stages(
    *,
    depth: int,
    in_channels: int,
    out_channels: int = 256,
    radix: int = 2,
    num_groups: int = 1,
    bottleneck_width: int = 64,
    norm: str = "BN",
    avd: bool = True,
    avd_first: bool = False,
    avg_down: bool = True,
    dropblock_prob: float = 0.0,
    dilations: Sequence[int] = (1, 1, 1, 1),
    reference_dilation: bool = False,
    num_stages: int = 4,
    grad_checkpoint: bool = False,
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
    deform_modulated: bool = False,
    deform_num_groups: int = 1,
) -> List[List[CNNBlockBase]]:
    """Build the blocks of res2..res5 (or the first ``num_stages`` of them).

    Args:
        depth: one of :data:`RESNEST_DEPTHS`.
        in_channels: channels coming out of the stem.
        out_channels: output channels of res2; doubled at every later stage.
        radix, num_groups, norm, avd, avd_first, avg_down: see :class:`ResNeStBottleneckBlock`.
        bottleneck_width: width per cardinal group for a 64-wide stage; the 3x3 conv of stage
            ``s`` has ``int(planes * bottleneck_width / 64) * num_groups`` channels with
            ``planes = out_channels / 4`` (64, 128, 256, 512 by default), as in the paper.
        dropblock_prob: DropBlock probability, applied in res4 and res5 as in the reference.
        dilations: dilation of res2..res5; a stage with dilation > 1 has stride 1.
        reference_dilation: follow the official ResNeSt in dilated stages (first block at
            the lower dilation and with a stride-1 avd pool); detectron2 style otherwise.
        num_stages: how many stages to build (a backbone returning only res4 needs three).
        grad_checkpoint: gradient checkpointing in every block (see the block).
        deform_on_per_stage: deformable 3x3 conv in every block of res2..res5 (the fork's DCN
            models: ``(False, True, True, True)``).
        deform_modulated, deform_num_groups: see :class:`ResNeStBottleneckBlock`.

    Returns:
        One list of blocks per stage.
    """
    if depth not in RESNEST_DEPTHS:
        raise ValueError(
            f"ResNeSt depth {depth} is not supported; choose one of {sorted(RESNEST_DEPTHS)}"
        )
    if radix < 1:
        raise ValueError(f"ResNeSt radix must be >= 1, got {radix}")
    if len(dilations) != 4 or dilations[0] != 1 or any(d not in (1, 2, 4) for d in dilations):
        raise ValueError(
            f"ResNeSt stage dilations must be 4 values in (1, 2, 4), res2 = 1; got {dilations}"
        )
    if len(deform_on_per_stage) != 4:
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE needs one value per stage res2..res5, got "
            f"{list(deform_on_per_stage)}"
        )
    stages = []
    for idx, num_blocks in enumerate(RESNEST_DEPTHS[depth][:num_stages]):
        dilation = dilations[idx]
        first_stride = 1 if idx == 0 or dilation > 1 else 2
        planes = out_channels // 4
        stages.append(
            ResNet.make_stage(
                ResNeStBottleneckBlock,
                num_blocks,
                in_channels=in_channels,
                out_channels=out_channels,
                bottleneck_channels=int(planes * bottleneck_width / 64) * num_groups,
                stride_per_block=[first_stride] + [1] * (num_blocks - 1),
                dilation_per_block=_stage_dilations(dilation, num_blocks, reference_dilation),
                avd_at_stride_1_per_block=[reference_dilation and idx > 0]
                + [False] * (num_blocks - 1),
                num_groups=num_groups,
                radix=radix,
                norm=norm,
                avd=avd,
                avd_first=avd_first,
                avg_down=avg_down,
                dropblock_prob=dropblock_prob if idx >= 2 else 0.0,
                grad_checkpoint=grad_checkpoint,
                deform=bool(deform_on_per_stage[idx]),
                deform_modulated=deform_modulated,
                deform_num_groups=deform_num_groups,
            )
        )
        in_channels = out_channels
        out_channels *= 2
    return stages


def default_stem_width(depth: int) -> int:
    """The official deep-stem width: 32 up to ResNeSt-50, 64 for deeper networks."""
    return 32 if depth <= 50 else 64


def resnest_kwargs_from_config(cfg) -> Dict:
    """Translate ``cfg.MODEL.RESNETS`` into :func:`make_resnest_stages` / stem arguments."""
    r = cfg.MODEL.RESNETS
    if r.RADIX < 1:
        raise ValueError(f"MODEL.RESNETS.RADIX must be >= 1, got {r.RADIX}")
    if r.DEPTH not in RESNEST_DEPTHS:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH={r.DEPTH} is not a ResNeSt depth; "
            f"choose one of {sorted(RESNEST_DEPTHS)}"
        )
    if r.STRIDE_IN_1X1:
        logger.warning(
            "MODEL.RESNETS.STRIDE_IN_1X1=True is ignored by ResNeSt blocks: their stride is in "
            "the avd pool or the 3x3 conv. Set it to False to silence this warning."
        )
    # As in the official detectron2-ResNeSt fork, radix > 1 implies the full ResNeSt recipe.
    resnest = r.RADIX > 1
    return dict(
        depth=r.DEPTH,
        radix=r.RADIX,
        num_groups=r.NUM_GROUPS,
        bottleneck_width=r.BOTTLENECK_WIDTH,
        norm=r.NORM,
        avd=r.AVD or resnest,
        avd_first=r.AVD_FIRST,
        avg_down=r.AVG_DOWN or resnest,
        dropblock_prob=r.DROPBLOCK_PROB,
        out_channels=r.RES2_OUT_CHANNELS,
        deep_stem=r.DEEP_STEM or resnest,
        stem_width=r.STEM_WIDTH or default_stem_width(r.DEPTH),
        stem_out_channels=r.STEM_OUT_CHANNELS,
        grad_checkpoint=r.GRAD_CHECKPOINT,
        # detectron2's own keys, read as the fork reads them (DCN in the 3x3 split-attention conv).
        deform_on_per_stage=tuple(r.DEFORM_ON_PER_STAGE),
        deform_modulated=r.DEFORM_MODULATED,
        deform_num_groups=r.DEFORM_NUM_GROUPS,
    )


def build_resnest(
    *,
    in_channels: int = 3,
    deep_stem: bool = True,
    stem_width: int = 32,
    stem_out_channels: int = 64,
    out_features: Optional[Sequence[str]] = None,
    freeze_at: int = 0,
    **stage_kwargs,
) -> ResNet:
    """A ResNeSt as a detectron2 :class:`ResNet` from plain arguments.

    Args:
        in_channels: image channels.
        deep_stem: :class:`DeepStem` (3x3 convs) or detectron2's 7x7 :class:`BasicStem`.
        stem_width: deep-stem width.
        stem_out_channels: output channels of the 7x7 stem when ``deep_stem`` is False.
        out_features: e.g. ``["res2", "res3", "res4", "res5"]``.
        freeze_at: 0 = train everything, 1 = freeze the stem, k = stem and res2..res(k).
        stage_kwargs: forwarded to :func:`make_resnest_stages`.
    """
    norm = stage_kwargs.get("norm", "BN")
    if deep_stem:
        stem = DeepStem(in_channels, stem_width, norm)
    else:
        stem = BasicStem(in_channels, stem_out_channels, norm)
    out_features = list(out_features or ["res5"])
    num_stages = max(int(f[3:]) - 1 for f in out_features if f.startswith("res"))
    stages = make_resnest_stages(
        in_channels=stem.out_channels, num_stages=num_stages, **stage_kwargs
    )
    return ResNet(stem, stages, out_features=out_features, freeze_at=freeze_at)


@BACKBONE_REGISTRY.register()
def build_resnest_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNeSt from ``cfg.MODEL.RESNETS`` (after :func:`add_resnest_config`).

    Reads DEPTH, RADIX, NUM_GROUPS, BOTTLENECK_WIDTH, DEEP_STEM, STEM_WIDTH, AVD, AVD_FIRST,
    AVG_DOWN, DROPBLOCK_PROB, NORM, RES2_OUT_CHANNELS, RES5_DILATION, DEFORM_ON_PER_STAGE,
    DEFORM_MODULATED, DEFORM_NUM_GROUPS, OUT_FEATURES and MODEL.BACKBONE.FREEZE_AT.
    """
    kwargs = resnest_kwargs_from_config(cfg)
    res5_dilation = cfg.MODEL.RESNETS.RES5_DILATION
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation}")
    return build_resnest(
        in_channels=input_shape.channels,
        out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        dilations=(1, 1, 1, res5_dilation),
        **kwargs,
    )
