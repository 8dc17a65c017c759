"""Heads, variants, RoI heads, model building, checkpoints and parameter counts.

Names are imported on first use, so the torch-free rules of `variants` (loss weights, inference modes) do not pay for
importing torch; the variants themselves live in `dhanalysis.vocab`.
"""

from __future__ import annotations

from dhanalysis.lazy import lazy_getattr

_EXPORTS = {
    "DoubleHeadRCNN": "build",
    "build_model": "build",
    "load_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "VARIANTS": "variants",
    "get_variant": "variants",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
