"""The published ResNeSt variants as data: name -> ``MODEL.RESNETS`` settings.

Names are those of the official ResNeSt checkpoints (``resnest50``, ...) and of timm
(``resnest50d``, ``resnest101e``, ...); both spellings of the same network are listed.
"""

from typing import Dict, List

__all__ = ["RESNEST_VARIANTS", "variant_opts"]

_RESNEST = dict(RADIX=2, DEEP_STEM=True, AVD=True, AVG_DOWN=True, STRIDE_IN_1X1=False)


def _variant(depth: int, stem_width: int, **extra) -> Dict:
    return dict(_RESNEST, DEPTH=depth, STEM_WIDTH=stem_width, **extra)


RESNEST_VARIANTS: Dict[str, Dict] = {
    "resnest14d": _variant(14, 32),
    "resnest26d": _variant(26, 32),
    "resnest50": _variant(50, 32),
    "resnest50d": _variant(50, 32),
    "resnest101": _variant(101, 64),
    "resnest101e": _variant(101, 64),
    "resnest200": _variant(200, 64),
    "resnest200e": _variant(200, 64),
    "resnest269": _variant(269, 64),
    "resnest269e": _variant(269, 64),
    # The "fast" ablation variants: NsKxWd = radix N, cardinality K, width W, avd before conv2.
    "resnest50d_1s4x24d": _variant(
        50, 32, RADIX=1, NUM_GROUPS=4, BOTTLENECK_WIDTH=24, AVD_FIRST=True
    ),
    "resnest50d_2s2x40d": _variant(50, 32, NUM_GROUPS=2, BOTTLENECK_WIDTH=40, AVD_FIRST=True),
    "resnest50d_4s2x40d": _variant(
        50, 32, RADIX=4, NUM_GROUPS=2, BOTTLENECK_WIDTH=40, AVD_FIRST=True
    ),
}
RESNEST_VARIANTS["resnest50_fast_1s4x24d"] = RESNEST_VARIANTS["resnest50d_1s4x24d"]
RESNEST_VARIANTS["resnest50_fast_2s2x40d"] = RESNEST_VARIANTS["resnest50d_2s2x40d"]
RESNEST_VARIANTS["resnest50_fast_4s2x40d"] = RESNEST_VARIANTS["resnest50d_4s2x40d"]


def variant_opts(name: str) -> List:
    """``KEY VALUE`` list for ``cfg.merge_from_list`` that selects variant ``name``."""
    if name not in RESNEST_VARIANTS:
        raise KeyError(
            f"Unknown ResNeSt variant {name!r}; known: {', '.join(sorted(RESNEST_VARIANTS))}"
        )
    opts = []
    for key, value in RESNEST_VARIANTS[name].items():
        opts += [f"MODEL.RESNETS.{key}", value]
    return opts
