"""Run an exported model (ONNX in onnxruntime, or TorchScript) as the PyTorch model runs.

* :class:`Preprocessor`: the PyTorch predictor's preprocessing (``DefaultPredictor``: channel
  order by ``INPUT.FORMAT``, detectron2's ``ResizeShortestEdge`` to ``INPUT.MIN_SIZE_TEST`` /
  ``MAX_SIZE_TEST``), with the sizes the file was exported for;
* :class:`ExportedModel`: an ``nn.Module`` that takes detectron2's batched inputs (test-mapper
  dicts with ``image``, ``height``, ``width``) and returns what the PyTorch model returns in
  eval mode: ``{"instances": Instances}`` (boxes, scores, classes and masks pasted at the
  output resolution by detectron2's own ``detector_postprocess``) or ``{"sem_seg": (K, H, W)}``
  logits. So detectron2's ``inference_on_dataset`` and evaluators run on it unchanged;
* :class:`ExportedPredictor`: preprocessing + :class:`ExportedModel` for one BGR image, the
  interface of ``DefaultPredictor`` the demos use, with the class names stored in the file.

The graph takes one image (detectron2's export convention), so a batch is run image by image.
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import nn

from ..config import cfg_value, class_count_keys, is_semantic_segmentation
from .files import ExportedFileError, read_metadata

__all__ = [
    "DETECTION",
    "SEMANTIC_SEGMENTATION",
    "ExportedModel",
    "ExportedPredictor",
    "Preprocessor",
    "check_matches_config",
]

logger = logging.getLogger(__name__)

DETECTION = "detection"
SEMANTIC_SEGMENTATION = "semantic_segmentation"


class Preprocessor:
    """BGR ``(H, W, 3)`` uint8 image -> model input, exactly as ``DefaultPredictor`` does.

    Args:
        input_format: ``"RGB"`` or ``"BGR"`` (``INPUT.FORMAT``).
        min_size: ``INPUT.MIN_SIZE_TEST`` (0: no resize).
        max_size: ``INPUT.MAX_SIZE_TEST``.
    """

    def __init__(self, input_format: str, min_size: int, max_size: int):
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {input_format!r}")
        self.input_format = input_format
        self.aug = T.ResizeShortestEdge([min_size, min_size], max_size)

    def __call__(self, image_bgr: np.ndarray) -> Tuple[torch.Tensor, int, int]:
        """Returns the ``(3, h, w)`` float32 input and the original ``height``, ``width``."""
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        image = self.aug.get_transform(image).apply_image(image)
        return torch.as_tensor(image.astype("float32").transpose(2, 0, 1)), height, width


class ExportedModel(nn.Module):
    """An exported file behind the eval-mode interface of detectron2 models.

    Args:
        path: a file written by :func:`resnest_dense.export.export_model`.
        score_thresh: drop detections scoring below it. Only a threshold at or above the one
            the file was exported with can be applied (lower-scoring boxes are not in the
            graph's output); a lower one is ignored with a warning.
        num_threads: intra-op threads of the onnxruntime session (0: its default).

    Attributes:
        metadata: what the file stores (:func:`resnest_dense.export.files.read_metadata`).
    """

    def __init__(self, path: str, score_thresh: Optional[float] = None, num_threads: int = 0):
        super().__init__()
        self.path = path
        self.metadata = read_metadata(path)
        self.family = self.metadata["family"]
        self.output_names: List[str] = self.metadata["outputs"]
        baked = self.metadata["score_thresh_test"]
        self.score_thresh = None
        if score_thresh is not None and self.family == DETECTION:
            if score_thresh < baked:
                logger.warning(
                    "%s was exported with %s=%g; detections between %g and %g are not in the "
                    "file (export again with a lower threshold to see them).",
                    path,
                    self.metadata.get("score_thresh_key", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
                    baked,
                    score_thresh,
                    baked,
                )
            elif score_thresh > baked:
                self.score_thresh = score_thresh
        self.session = self.module = None
        if self.metadata["format"] == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if num_threads:
                options.intra_op_num_threads = num_threads
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        else:
            self.module = torch.jit.load(path, map_location="cpu")

    def train(self, mode: bool = True) -> "ExportedModel":
        """Only the flag: the graph is eval-only (a scripted one has ``training`` frozen as a
        constant and refuses to be switched), and ``inference_on_dataset`` calls ``eval()``."""
        self.training = mode
        return self

    def run_graph(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The graph's named outputs for one ``(3, h, w)`` float32 input."""
        if self.session is not None:
            values = self.session.run(self.output_names, {"image": image.numpy()})
            return {n: torch.from_numpy(v) for n, v in zip(self.output_names, values)}
        with torch.no_grad():
            if self.metadata["method"] == "scripting":
                if self.family == DETECTION:
                    return dict(self.module(({"image": image},)))
                return dict(self.module(image))
            return dict(zip(self.output_names, self.module(image)))

    def forward(self, batched_inputs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Predictions for detectron2 test-mapper dicts, as the PyTorch model gives them.

        Args:
            batched_inputs: dicts with ``image`` ``(3, h, w)`` (resized, ``INPUT.FORMAT``) and
                optional ``height`` / ``width``, the output resolution.

        Returns:
            One ``{"instances": Instances}`` or ``{"sem_seg": (K, height, width)}`` per image.
        """
        return [self._predict(x) for x in batched_inputs]

    def _predict(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
        image = inputs["image"].to(torch.float32).cpu()
        h, w = image.shape[-2:]
        height, width = inputs.get("height", h), inputs.get("width", w)
        outputs = self.run_graph(image)
        if self.family == SEMANTIC_SEGMENTATION:
            scores = outputs["sem_seg"]
            if (height, width) != (h, w):
                # MultiScaleSemanticSegmentor.inference_one's final resize.
                scores = F.interpolate(
                    scores, (height, width), mode="bilinear", align_corners=False
                )
            return {"sem_seg": scores[0]}
        fields = {k: Boxes(v) if k == "pred_boxes" else v for k, v in outputs.items()}
        instances = Instances((h, w), **fields)
        if self.score_thresh is not None:
            instances = instances[instances.scores >= self.score_thresh]
        return {"instances": detector_postprocess(instances, height, width)}


class ExportedPredictor:
    """``DefaultPredictor`` for an exported file: one BGR image in, one prediction dict out.

    Args:
        path: the exported file.
        score_thresh: see :class:`ExportedModel`.

    Attributes:
        model: the :class:`ExportedModel`.
        metadata: a detectron2 ``Metadata`` with the class names (and colours) stored in the
            file, ``class N`` for classes without one.
    """

    def __init__(self, path: str, score_thresh: Optional[float] = None):
        self.model = ExportedModel(path, score_thresh=score_thresh)
        meta = self.model.metadata
        self.preprocess = Preprocessor(
            meta["input"]["format"], meta["input"]["min_size_test"], meta["input"]["max_size_test"]
        )
        classes = meta["classes"]
        names = list(classes["names"])
        names += [f"class {i}" for i in range(len(names), meta["num_classes"])]
        fields = {classes["names_key"]: names, "class_names_source": f"exported file {path}"}
        if classes.get("colors"):
            fields[classes["names_key"].replace("classes", "colors")] = [
                tuple(c) for c in classes["colors"]
            ]
        self.metadata = Metadata(name=f"exported:{path}", **fields)

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        """``(H, W, 3)`` uint8 BGR image -> ``{"instances": ...}`` or ``{"sem_seg": ...}``."""
        image, height, width = self.preprocess(original_image)
        return self.model([{"image": image, "height": height, "width": width}])[0]


def check_matches_config(metadata: Dict[str, Any], cfg, path: str) -> None:
    """Refuse an exported file that does not fit the config it is evaluated / shown with.

    Raises:
        ExportedFileError: another model family or number of classes (both named).
    """
    family = SEMANTIC_SEGMENTATION if is_semantic_segmentation(cfg) else DETECTION
    key, _ = class_count_keys(cfg)[0]
    num_classes = cfg_value(cfg, key)
    if metadata["family"] != family or metadata["num_classes"] != num_classes:
        raise ExportedFileError(
            f"MODEL.WEIGHTS={path!r} is an exported {metadata['meta_architecture']} "
            f"({metadata['family']}, {metadata['num_classes']} classes) but the config builds a "
            f"{cfg.MODEL.META_ARCHITECTURE} ({family}, {key}={num_classes}). Use the config the "
            "file was exported from."
        )
    exported = metadata["input"]
    if (exported["min_size_test"], exported["max_size_test"]) != (
        cfg.INPUT.MIN_SIZE_TEST,
        cfg.INPUT.MAX_SIZE_TEST,
    ):
        logger.info(
            "%s was exported with INPUT.MIN/MAX_SIZE_TEST %d/%d; the data loader resizes to "
            "%d/%d (the graph takes any size).",
            path,
            exported["min_size_test"],
            exported["max_size_test"],
            cfg.INPUT.MIN_SIZE_TEST,
            cfg.INPUT.MAX_SIZE_TEST,
        )
