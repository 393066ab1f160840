"""Deployment of whole models: export to TorchScript / ONNX and run the exported files.

* :func:`export_model` (:mod:`.exporter`): a trained R-CNN detector (Faster, Cascade, Mask,
  Cascade Mask) or DeepLabV3 to TorchScript (tracing or scripting) or ONNX (tracing, dynamic
  input size; opset 19 ``DeformConv`` for deformable convs, :mod:`.deform`), on detectron2's
  export API; ``tools/deploy/export_model.py`` is its command line;
* :class:`ExportedModel` / :class:`ExportedPredictor` (:mod:`.runtime`): onnxruntime or
  TorchScript behind the interfaces of a detectron2 model and ``DefaultPredictor``, so
  ``tools/train_net.py --eval-only`` and the demos run an exported file given as
  ``MODEL.WEIGHTS``;
* :func:`exported_format` / :func:`read_metadata` (:mod:`.files`): what an exported file is.

See docs/deployment.md.
"""

from .deform import DCN_ONNX_OPSET, uses_deformable_conv
from .exporter import (
    EXPORT_METHODS,
    ONNX_OPSET,
    SUPPORTED,
    check_export_request,
    check_exportable,
    export_model,
)
from .files import EXPORT_FORMATS, ExportedFileError, exported_format, read_metadata
from .runtime import ExportedModel, ExportedPredictor, Preprocessor, check_matches_config

__all__ = [
    "DCN_ONNX_OPSET",
    "EXPORT_FORMATS",
    "EXPORT_METHODS",
    "ONNX_OPSET",
    "SUPPORTED",
    "ExportedFileError",
    "ExportedModel",
    "ExportedPredictor",
    "Preprocessor",
    "check_export_request",
    "check_exportable",
    "check_matches_config",
    "export_model",
    "exported_format",
    "read_metadata",
    "uses_deformable_conv",
]
