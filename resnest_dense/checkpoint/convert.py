"""Convert official ResNeSt / timm ``resnest*`` ImageNet weights into detectron2 names.

The official torch checkpoints (``resnest50-528c19ca.pth``) and timm's ``resnest*`` models use
the same parameter names (``conv1.0``, ``layer1.0.conv2.fc1``, ``downsample.1``, ``fc``); the
result uses this package's names (``stem.conv1_1``, ``res2.0.conv2.fc1``, ``shortcut``), which
equal the official detectron2-ResNeSt backbone's, under a prefix such as ``backbone.bottom_up.``.

Inputs these weights expect (set in every ResNeSt config here): RGB images, pixel mean
123.68/116.779/103.939, std 58.393/57.12/57.375, ``MODEL.RESNETS.STRIDE_IN_1X1: False``.
"""

import logging
import os
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

__all__ = [
    "REQUIRED_INPUT_SETTINGS",
    "CheckpointMismatchError",
    "convert_resnest_state_dict",
    "check_state_dict",
    "load_torch_state_dict",
    "convert_resnest_checkpoint",
]

logger = logging.getLogger(__name__)

REQUIRED_INPUT_SETTINGS = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.68, 116.779, 103.939],
    "MODEL.PIXEL_STD": [58.393, 57.12, 57.375],
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
}

# (pattern, replacement) on names without the block/stage part; first match wins.
_STEM_RULES = [
    (r"^conv1\.0\.", "stem.conv1_1."),
    (r"^conv1\.1\.", "stem.conv1_1.norm."),
    (r"^conv1\.3\.", "stem.conv1_2."),
    (r"^conv1\.4\.", "stem.conv1_2.norm."),
    (r"^conv1\.6\.", "stem.conv1_3."),
    (r"^conv1\.weight$", "stem.conv1.weight"),
]
_BLOCK_RULES = [
    (r"^bn1\.", "conv1.norm."),
    (r"^bn3\.", "conv3.norm."),
    (r"^conv1\.", "conv1."),
    (r"^conv2\.", "conv2."),
    (r"^conv3\.", "conv3."),
]


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the target network; the message lists the keys."""


def _format_keys(keys: List[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def convert_resnest_state_dict(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename an official/timm ResNeSt state dict to detectron2 names.

    Args:
        state_dict: official ResNeSt or timm ``resnest*`` parameters and buffers.
        prefix: prepended to every output name, e.g. ``"backbone.bottom_up."`` for FPN models.

    Returns:
        The renamed tensors, and the names deliberately dropped (the ``fc`` classifier and
        ``num_batches_tracked`` counters).

    Raises:
        CheckpointMismatchError: names that fit no ResNeSt rule (another architecture).
    """
    deep_stem = "bn1.weight" in state_dict and "conv1.0.weight" in state_dict
    out: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unknown: List[str] = []
    for name, tensor in state_dict.items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            dropped.append(name)
            continue
        new = None
        if name.startswith("bn1."):
            new = ("stem.conv1_3.norm." if deep_stem else "stem.conv1.norm.") + name[4:]
        for pattern, repl in _STEM_RULES:
            if new is None and re.match(pattern, name):
                new = re.sub(pattern, repl, name)
        m = re.match(r"^layer([1-4])\.(\d+)\.(.+)$", name)
        if new is None and m:
            stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
            head = f"res{stage}.{block}."
            ds = re.match(r"^downsample\.(\d)\.(.+)$", rest)
            if ds:
                # With avg_down the downsample is (pool, conv, bn), otherwise (conv, bn).
                avg = f"layer{m.group(1)}.{block}.downsample.2.weight" in state_dict
                idx = int(ds.group(1)) - (1 if avg else 0)
                new = head + {0: "shortcut.", 1: "shortcut.norm."}.get(idx, "?") + ds.group(2)
                if idx not in (0, 1):
                    new = None
            else:
                for pattern, repl in _BLOCK_RULES:
                    if re.match(pattern, rest):
                        new = head + re.sub(pattern, repl, rest)
                        break
        if new is None:
            unknown.append(name)
        else:
            out[prefix + new] = tensor
    if unknown:
        raise CheckpointMismatchError(
            f"{len(unknown)} parameter names are not ResNeSt (official/timm) names: "
            f"{_format_keys(unknown)}. Is this a checkpoint of another architecture?"
        )
    return out, dropped


