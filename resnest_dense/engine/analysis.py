"""Model complexity: FLOPs, activations and parameters of a model on given inputs.

The counting is detectron2's (:mod:`detectron2.utils.analysis`, on fvcore): the model is traced
(through detectron2's ``TracingAdapter``, so whole detectors taking ``list[dict]`` and returning
``Instances`` work) and every traced operator with a handle is counted. The convention is the
one of the ResNet / ResNeSt papers' "GFLOPs": **one multiply-add counts as one flop** (a conv or
linear layer costs ``#outputs x #inputs-per-output``); eval-mode batch norm, upsampling and
adaptive pooling are counted per element; operators without a handle (element-wise sums,
``avg_pool2d``, ``roi_align``, NMS, ...) are skipped and listed as such.

:func:`count_flops`, :func:`count_activations` and :func:`count_parameters` take a model and its
inputs and return numbers; ``tools/analyze_model.py`` composes them with a config
(:func:`analysis_model`, :func:`synthetic_input`, :func:`image_input`, :func:`default_size`).

Detectors' head cost depends on the data: the box head runs on the RPN's proposals, the mask
head on the detections. :func:`count_flops` therefore reports the proposals and detections of
each counted image (:attr:`FlopCount.boxes`).
"""

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.export import TracingAdapter
from detectron2.utils.analysis import FlopCountAnalysis, parameter_count
from fvcore.nn import ActivationCountAnalysis

from ..config import is_semantic_segmentation, score_thresh_key
from ..export import Preprocessor
from .predictor import build_test_model

__all__ = [
    "CONVENTION",
    "FlopCount",
    "analysis_model",
    "check_size",
    "count_activations",
    "count_flops",
    "count_parameters",
    "default_size",
    "image_input",
    "module_flops",
    "synthetic_input",
]

logger = logging.getLogger(__name__)

CONVENTION = (
    "detectron2.utils.analysis.FlopCountAnalysis (fvcore): one multiply-add = 1 flop (the "
    "ResNet/ResNeSt papers' GFLOPs); eval-mode batch norm (2 per element), upsampling and "
    "adaptive pooling counted per element; operators without a handle skipped (listed)"
)
# The size of a semantic segmentor's single pass when its config names no crop (the usual
# ADE20K / Cityscapes crop of mmsegmentation's model tables).
_SEM_SEG_DEFAULT = 512


@dataclass
class FlopCount:
    """The flops of one forward pass.

    Attributes:
        total: flops (multiply-adds) of the whole pass.
        by_module: flops per top-level submodule (``backbone``, ``roi_heads``, ...).
        by_operator: flops per counted operator kind (``conv``, ``linear``, ...).
        skipped: operators without a flop handle -> number of calls (not counted).
        boxes: for detectors, ``{"proposals": n, "detections": m}`` of the image.
    """

    total: float
    by_module: Dict[str, float]
    by_operator: Dict[str, float]
    skipped: Dict[str, int]
    boxes: Dict[str, int] = field(default_factory=dict)


def _batched(model: torch.nn.Module, inputs: Any) -> bool:
    """True for detectron2 meta-architectures (``list[dict]`` inputs)."""
    return isinstance(inputs, (list, tuple)) and bool(inputs) and isinstance(inputs[0], dict)


