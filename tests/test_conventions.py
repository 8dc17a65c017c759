"""The conventions of the source frameworks, one model option each (docs/published-models.md), against independent
references: float64 computations of each library's documented rule and hand-worked cases. Tiny sizes throughout."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from dhanalysis.model.build import build_model

from helpers import tiny_config

NO_WEIGHTS = "model.backbone.weights=null"


def grid_anchors_reference(cell: torch.Tensor, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """detectron2's / mmdetection's grid, float64: every cell anchor about (x·stride, y·stride), row-major positions
    (y, then x), the cell anchors of a position together."""
    ys, xs = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64) * stride,
                            torch.arange(grid[1], dtype=torch.float64) * stride, indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4)
    return (shifts + cell.double()[None]).reshape(-1, 4)


@pytest.mark.parametrize("strides", [(), (4, 8, 16, 32, 64)])
def test_anchor_strides_fixed_per_level_or_torchvision_rule(strides):
    """A 640×480 photo resized to 800×1066 pads to 800×1088: P6 is a 13×17 grid, whose stride is 64 in detectron2,
    mmdetection and maskrcnn-benchmark but 800 // 13 = 61 down the rows under torchvision's rule."""
    setting = f"model.rpn.anchor_strides=[{','.join(map(str, strides))}]"
    model = build_model(tiny_config("single-fc", NO_WEIGHTS, setting)).eval()
    generator = model.rpn.anchor_generator
    padded = (800, 1088)
    grids = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    feats = [torch.zeros(1, 1, *g) for g in grids]
    anchors = generator(ImageList(torch.zeros(1, 3, *padded), [(800, 1066)]), feats)[0]
    expected = []
    for level, (grid, cell) in enumerate(zip(grids, generator.cell_anchors)):
        stride = (4, 8, 16, 32, 64)[level]
        if strides:
            expected.append(grid_anchors_reference(cell, grid, stride))
        else:  # torchvision's rule, written out: stride per axis = padded size // grid size
            sy, sx = padded[0] // grid[0], padded[1] // grid[1]
            ys, xs = torch.meshgrid(torch.arange(grid[0]) * sy, torch.arange(grid[1]) * sx, indexing="ij")
            shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4).double()
            expected.append((shifts + cell.double()[None]).reshape(-1, 4))
    torch.testing.assert_close(anchors.double(), torch.cat(expected), rtol=0, atol=1e-4)
    last_row_y = anchors[-3:, 1] + anchors[-3:, 3]  # centres ×2 of the bottom-right P6 cell's anchors
    assert torch.allclose(last_row_y / 2, torch.tensor(12.0 * (64 if strides else 61)))
