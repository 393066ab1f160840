"""Export a whole trained model (R-CNN detector, RetinaNet or DeepLabV3) to TorchScript or
ONNX.

A thin layer on detectron2's export API, as detectron2's ``tools/deploy/export_model.py`` uses
it: :class:`detectron2.export.TracingAdapter` flattens the model's rich inputs/outputs for
``torch.jit.trace`` and ``torch.onnx.export``; :func:`detectron2.export.scripting_with_instances`
scripts detectors; :func:`detectron2.export.dump_torchscript_IR` dumps the graph for debugging.
What it adds:

* one graph per family with a fixed, named interface. Input ``image``: ``(3, H, W)`` float32
  in ``INPUT.FORMAT``, already resized like the PyTorch predictor does (the test resize stays
  outside, as in detectron2). Outputs, detectors: ``pred_boxes (N, 4)`` in input-image pixels,
  ``pred_classes (N,)``, ``scores (N,)``, and for Mask R-CNN ``pred_masks (N, 1, M, M)``
  mask probabilities of each box (pasted into the image by the runner, with detectron2's own
  ``detector_postprocess``); DeepLabV3: ``sem_seg (1, K, H, W)`` logits;
* ONNX with dynamic ``H`` and ``W`` (detectron2's ``ImageList``, anchor and RPN code is written
  to trace sizes as tensors, so the graph generalises; see docs/deployment.md for what was
  verified);
* the preprocessing, output names and class names stored in the file
  (:mod:`resnest_dense.export.files`), so :mod:`resnest_dense.export.runtime` can run and
  evaluate it without the original code path.

The model given must be in eval mode with its weights loaded (the export tool uses
:func:`resnest_dense.engine.build_predictor`: strict load, SyncBN as BN, inference fast path).
"""

import contextlib
import importlib.util
import logging
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.export import TracingAdapter, dump_torchscript_IR, scripting_with_instances
from detectron2.export.torchscript_patch import freeze_training_mode
from detectron2.modeling import GeneralizedRCNN, RetinaNet
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from ..config import cfg_value, class_count_keys, is_semantic_segmentation, score_thresh_key
from ..errors import StartupError
from ..modeling.meta_arch import MultiScaleSemanticSegmentor
from .deform import (
    DCN_ONNX_OPSET,
    deform_conv_runtime_problem,
    onnx_opset_for,
    register_deform_conv_symbolic,
    uses_deformable_conv,
)
from .files import EXPORT_FORMATS, onnx_bytes_of, write_onnx, write_torchscript
from .runtime import DETECTION, SEMANTIC_SEGMENTATION, Preprocessor

__all__ = [
    "EXPORT_METHODS",
    "ONNX_OPSET",
    "SUPPORTED",
    "check_export_request",
    "check_exportable",
    "tie_order_warning",
    "export_model",
]

logger = logging.getLogger(__name__)

EXPORT_METHODS = ("tracing", "scripting")
# (format, method) pairs that exist: ONNX is produced by tracing only (torch.onnx.export of a
# ScriptModule is not supported by the exporter that handles detectron2's graphs).
SUPPORTED = (("torchscript", "tracing"), ("torchscript", "scripting"), ("onnx", "tracing"))
# The legacy TorchScript-based exporter (dynamo=False, as detectron2 uses), at the opset every
# test here ran with (detectron2's STABLE_ONNX_OPSET_VERSION, 11, dates from older torch).
# Models with deformable convs are exported at DCN_ONNX_OPSET (19, the first with DeformConv).
ONNX_OPSET = 17
# The detector meta-architectures the exporter handles.
_DETECTORS = ("GeneralizedRCNN", "RetinaNet")
# Instances fields a scripted R-CNN handles (detectron2's export_model.py list, no keypoints).
_SCRIPTED_FIELDS = {
    "proposal_boxes": Boxes,
    "objectness_logits": torch.Tensor,
    "pred_boxes": Boxes,
    "scores": torch.Tensor,
    "pred_classes": torch.Tensor,
    "pred_masks": torch.Tensor,
}


