"""Sliding-window proposals around each ground-truth box (paper §3.1).

The paper scores "about 14,000" predefined windows per object whose IoUs with the box "gradually change from zero
(background) to one (the ground truth box)". It does not give the grid, so this module defines one and says why.

**The grid.** A window is the ground-truth box moved and resized, in units of the box itself:

    centre = box centre + (dx · w, dy · h),     size = (w · e^a, h · e^b)

so that the grid, and every window's IoU with its box, is the same for every box whatever its size and aspect ratio
(IoU is invariant to scaling x and y separately). The offsets come from two 2-D point sets whose product is the grid:

- *positions* ``(dx, dy)``: ``n_pos`` points on a golden-angle (Vogel) spiral, point i at radius
  ``POSITION_RADIUS · (i / (n_pos − 1)) ** POSITION_POWER`` and angle ``i · 137.5°``; point 0 is the box's own centre;
- *sizes* ``(a, b)``, log width and height ratios: ``n_size`` points on the same kind of spiral with
  ``SIZE_RADIUS`` and ``SIZE_POWER``; point 0 is the box's own size.

**Why spirals.** A plain product of four 1-D axes (x shift × y shift × width × height) puts its IoUs on a few
thousand distinct values that pile up in some bins and skip others: tuned 11⁴ grids still leave a bin under 1%. The
spiral gives every point its own radius and direction, so the 20 IoU bins fill smoothly, the count is adjustable in
steps of one (``n_pos × n_size ≈ proposals_per_gt``) and the coverage does not depend on the exact count.

**Why these constants.** IoU falls off fast with offset, so the points crowd towards the identity (powers > 1) for
the high-IoU bins to get their share. The radii reach shifts of one box size and sizes of e^±1 (0.37× to 2.7×), far
enough for about 1% of the windows to miss the box entirely (IoU 0, background). The four numbers were chosen by
maximising the smallest of the 20 bin shares; for a box well inside the image, 118 × 119 = 14,042 windows put
4.1%–6.8% of the windows in every bin (1.9% or more in each from 900 windows per box upwards; see docs/analysis.md).

Windows are then clipped to the image, as RPN proposals are, and windows that collapse (width or height below
``min_size`` pixels after clipping) are dropped, so boxes at the border get fewer windows.
"""

from __future__ import annotations

import math

import torch

from dhanalysis.boxes import box_centres, clip_boxes
from dhanalysis.errors import DHError

DEFAULT_PROPOSALS_PER_GT = 14_000
POSITION_RADIUS = 1.0  # largest centre shift, in box widths / heights
POSITION_POWER = 2.4
SIZE_RADIUS = 1.0  # largest |log size ratio|: sizes from e^-1 to e^1 times the box's
SIZE_POWER = 3.0
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def golden_spiral(n: int, radius: float, power: float, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, 2)`` points on a golden-angle spiral; point i at radius ``radius · (i/(n−1))**power``, point 0 at 0."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    r = radius * (i / max(n - 1, 1)) ** power
    angle = i * GOLDEN_ANGLE
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)


def grid_shape(proposals_per_gt: int) -> tuple[int, int]:
    """(positions, sizes) whose product is closest to ``proposals_per_gt`` with the two nearly equal."""
    if proposals_per_gt < 1:
        raise DHError(f"--proposals-per-gt must be at least 1, got {proposals_per_gt}")
    n_pos = max(1, round(math.sqrt(proposals_per_gt)))
    n_size = max(1, round(proposals_per_gt / n_pos))
    return n_pos, n_size


def sliding_window_grid(proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """The relative grid ``(M, 4)``: rows ``(dx, dy, a, b)``, position-major; row 0 is the box itself."""
    n_pos, n_size = grid_shape(proposals_per_gt)
    pos = golden_spiral(n_pos, POSITION_RADIUS, POSITION_POWER, device)
    size = golden_spiral(n_size, SIZE_RADIUS, SIZE_POWER, device)
    return torch.cat([pos.repeat_interleave(n_size, dim=0), size.repeat(n_pos, 1)], dim=1)


def sliding_window_proposals(
    gt_boxes: torch.Tensor,
    image_size: tuple[int, int],
    proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT,
    min_size: float = 1e-3,
    grid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows around every box of one image, clipped to the image, degenerate ones dropped.

    Args:
        gt_boxes: ``(G, 4)`` xyxy, pixels of the image the windows are for.
        image_size: ``(height, width)`` of that image (clipping bounds).
        grid: a precomputed `sliding_window_grid` (saves rebuilding it per image); else built from
            ``proposals_per_gt``.

    Returns:
        proposals ``(P, 4)`` xyxy on ``gt_boxes``' device and in its dtype (float32 for integer boxes), and owner
        ``(P,)`` int64, the index of each window's box. Windows are grouped by box in box order, each box's in grid
        order.
    """
    if not gt_boxes.is_floating_point():
        gt_boxes = gt_boxes.float()
    if grid is None:
        grid = sliding_window_grid(proposals_per_gt, gt_boxes.device)
    grid = grid.to(device=gt_boxes.device, dtype=gt_boxes.dtype)
    wh = (gt_boxes[:, 2:] - gt_boxes[:, :2])[:, None, :]  # (G, 1, 2)
    centre = box_centres(gt_boxes)[:, None, :] + grid[None, :, :2] * wh  # (G, M, 2)
    half = wh * torch.exp(grid[None, :, 2:]) / 2
    windows = torch.cat([centre - half, centre + half], dim=-1)  # (G, M, 4)
    windows = clip_boxes(windows, float(image_size[0]), float(image_size[1]))
    size = windows[..., 2:] - windows[..., :2]
    keep = (size >= min_size).all(dim=-1)  # (G, M)
    owner = torch.arange(len(gt_boxes), device=gt_boxes.device)[:, None].expand_as(keep)
    return windows[keep], owner[keep]