def check_state_dict(
    converted: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    what: str = "checkpoint",
) -> None:
    """Raise unless ``converted`` has exactly the names and shapes of ``expected``.

    ``num_batches_tracked`` counters are ignored on both sides.
    """

    def keep(keys):
        return {k for k in keys if not k.endswith("num_batches_tracked")}

    got, want = keep(converted), keep(expected)
    missing = sorted(want - got)
    unexpected = sorted(got - want)
    shapes = sorted(
        f"{k}: {tuple(converted[k].shape)} vs expected {tuple(expected[k].shape)}"
        for k in got & want
        if tuple(converted[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_format_keys(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_format_keys(shapes, 6)}")
    if problems:
        raise CheckpointMismatchError(
            f"{what} does not fit the target network: " + "; ".join(problems)
        )


def load_torch_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a torch checkpoint file and return its state dict.

    Accepts a bare state dict or one nested under ``state_dict`` / ``model``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"{path} is not a readable torch checkpoint: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    # Checkpoints saved from DataParallel carry a "module." prefix.
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def convert_resnest_checkpoint(
    src: str,
    dst: str,
    variant: str,
    prefix: str = "backbone.bottom_up.",
    overwrite: bool = False,
) -> Dict[str, torch.Tensor]:
    """Convert ``src`` (official/timm ResNeSt) to a detectron2 checkpoint ``dst``.

    The result is checked against a freshly built backbone of ``variant`` (names and shapes,
    strictly) before anything is written; ``dst`` is written atomically.

    Args:
        src: input ``.pth`` file.
        dst: output ``.pth`` file (``{"model": ..., "matching_heuristics": False}``).
        variant: a name in :data:`~resnest_dense.modeling.backbone.variants.RESNEST_VARIANTS`.
        prefix: name prefix: ``backbone.bottom_up.`` for FPN models, ``backbone.`` otherwise.
        overwrite: replace an existing ``dst``.

    Returns:
        The converted state dict (with prefix).
    """
    from ..modeling.backbone.variants import variant_opts

    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")
    opts = variant_opts(variant)
    converted, dropped = convert_resnest_state_dict(load_torch_state_dict(src), prefix)
    model = build_variant_backbone(variant)
    expected = {prefix + k: v for k, v in model.state_dict().items()}
    check_state_dict(converted, expected, what=f"{src} (as {variant})")
    tmp = dst + ".tmp"
    torch.save(
        {"model": converted, "__author__": "resnest_dense", "matching_heuristics": False}, tmp
    )
    os.replace(tmp, dst)
    logger.info(
        "Wrote %s: %d tensors for %s (dropped %d: classifier and BN counters). Use it with "
        "%s and these input settings: %s",
        dst,
        len(converted),
        variant,
        len(dropped),
        " ".join(str(o) for o in opts),
        REQUIRED_INPUT_SETTINGS,
    )
    return converted


def build_variant_backbone(
    variant: str, norm: str = "FrozenBN", out_features: Optional[List[str]] = None
):
    """Build the bare ResNeSt backbone of a named variant (res2..res5 outputs)."""
    from detectron2.layers import ShapeSpec

    from ..config import get_resnest_cfg
    from ..modeling.backbone import build_resnest_backbone
    from ..modeling.backbone.variants import variant_opts

    cfg = get_resnest_cfg()
    cfg.merge_from_list(variant_opts(variant))
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = out_features or ["res2", "res3", "res4", "res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_resnest_backbone(cfg, ShapeSpec(channels=3))