def check_export_request(fmt: str, method: str) -> None:
    """Refuse a format / method pair that cannot work, before any model is built.

    Raises:
        StartupError: unknown format or method, or ONNX with scripting.
    """
    if fmt not in EXPORT_FORMATS:
        raise StartupError(f"--format {fmt!r}: expected one of {sorted(EXPORT_FORMATS)}.")
    if method not in EXPORT_METHODS:
        raise StartupError(f"--export-method {method!r}: expected one of {list(EXPORT_METHODS)}.")
    if (fmt, method) not in SUPPORTED:
        raise StartupError(
            f"--format {fmt} --export-method {method} is not supported: ONNX files are made by "
            "tracing. Use --format onnx --export-method tracing, or --format torchscript "
            "--export-method scripting."
        )


def check_exportable(cfg: CfgNode, method: str, fmt: Optional[str] = None) -> None:
    """Refuse a config whose model cannot be exported with ``method`` (to ``fmt``, when given),
    before it is built.

    Raises:
        StartupError: naming the key and the value to use.
    """
    if fmt == "onnx" and uses_deformable_conv(cfg):
        _check_deform_conv_onnx(cfg)
    arch = cfg.MODEL.META_ARCHITECTURE
    if is_semantic_segmentation(cfg):
        if arch != "MultiScaleSemanticSegmentor":
            raise StartupError(
                f"MODEL.META_ARCHITECTURE={arch}: semantic segmentation exports the DeepLabV3 "
                "meta-architecture MultiScaleSemanticSegmentor only."
            )
        t = cfg.TEST.SEM_SEG
        multi = [
            f"{key}={value}"
            for key, value, single in (
                ("TEST.SEM_SEG.SCALES", list(t.SCALES), list(t.SCALES) == [1.0]),
                ("TEST.SEM_SEG.FLIP", t.FLIP, not t.FLIP),
                ("TEST.SEM_SEG.BASE_SIZE", t.BASE_SIZE, t.BASE_SIZE <= 0),
                ("TEST.SEM_SEG.CROP_SIZE", t.CROP_SIZE, t.CROP_SIZE <= 0),
            )
            if not single
        ]
        if multi:
            raise StartupError(
                f"The exported DeepLabV3 runs the whole image at one scale, but the config asks "
                f"for {', '.join(multi)} (multi-scale, flip, base-size resize or sliding windows "
                "are Python loops around the network). Export with TEST.SEM_SEG.SCALES [1.0] "
                "TEST.SEM_SEG.FLIP False TEST.SEM_SEG.BASE_SIZE 0 TEST.SEM_SEG.CROP_SIZE 0 and "
                "choose the input size with INPUT.MIN_SIZE_TEST / INPUT.MAX_SIZE_TEST."
            )
        return
    if arch not in _DETECTORS:
        raise StartupError(
            f"MODEL.META_ARCHITECTURE={arch}: the exporter handles GeneralizedRCNN (Faster, "
            "Cascade, Mask, Cascade Mask R-CNN), RetinaNet and MultiScaleSemanticSegmentor "
            "(DeepLabV3)."
        )
    if arch == "RetinaNet":
        return
    if cfg.MODEL.KEYPOINT_ON:
        raise StartupError("MODEL.KEYPOINT_ON True: keypoint heads are not exported.")
    if method == "scripting" and cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads":
        raise StartupError(
            "MODEL.ROI_HEADS.NAME=CascadeROIHeads cannot be exported by scripting: detectron2's "
            "cascade stages loop over a ModuleList with data-dependent inputs, which "
            "torch.jit.script does not compile. Use --export-method tracing (TorchScript or "
            "ONNX)."
        )


