"""Exported model files: a TorchScript (``.ts``) or ONNX (``.onnx``) graph plus the metadata
that makes it runnable on its own.

detectron2's ``TracingAdapter`` keeps the output schema and the preprocessing (test resize,
``INPUT.FORMAT``) in Python, next to the model; a file written without them cannot be run or
evaluated later. Here they travel inside the file, as one JSON document:

* ONNX: ``metadata_props`` entry :data:`METADATA_KEY` of the ``ModelProto``;
* TorchScript: the extra file :data:`METADATA_KEY` of the archive (``torch.jit.save``).

Every file is written atomically (:func:`resnest_dense.utils.io.atomic_write`).
"""

import io
import json
import logging
import os
import zipfile
from typing import Any, Dict, Optional

import torch

from ..errors import MissingFileError, StartupError
from ..utils.io import atomic_write

__all__ = [
    "EXPORT_FORMATS",
    "METADATA_KEY",
    "ExportedFileError",
    "exported_format",
    "read_metadata",
    "write_onnx",
    "write_torchscript",
]

logger = logging.getLogger(__name__)

METADATA_KEY = "resnest_dense.json"
# Output format -> file extension (detectron2's export_model.py writes model.ts / model.onnx).
EXPORT_FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}
_ONNX_MAGIC = b"\x08"  # ModelProto field 1 (ir_version), varint: every ONNX file starts with it
_HOW = "Write one with tools/deploy/export_model.py from a trained checkpoint."


class ExportedFileError(StartupError):
    """A file given as an exported model is not one (or not one written by this project)."""


def exported_format(path: str) -> Optional[str]:
    """``"onnx"`` / ``"torchscript"`` when ``path`` is an existing file of that kind, else None.

    Decided from the content, not the name: a TorchScript archive is a zip holding
    ``constants.pkl`` (a ``torch.save`` checkpoint is a zip too, but holds ``data.pkl`` only);
    an ONNX file is a protobuf starting with its IR version.
    """
    if not path or "://" in path or not os.path.isfile(path):
        return None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return "torchscript" if any(n.endswith("/constants.pkl") for n in names) else None
    with open(path, "rb") as f:
        head = f.read(1)
    return "onnx" if head == _ONNX_MAGIC and path.endswith(".onnx") else None


def write_onnx(path: str, onnx_bytes: bytes, metadata: Dict[str, Any]) -> str:
    """Add ``metadata`` to a serialised ONNX model and write it to ``path`` atomically.

    The written file is loaded back and checked by ``onnx.checker`` before it replaces
    ``path``, so a file at ``path`` is always a complete, valid model.
    """
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    data = model.SerializeToString()
    return atomic_write(path, lambda f: f.write(data), verify=onnx.checker.check_model)


def write_torchscript(path: str, module: torch.jit.ScriptModule, metadata: Dict[str, Any]) -> str:
    """``torch.jit.save`` ``module`` with ``metadata`` as an extra file, atomically."""
    extra = {METADATA_KEY: json.dumps(metadata)}
    return atomic_write(path, lambda f: torch.jit.save(module, f, _extra_files=extra))


def read_metadata(path: str) -> Dict[str, Any]:
    """The metadata stored in an exported file (``"format"`` added: onnx / torchscript).

    Raises:
        MissingFileError: no such file.
        ExportedFileError: not an ONNX / TorchScript file, or one without this project's
            metadata (exported by another tool); the message says what was found.
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"Exported model {path!r}: no such file. {_HOW}")
    fmt = exported_format(path)
    if fmt is None:
        what = (
            "a PyTorch checkpoint (pass it as MODEL.WEIGHTS to run it in PyTorch, or export it)"
            if zipfile.is_zipfile(path) or path.endswith((".pth", ".pkl"))
            else "neither an ONNX file (*.onnx) nor a TorchScript archive"
        )
        raise ExportedFileError(f"{path!r} is not an exported model: it is {what}. {_HOW}")
    if fmt == "onnx":
        import onnx

        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others
            raise ExportedFileError(f"Cannot read ONNX file {path!r}: {e}. {_HOW}") from e
        props = {p.key: p.value for p in proto.metadata_props}
        text = props.get(METADATA_KEY)
    else:
        # torch.jit.save puts extra files under <archive>/extra/; read without loading the graph.
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/" + METADATA_KEY)]
            text = archive.read(names[0]).decode() if names else None
    if not text:
        raise ExportedFileError(
            f"{path!r} is a {fmt} model without resnest_dense metadata (exported by another "
            f"tool?): its preprocessing and outputs are unknown. {_HOW}"
        )
    return {**json.loads(text), "format": fmt}


def onnx_bytes_of(export_fn) -> bytes:
    """Run ``export_fn(file)`` (e.g. a ``torch.onnx.export`` call) into memory."""
    buffer = io.BytesIO()
    export_fn(buffer)
    return buffer.getvalue()
