"""Our Double-Head training step and evaluation vs mmdetection's, where mmdetection is installed.

mmdetection is not a dependency (``/work/shared/tools/build-mmdet.sh VENV`` builds mmcv 2.1.0 + mmdet 3.3.0 into a
virtual environment; it takes about twenty CPU-heavy minutes). Where it is absent this section is skipped with one
line. The side-by-side comparison (same ResNet-50-FPN K = 5 conv-head model, random weights, interleaved in one
process) is not written yet: it is reported as not run, never as a number.
"""

from __future__ import annotations

import importlib.util

from bench.common import log


def run(device: str = "cpu") -> dict:
    """``{"skipped": reason, "line": a table row}``: the comparison is not run in this version."""
    if importlib.util.find_spec("mmdet") is None:
        reason = "mmdetection is not installed (build it with /work/shared/tools/build-mmdet.sh VENV)"
    else:
        reason = "mmdetection is installed, but the side-by-side comparison is not written yet"
    log(f"mmdet: skipped: {reason}")
    return {"skipped": reason, "line": f"| ours / mmdetection Double-Head step and evaluation | skipped: {reason} | | |"}