def tie_order_warning(cfg: CfgNode, fmt: str) -> Optional[str]:
    """Why an ONNX graph of ``cfg``'s detector may keep other candidates than the PyTorch model
    where scores tie exactly, or None. Not an error: the graph is right, but ONNX ``TopK`` orders
    equal scores by index and ``torch.topk`` leaves their order unspecified; the project's RPN
    (``StableTopKRPN``) orders them as ONNX does (docs/deployment.md)."""
    if fmt != "onnx" or is_semantic_segmentation(cfg):
        return None
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        return (
            "RetinaNet to ONNX: the graph orders exactly equal candidate scores by index in its "
            "per-level top-k, detectron2's torch.topk leaves their order unspecified, so "
            "onnxruntime and PyTorch may keep different detections where scores tie."
        )
    if cfg.MODEL.PROPOSAL_GENERATOR.NAME == "RPN":
        return (
            "MODEL.PROPOSAL_GENERATOR.NAME=RPN (detectron2's): the ONNX graph orders exactly "
            "equal RPN scores by anchor index, torch.topk leaves their order unspecified, so "
            "onnxruntime and PyTorch may keep different proposals where anchors tie. Export "
            "with MODEL.PROPOSAL_GENERATOR.NAME StableTopKRPN (same weights; the project's "
            "configs use it) to have PyTorch order ties as the graph does."
        )
    return None


def _check_deform_conv_onnx(cfg: CfgNode) -> None:
    """A DCN model exports to ONNX ``DeformConv`` (opset 19); refuse when the onnxruntime the
    project runs the file with has no kernel for it: the export would succeed and give a file
    that no tool here can run or evaluate."""
    if importlib.util.find_spec("onnxruntime") is None:
        # The file may be meant for another runtime: the export itself does not need onnxruntime.
        logger.warning(
            "onnxruntime is not installed: cannot check that the exported DeformConv(%d) nodes "
            "of this DCN model run.",
            DCN_ONNX_OPSET,
        )
        return
    problem = deform_conv_runtime_problem()
    if problem is not None:
        raise StartupError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE={list(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)}: "
            f"the deformable convs export to ONNX DeformConv (opset {DCN_ONNX_OPSET}), but "
            f"{problem}. Export with --format torchscript instead (the file runs torchvision's "
            "deform_conv2d, as PyTorch does), or install an onnxruntime with a DeformConv "
            "kernel (onnxruntime >= 1.25)."
        )


# ----------------------------------------------------------------------------- graphs


def _detector_outputs(model: nn.Module, inputs) -> Dict[str, torch.Tensor]:
    """One image's R-CNN or RetinaNet predictions before the resize to the original image
    (boxes in input pixels, masks per box), as named tensors."""
    if isinstance(model, RetinaNet):
        instances = _retinanet_inference(model, inputs)[0]
    else:
        instances = model.inference(inputs, do_postprocess=False)[0]
    fields = instances.get_fields()
    return {k: v.tensor if isinstance(v, Boxes) else v for k, v in fields.items()}


def _retinanet_inference(model: RetinaNet, inputs) -> List[Instances]:
    """``RetinaNet.forward`` in eval mode without ``detector_postprocess`` (as detectron2's
    forward returns when scripted): the runner resizes the boxes to the original image, as it
    does for the R-CNNs' ``inference(..., do_postprocess=False)``."""
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    return model.forward_inference(images, features, model.head(features))


