"""ONNX export of deformable convolutions (DCNv1 / DCNv2, ``MODEL.RESNETS.DEFORM_ON_PER_STAGE``).

The deformable split-attention convs (:mod:`resnest_dense.layers.deform_conv`) run
``torchvision.ops.deform_conv2d``. TorchScript records that op as it is; the legacy ONNX exporter
(``dynamo=False``) has no mapping for it: torchvision registers ONNX symbolics for ``nms``,
``roi_align`` and ``roi_pool`` only, and torch's own opset-19 module lists ``DeformConv`` without
a symbolic for it. ONNX has the operator since opset 19 (``DeformConv``: the same inputs, offset
layout and bilinear sampling as torchvision's op), so this module

* maps ``torchvision::deform_conv2d`` to ``DeformConv`` (:func:`register_deform_conv_symbolic`);
* exports models with deformable convs at :data:`DCN_ONNX_OPSET` (19) instead of the project's
  ``ONNX_OPSET`` (17, unchanged for every other model): the whole DCN graph was checked at 19
  against PyTorch in onnxruntime (tests/test_export_dcn.py, docs/deployment.md);
* checks before anything is built that the installed onnxruntime has a ``DeformConv`` kernel
  (:func:`deform_conv_runtime_problem`): onnxruntime gained its CPU kernel in 1.25
  (microsoft/onnxruntime#27393); 1.24.4 fails to load the exported file with
  ``NOT_IMPLEMENTED : Could not find an implementation for DeformConv(19)``.
"""

import functools
import logging
from typing import Optional

import torch
from detectron2.config import CfgNode

__all__ = [
    "DCN_ONNX_OPSET",
    "deform_conv_runtime_problem",
    "onnx_opset_for",
    "register_deform_conv_symbolic",
    "uses_deformable_conv",
]

logger = logging.getLogger(__name__)

# The first opset with the ONNX DeformConv operator.
DCN_ONNX_OPSET = 19


def uses_deformable_conv(cfg: CfgNode) -> bool:
    """True when the config's ResNeSt backbone has deformable convs in some stage."""
    return any(bool(on) for on in cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)


def onnx_opset_for(cfg: CfgNode, default: int) -> int:
    """The opset a model of ``cfg`` is exported at: ``default`` unless it has deformable convs,
    which need :data:`DCN_ONNX_OPSET` (``max`` so that a later default is kept)."""
    return max(default, DCN_ONNX_OPSET) if uses_deformable_conv(cfg) else default


def _deform_conv2d_symbolic(
    g,
    input,
    weight,
    offset,
    mask,
    bias,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dilation_h,
    dilation_w,
    groups,
    offset_groups,
    use_mask,
):
    """``torchvision::deform_conv2d`` -> ONNX ``DeformConv``.

    torchvision's Python wrapper always passes a bias and a mask tensor (zeros when the caller
    gave none) and says with ``use_mask`` whether the mask is real: DCNv1 leaves the mask input
    out, so onnxruntime does not multiply by a zero mask.
    """
    from torch.onnx import symbolic_helper

    kernel = symbolic_helper._get_tensor_sizes(weight)[-2:]
    if kernel is None or any(k is None for k in kernel):
        raise RuntimeError("deform_conv2d: the weight's kernel size must be static to export")
    inputs = [input, weight, offset, bias] + ([mask] if use_mask else [])
    return g.op(
        "DeformConv",
        *inputs,
        dilations_i=[dilation_h, dilation_w],
        group_i=groups,
        kernel_shape_i=list(kernel),
        offset_group_i=offset_groups,
        pads_i=[pad_h, pad_w, pad_h, pad_w],
        strides_i=[stride_h, stride_w],
    )


@functools.lru_cache(maxsize=None)
def register_deform_conv_symbolic() -> None:
    """Register the ``deform_conv2d`` -> ``DeformConv`` mapping with the legacy exporter for
    opsets >= 19 (once per process; below 19 the op stays unmapped and the export fails)."""
    from torch.onnx import symbolic_helper

    symbolic = symbolic_helper.parse_args(
        "v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b"
    )(_deform_conv2d_symbolic)
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", symbolic, DCN_ONNX_OPSET)


@functools.lru_cache(maxsize=None)
def deform_conv_runtime_problem(op_type: str = "DeformConv") -> Optional[str]:
    """Why the installed onnxruntime cannot run ONNX ``DeformConv``, or None when it can.

    Runs a one-node model (3x3 DCNv2, 2 offset groups) on the CPU provider, the one the
    project's runner uses. ``op_type`` exists for the test of the failure path.

    Returns:
        None, or a sentence naming the onnxruntime version and its error.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    names = ("x", "w", "offset", "b", "mask")
    shapes = ((1, 2, 4, 4), (2, 2, 3, 3), (1, 36, 4, 4), (2,), (1, 18, 4, 4))
    node = helper.make_node(
        op_type, list(names), ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], offset_group=2
    )
    graph = helper.make_graph(
        [node],
        "deform_conv_probe",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 2, 4, 4))],
    )
    # IR version 9, as torch's exporter writes at opset 19: onnx's newer default would make an
    # older onnxruntime refuse the file for its IR version, not for the operator.
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", DCN_ONNX_OPSET)], ir_version=9
    )
    feeds = {n: np.full(s, 0.5, np.float32) for n, s in zip(names, shapes)}
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        session.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own NotImplemented/Fail types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"onnxruntime {ort.__version__} cannot run {op_type}({DCN_ONNX_OPSET}): {first}"
    return None
