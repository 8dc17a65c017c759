"""Tests marked ``cuda`` need a CUDA GPU: skipped without one, except under ``DHANALYSIS_REQUIRE_CUDA=1`` (what
`make gpu-check` sets), where a missing GPU is a failure, not a skip."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    if os.environ.get("DHANALYSIS_REQUIRE_CUDA") == "1":
        raise pytest.UsageError("no GPU present: the cuda-marked tests need a CUDA device (torch.cuda.is_available() "
                                "is False)")
    skip = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