class _ScriptableDetector(nn.Module):
    """detectron2's ``ScriptableAdapter`` (tools/deploy/export_model.py): predictions as a dict,
    because a scripted module cannot return the patched ``Instances`` class."""

    def __init__(self, model: GeneralizedRCNN):
        super().__init__()
        self.model = model.eval()

    def forward(self, inputs: Tuple[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        return self.model.inference(inputs, do_postprocess=False)[0].get_fields()


class _ScriptableRetinaNet(nn.Module):
    """The same for RetinaNet, whose scripted ``forward`` returns the predictions before
    ``detector_postprocess`` (detectron2's ``DenseDetector.forward``)."""

    def __init__(self, model: RetinaNet):
        super().__init__()
        self.model = model.eval()

    def forward(self, inputs: Tuple[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        return self.model([inputs[0]])[0].get_fields()


class SemSegGraph(nn.Module):
    """The single-scale, whole-image inference of :class:`MultiScaleSemanticSegmentor`.

    Pads the raw image with black (0) to a multiple of the largest feature stride, normalises,
    runs backbone and head and crops the logits back: the same numbers as
    ``MultiScaleSemanticSegmentor.inference_one`` (which pads the normalised image with the
    normalised black value), minus the final resize to the original image, done by the runner.
    ``ImageList.from_tensors`` computes the padded size from tensor shapes when traced, so the
    ONNX graph accepts any ``H x W``.
    """

    def __init__(self, model: MultiScaleSemanticSegmentor):
        super().__init__()
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head
        self.register_buffer("pixel_mean", model.pixel_mean.clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.clone(), persistent=False)
        self.size_divisibility = int(model.size_divisibility)

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``(3, H, W)`` image -> ``{"sem_seg": (1, K, H, W) logits}``."""
        padded = ImageList.from_tensors([image], self.size_divisibility, pad_value=0.0).tensor
        logits, _ = self.sem_seg_head(self.backbone((padded - self.pixel_mean) / self.pixel_std))
        assert logits is not None  # inference mode (for torch.jit.script's Optional refinement)
        return {"sem_seg": logits[:, :, : image.shape[-2], : image.shape[-1]]}


@contextlib.contextmanager
def _quiet_tracing():
    """detectron2's inference code warns at every Python-side shape check while traced; those
    checks hold for the export (batch of one image) and the warnings would bury real ones."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        yield


def _adapter(model: nn.Module, image: torch.Tensor) -> Tuple[TracingAdapter, Sequence[str]]:
    """``TracingAdapter`` of the family's graph and its output names (sorted, the flattening
    order of a dict)."""
    if isinstance(model, (GeneralizedRCNN, RetinaNet)):
        adapter = TracingAdapter(model, [{"image": image}], _detector_outputs)
    else:
        adapter = TracingAdapter(SemSegGraph(model), (image,))
    adapter.eval()
    with torch.no_grad(), _quiet_tracing():
        outputs = adapter.inference_func(adapter.model, *adapter.inputs)
    return adapter, sorted(outputs)


def _script(model: nn.Module) -> torch.jit.ScriptModule:
    if isinstance(model, GeneralizedRCNN):
        return scripting_with_instances(_ScriptableDetector(model).eval(), _SCRIPTED_FIELDS)
    if isinstance(model, RetinaNet):
        return scripting_with_instances(_ScriptableRetinaNet(model).eval(), _SCRIPTED_FIELDS)
    graph = SemSegGraph(model).eval()
    with freeze_training_mode(graph):
        return torch.jit.script(graph)


# ----------------------------------------------------------------------------- export


def _metadata(
    cfg: CfgNode,
    model: nn.Module,
    method: str,
    outputs: Sequence[str],
    traced_size: Sequence[int],
    class_metadata: Optional[Mapping[str, Any]],
) -> Dict[str, Any]:
    family = SEMANTIC_SEGMENTATION if is_semantic_segmentation(cfg) else DETECTION
    # The number of classes and the metadata field of their names (thing_ / stuff_classes).
    count_key, names_key = class_count_keys(cfg)[0]
    num_classes = cfg_value(cfg, count_key)
    colours_key = names_key.replace("classes", "colors")
    meta = dict(class_metadata or {})
    return {
        "version": 1,
        "family": family,
        "method": method,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "roi_heads": cfg.MODEL.ROI_HEADS.NAME if family == DETECTION else None,
        "num_classes": int(num_classes),
        "score_thresh_key": score_thresh_key(cfg),
        "score_thresh_test": float(cfg_value(cfg, score_thresh_key(cfg))),
        "input": {
            "format": cfg.INPUT.FORMAT,
            "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
            "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        },
        "outputs": list(outputs),
        "traced_size": [int(s) for s in traced_size],
        "classes": {
            "names_key": names_key,
            "names": list(meta.get(names_key, [])),
            "colors": meta.get(colours_key),
        },
        "fast_inference": bool(getattr(model, "_resnest_dense_inference_only", False)),
        "weights": cfg.MODEL.WEIGHTS,
        "torch": torch.__version__,
        "onnx_opset": onnx_opset_for(cfg, ONNX_OPSET),
        "config": cfg.dump(),
    }


def _sample_input(cfg: CfgNode, sample_image: Optional[np.ndarray]) -> torch.Tensor:
    """The traced input: ``sample_image`` (BGR) preprocessed like the predictor does, or a
    fixed pseudo-random image of the test size."""
    if sample_image is None:
        logger.warning(
            "No --sample-image: tracing a fixed random image. Tracing runs one example; give an "
            "image with objects so that every branch of the detector runs while traced."
        )
        size = cfg.INPUT.MIN_SIZE_TEST or 512
        sample_image = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)
    return Preprocessor(cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)(
        sample_image
    )[0]


def export_model(
    model: nn.Module,
    cfg: CfgNode,
    output: str,
    *,
    fmt: str = "onnx",
    method: str = "tracing",
    sample_image: Optional[np.ndarray] = None,
    class_metadata: Optional[Mapping[str, Any]] = None,
    dump_ir: bool = False,
) -> str:
    """Export ``model`` (built from ``cfg``, weights loaded, eval mode) to ``output``.

    Args:
        model: a ``GeneralizedRCNN``, ``RetinaNet`` or ``MultiScaleSemanticSegmentor`` in eval mode, e.g.
            ``build_predictor(cfg).model`` (strict weights, fast path when
            ``TEST.FAST_INFERENCE``).
        cfg: its config (from ``load_config(..., purpose="export")``).
        output: the file to write (``.onnx`` / ``.ts``), atomically.
        fmt: ``"onnx"`` or ``"torchscript"``.
        method: ``"tracing"`` or ``"scripting"`` (TorchScript only).
        sample_image: ``(H, W, 3)`` uint8 BGR image traced through the model (default: a
            random image of the test size).
        class_metadata: class names / colours stored with the file (``thing_classes`` /
            ``stuff_classes`` and ``*_colors``), e.g. ``build_predictor(cfg).metadata``.
        dump_ir: also write detectron2's TorchScript IR dump next to ``output`` (TorchScript).

    Returns:
        ``output``.

    Raises:
        StartupError: an unsupported format / method / model (see :func:`check_export_request`
            and :func:`check_exportable`).
    """
    check_export_request(fmt, method)
    check_exportable(cfg, method, fmt)
    warning = tie_order_warning(cfg, fmt)
    if warning:
        logger.warning(warning)
    if model.training:
        raise ValueError("export_model needs a model in eval mode (call model.eval()).")
    image = _sample_input(cfg, sample_image)
    if method == "scripting":
        module = _script(model)
        with torch.no_grad():
            names = sorted(
                module(({"image": image},))
                if isinstance(model, (GeneralizedRCNN, RetinaNet))
                else module(image)
            )
        metadata = _metadata(cfg, model, method, names, image.shape[-2:], class_metadata)
        write_torchscript(output, module, metadata)
    else:
        adapter, names = _adapter(model, image)
        metadata = _metadata(cfg, model, method, names, image.shape[-2:], class_metadata)
        if fmt == "torchscript":
            with torch.no_grad(), _quiet_tracing():
                module = torch.jit.trace(adapter, (image,), check_trace=False)
            write_torchscript(output, module, metadata)
        else:
            dynamic = {"image": {1: "height", 2: "width"}}
            if isinstance(model, (GeneralizedRCNN, RetinaNet)):
                dynamic.update({n: {0: "instances"} for n in names})
            else:
                dynamic["sem_seg"] = {2: "height", 3: "width"}
            opset = onnx_opset_for(cfg, ONNX_OPSET)
            if uses_deformable_conv(cfg):
                register_deform_conv_symbolic()
            with torch.no_grad(), _quiet_tracing():
                data = onnx_bytes_of(
                    lambda f: torch.onnx.export(
                        adapter,
                        (image,),
                        f,
                        input_names=["image"],
                        output_names=list(names),
                        dynamic_axes=dynamic,
                        opset_version=opset,
                        dynamo=False,
                    )
                )
            write_onnx(output, data, metadata)
    if dump_ir and fmt == "torchscript":
        dump_torchscript_IR(module, os.path.splitext(output)[0] + "_ir")
    logger.info(
        "Exported %s (%s, %s) with outputs %s, traced at %dx%d -> %s",
        cfg.MODEL.META_ARCHITECTURE,
        fmt,
        method,
        ", ".join(names),
        image.shape[-2],
        image.shape[-1],
        output,
    )
    return output