class _BoxRecorder:
    """Forward hooks that record the proposals and detections of a detector's pass."""

    def __init__(self, model: torch.nn.Module):
        self.boxes: Dict[str, int] = {}
        self._handles = [model.register_forward_hook(self._outputs)]
        proposals = getattr(model, "proposal_generator", None)
        if proposals is not None:
            self._handles.append(proposals.register_forward_hook(self._proposals))

    def _proposals(self, module, args, output) -> None:
        self.boxes["proposals"] = sum(len(p) for p in output[0])

    def _outputs(self, module, args, output) -> None:
        if isinstance(output, list) and output and isinstance(output[0], dict):
            found = [o["instances"] for o in output if "instances" in o]
            if found:
                self.boxes["detections"] = sum(len(i) for i in found)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def count_flops(model: torch.nn.Module, inputs: Any, warn: bool = True) -> FlopCount:
    """Flops of one eval-mode forward pass of ``model`` on ``inputs``.

    Args:
        model: a detectron2 meta-architecture (``GeneralizedRCNN``, ``RetinaNet``,
            ``PanopticFPN``, semantic segmentors) or any module taking a tensor (a backbone).
        inputs: ``list[dict]`` in detectron2's format (``"image"``: (C, H, W) in
            ``INPUT.FORMAT``, 0-255) for a meta-architecture, else the module's tensor input,
            e.g. (N, 3, H, W).
        warn: let fvcore log the skipped operators and uncalled modules.

    Returns:
        The :class:`FlopCount`; the model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    recorder = _BoxRecorder(model) if _batched(model, inputs) else None
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(model, inputs)
            analysis.unsupported_ops_warnings(warn).uncalled_modules_warnings(warn)
            total = float(analysis.total())
            # detectron2 wraps every model in a TracingAdapter named "model": its children are
            # the top level.
            by_module = {
                name[len("model.") :]: float(v)
                for name, v in analysis.by_module().items()
                if name.startswith("model.") and name.count(".") == 1
            }
            by_operator = {k: float(v) for k, v in analysis.by_operator().items()}
            skipped = {k: int(v) for k, v in analysis.unsupported_ops().items()}
    finally:
        if recorder is not None:
            recorder.remove()
        model.train(was_training)
    # fvcore lists the call of a scripted helper as an operator; it is not one.
    skipped.pop("prim::CallFunction", None)
    return FlopCount(
        total=total,
        by_module=by_module,
        by_operator=by_operator,
        skipped=skipped,
        boxes=dict(recorder.boxes) if recorder is not None else {},
    )


def module_flops(module: torch.nn.Module, height: int, width: int) -> float:
    """Flops (multiply-adds) of ``module`` on one zero image of ``height`` x ``width``
    (:func:`count_flops` of a (1, 3, H, W) tensor, warnings off), e.g. a backbone's."""
    return count_flops(module, torch.zeros(1, 3, height, width), warn=False).total


def count_activations(model: torch.nn.Module, inputs: Any) -> Dict[str, float]:
    """Activations (output elements of convs and linear layers, fvcore's definition) of one
    eval-mode pass, per operator kind.

    Traced as :func:`count_flops` traces (detectron2's ``TracingAdapter`` accepting non-tensor
    outputs, so Panoptic FPN's segments info passes; detectron2's
    ``activation_count_operators`` refuses it).

    Args:
        model, inputs: as for :func:`count_flops`.

    Returns:
        Operator kind -> number of activations.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            wrapper = TracingAdapter(model, inputs, allow_non_tensor=True)
            analysis = ActivationCountAnalysis(wrapper, wrapper.flattened_inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            counts = analysis.by_operator()
    finally:
        model.train(was_training)
    return {k: float(v) for k, v in counts.items()}


def count_parameters(model: torch.nn.Module) -> Dict[str, int]:
    """Parameters of ``model``: ``""`` -> total, and each top-level submodule -> its count."""
    counts = parameter_count(model)
    return {k: int(v) for k, v in counts.items() if k.count(".") == 0}


def default_size(cfg: CfgNode) -> Tuple[Tuple[int, int], str]:
    """The input size (H, W) a config is analysed at by default, and why.

    A detector: ``INPUT.MIN_SIZE_TEST`` x ``INPUT.MAX_SIZE_TEST`` (800x1333 for COCO), the
    largest image its test resize produces. A semantic segmentor: one pass on a square window of
    its test procedure (``TEST.SEM_SEG.CROP_SIZE``), else of its training crop, else 512.
    """
    if is_semantic_segmentation(cfg):
        crop = cfg.TEST.SEM_SEG.CROP_SIZE
        if crop > 0:
            return (crop, crop), f"TEST.SEM_SEG.CROP_SIZE {crop}: one window of the test procedure"
        if cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.TYPE == "absolute":
            h, w = cfg.INPUT.CROP.SIZE
            return (h, w), f"INPUT.CROP.SIZE {h}x{w}: the training crop"
        return (_SEM_SEG_DEFAULT, _SEM_SEG_DEFAULT), f"{_SEM_SEG_DEFAULT}x{_SEM_SEG_DEFAULT}"
    short, long = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    if short <= 0:
        raise ValueError(
            f"INPUT.MIN_SIZE_TEST={short}: the config has no test size; give --size H W."
        )
    return (short, long), f"INPUT.MIN_SIZE_TEST x INPUT.MAX_SIZE_TEST ({short}x{long})"


def synthetic_input(height: int, width: int, seed: int = 0) -> Dict[str, Any]:
    """One random image of ``height`` x ``width`` in detectron2's input format (0-255)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=g) * 255
    return {"image": image, "height": height, "width": width}


def image_input(cfg: CfgNode, image_bgr: np.ndarray) -> Dict[str, Any]:
    """An image file's model input as the demos' predictor builds it: the config's test resize
    (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``; none when 0) and ``INPUT.FORMAT``
    (:class:`resnest_dense.export.Preprocessor`, ``DefaultPredictor``'s preprocessing).

    Args:
        cfg: the config.
        image_bgr: (H, W, 3) uint8, as :func:`resnest_dense.utils.read_image_bgr` returns.
    """
    preprocess = Preprocessor(cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    image, height, width = preprocess(image_bgr)
    return {"image": image, "height": height, "width": width}


def analysis_model(cfg: CfgNode, seed: int = 0) -> Tuple[torch.nn.Module, List[str]]:
    """The model of ``cfg`` (YAML or LazyConfig view) with random weights drawn from ``seed``, in
    eval mode, set up so that its counts are defined by the input alone (``cfg`` is not changed).

    * A semantic segmentor runs one pass on the whole input (``TEST.SEM_SEG`` scales [1.0], no
      flip, no resize, no sliding window): the configured test procedure costs this times its
      number of windows, scales and flips.
    * A detector's test score threshold is 0, so its heads run on the full
      ``TEST.DETECTIONS_PER_IMAGE`` budget: random weights would otherwise give an arbitrary
      number of detections (usually none) and no mask-head cost.

    ``MODEL.WEIGHTS`` is not loaded (a note says so): the counts above do not depend on it.

    Returns:
        The model and one line per such setting (for the report).
    """
    cfg = copy.deepcopy(cfg)
    cfg.defrost()
    notes = []
    if cfg.MODEL.WEIGHTS:
        notes.append(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} not loaded: counts need no weights (random, seed "
            f"{seed})"
        )
    if is_semantic_segmentation(cfg):
        t = cfg.TEST.SEM_SEG
        t.SCALES, t.FLIP, t.BASE_SIZE, t.CROP_SIZE = [1.0], False, 0, 0
        notes.append(
            "semantic segmentor: one pass on the whole input (TEST.SEM_SEG.SCALES [1.0], FLIP "
            "False, BASE_SIZE 0, CROP_SIZE 0); the configured test procedure multiplies this by "
            "its windows x scales x flips"
        )
    else:
        key = score_thresh_key(cfg)
        section, name = key.split(".")[1:]
        cfg.MODEL[section][name] = 0.0
    # Random weights decide how many proposals survive the RPN's NMS: seeded, a count repeats.
    torch.manual_seed(seed)
    model = build_test_model(cfg)  # a LazyConfig's model takes the view's values set above
    if not is_semantic_segmentation(cfg):
        notes.append(
            f"random weights; score threshold 0 ({key}) so the heads run on the full detection "
            f"budget ({_detection_budget(model)} per image)"
        )
    return model.eval(), notes


def _detection_budget(model: torch.nn.Module) -> Optional[int]:
    """Detections per image of an R-CNN (its last box predictor's) or RetinaNet."""
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    if isinstance(predictor, torch.nn.ModuleList):  # cascade stages
        predictor = predictor[-1]
    if predictor is not None:
        return predictor.test_topk_per_image
    return getattr(model, "max_detections_per_image", None)


def check_size(size: Optional[Sequence[int]]) -> None:
    """Refuse an input size that is not two integers >= 32 (the backbones' largest stride)."""
    if size is None:
        return
    if len(size) != 2 or any(int(s) != s or s < 32 for s in size):
        raise ValueError(
            f"--size takes two integers H W of at least 32 (the backbone's stride), got "
            f"{' '.join(str(s) for s in size)}."
        )
