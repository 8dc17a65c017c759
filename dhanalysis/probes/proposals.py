"""Sliding-window proposals around each ground-truth box (paper §3.1).

The paper scores "about 14,000" predefined windows per object whose IoUs with the box "gradually change from zero
(background) to one (the ground truth box)". It does not give the grid, so this module defines two and says why;
``kind`` picks one (`GRID_KINDS`, default ``"spiral"``).

**Windows.** Both grids move and resize the ground-truth box in units of the box itself:

    centre = box centre + (dx · w, dy · h),     size = (w · e^a, h · e^b)

so that the grid, and every window's IoU with its box, is the same for every box whatever its size and aspect ratio
(IoU is invariant to scaling x and y separately). A grid is an ``(M, 4)`` table of rows ``(dx, dy, a, b)``; row 0 is
``(0, 0, 0, 0)``, the box itself.

**The spiral grid** (``kind="spiral"``, the default). The product of two 2-D point sets:

- *positions* ``(dx, dy)``: ``n_pos`` points on a golden-angle (Vogel) spiral, point i at radius
  ``POSITION_RADIUS · (i / (n_pos − 1)) ** POSITION_POWER`` and angle ``i · 137.5°``; point 0 is the box's own centre;
- *sizes* ``(a, b)``, log width and height ratios: ``n_size`` points on the same kind of spiral with
  ``SIZE_RADIUS`` and ``SIZE_POWER``; point 0 is the box's own size.

*Why spirals.* Every point has its own radius and direction, so the IoUs take as many distinct values as there are
windows, the 20 IoU bins fill smoothly, the count is adjustable in steps of one (``n_pos × n_size ≈
proposals_per_gt``) and the coverage does not depend on the exact count.

*Why these constants.* IoU falls off fast with offset, so the points crowd towards the identity (powers > 1) for
the high-IoU bins to get their share. The radii reach shifts of one box size and sizes of e^±1 (0.37× to 2.7×), far
enough for about 1% of the windows to miss the box entirely (IoU 0, background). The four numbers were chosen by
maximising the smallest of the 20 bin shares; for a box well inside the image, 118 × 119 = 14,042 windows put
4.1%–6.8% of the windows in every bin (1.9% or more in each from 900 windows per box upwards; see docs/analysis.md).

**The sliding grid** (``kind="sliding"``). A literal sliding-window grid: the product of four 1-D axes, x shift ×
y shift × log width ratio × log height ratio, ``m`` shifts per shift axis and ``k`` scales per scale axis with
``m² k²`` the closest such product to ``proposals_per_gt`` (``max(m, k) ≤ 1.5 · min(m, k)``; 14,000 gives m = 13,
k = 9, 13,689 windows). Each axis is `zigzag_axis`: 0 first, then value i = 1 … n−1 at
``(−1)^(i+1) · radius · (i / (n − 1)) ** power`` — a regular stride in i, mapped through a power and placed on
alternate sides of the box; the last value reaches ``radius``, on the side the alternation ends on. Shifts use
``SHIFT_RADIUS`` and ``SHIFT_POWER``, sizes ``SCALE_RADIUS`` and ``SCALE_POWER`` (width and height independently).
At 14,000: shifts 0, +0.0001, −0.001, +0.005, −0.014, +0.032, −0.063, +0.11, −0.19, +0.29, −0.43, +0.61, −0.85
box widths (heights), and sizes e^a for a = 0, +0.0003, −0.004, +0.016, −0.044, +0.097, −0.18, +0.31, −0.5, i.e.
0.61× to 1.37× the box's width (height).

*Why this axis and not a plain regular stride.* The top bin, IoU ≥ 0.95, only holds windows within about 2.5% of
the box in every coordinate at once (roughly 2|dx| + 2|dy| + |a| + |b| ≤ 0.05). With about a dozen evenly spaced
shifts and evenly spaced log scales per axis, reaching far enough for IoUs near 0, the only such window is the box
itself: the best such grid we found puts 0.007% of its windows in the top bin, and making just one of the two axis
kinds uneven still leaves a bin under 0.3%. So the stride runs evenly in i and the power crowds the values towards
0. Axes symmetric about 0 repeat every |shift|, which halves the distinct IoU levels: their bin shares jump with
the exact counts (the best symmetric constants still drop to 0.8% at some density between 2,000 and 30,000).
Alternate sides give every magnitude once. The four constants were chosen, like the spiral's, by a search
maximising the smallest bin share over densities 2,000–30,000: for a box well inside the image, 13,689 windows put
3.4%–8.6% of the windows in every bin, and 1.7% miss the box (IoU 0); docs/analysis.md lists other densities.
Its steps in the count are coarse (products m² k²) and its bins less even than the spiral's, which stays the
default; the sliding grid is there to show how much the analysis depends on the grid.

Windows are then clipped to the image, as RPN proposals are, and windows that collapse (width or height below
``min_size`` pixels after clipping) are dropped, so boxes at the border get fewer windows.
"""

from __future__ import annotations

import math

import torch

from dhanalysis.boxes import box_centres, clip_boxes
from dhanalysis.errors import DHError

DEFAULT_PROPOSALS_PER_GT = 14_000
GRID_KINDS = ("spiral", "sliding")
DEFAULT_GRID = "spiral"

# the spiral grid
POSITION_RADIUS = 1.0  # largest centre shift, in box widths / heights
POSITION_POWER = 2.4
SIZE_RADIUS = 1.0  # largest |log size ratio|: sizes from e^-1 to e^1 times the box's
SIZE_POWER = 3.0
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

# the sliding grid
SHIFT_RADIUS = 0.85  # largest |centre shift| (reached on one side), in box widths / heights
SHIFT_POWER = 3.75
SCALE_RADIUS = 0.5  # largest |log size ratio| (reached on one side): e^0.5 = 1.65, e^-0.5 = 0.61
SCALE_POWER = 3.5
MAX_AXIS_RATIO = 1.5  # shifts per axis vs scales per axis, at most this far apart


def check_grid_kind(kind: str) -> str:
    """``kind`` when it names a grid (`GRID_KINDS`); else a one-line `DHError`."""
    if kind not in GRID_KINDS:
        raise DHError(f"unknown sliding-window grid {kind!r}; choose one of: {', '.join(GRID_KINDS)}")
    return kind


def _check_count(proposals_per_gt: int) -> None:
    if proposals_per_gt < 1:
        raise DHError(f"the number of windows per box must be at least 1, got {proposals_per_gt}")


# ------------------------------------------------------------------------------------------------ spiral
def golden_spiral(n: int, radius: float, power: float, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, 2)`` points on a golden-angle spiral; point i at radius ``radius · (i/(n−1))**power``, point 0 at 0."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    r = radius * (i / max(n - 1, 1)) ** power
    angle = i * GOLDEN_ANGLE
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)


def grid_shape(proposals_per_gt: int) -> tuple[int, int]:
    """Spiral grid: (positions, sizes) whose product is closest to ``proposals_per_gt`` with the two nearly equal."""
    _check_count(proposals_per_gt)
    n_pos = max(1, round(math.sqrt(proposals_per_gt)))
    n_size = max(1, round(proposals_per_gt / n_pos))
    return n_pos, n_size


def spiral_grid(proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The spiral grid ``(n_pos · n_size, 4)`` float64, position-major; row 0 is the box itself."""
    n_pos, n_size = grid_shape(proposals_per_gt)
    pos = golden_spiral(n_pos, POSITION_RADIUS, POSITION_POWER, device)
    size = golden_spiral(n_size, SIZE_RADIUS, SIZE_POWER, device)
    return torch.cat([pos.repeat_interleave(n_size, dim=0), size.repeat(n_pos, 1)], dim=1)


# ------------------------------------------------------------------------------------------------ sliding
def zigzag_axis(n: int, radius: float, power: float, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n,)`` float64 axis values: 0, then ``(−1)^(i+1) · radius · (i/(n−1))**power`` for i = 1 … n−1.

    Distinct values, every magnitude once (alternate sides of 0), crowded towards 0 for ``power`` > 1.
    """
    i = torch.arange(n, dtype=torch.float64, device=device)
    sign = torch.where(i % 2 == 1, 1.0, -1.0).to(torch.float64)
    values = sign * radius * (i / max(n - 1, 1)) ** power
    values[0] = 0.0
    return values


def sliding_grid_shape(proposals_per_gt: int) -> tuple[int, int]:
    """Sliding grid: (shifts per shift axis m, scales per scale axis k), ``m² k²`` closest to ``proposals_per_gt``.

    ``max(m, k) ≤ MAX_AXIS_RATIO · min(m, k)``; ties go to the closer pair, then to more shifts.
    """
    _check_count(proposals_per_gt)
    root = math.sqrt(proposals_per_gt)
    best: tuple[tuple[int, int, int], tuple[int, int]] = ((proposals_per_gt - 1, 0, -1), (1, 1))
    for m in range(1, math.ceil(root) + 1):
        lo, hi = math.ceil(m / MAX_AXIS_RATIO), math.floor(m * MAX_AXIS_RATIO)  # the k allowed with this m
        for k in sorted({min(max(math.floor(root / m), lo), hi), min(max(math.ceil(root / m), lo), hi)}):
            rank = (abs((m * k) ** 2 - proposals_per_gt), abs(m - k), -m)
            if rank < best[0]:
                best = (rank, (m, k))
    return best[1]


def sliding_grid(proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The sliding grid ``(m² k², 4)`` float64: every (dx, dy, a, b) of four `zigzag_axis` axes, dx slowest and
    b fastest; row 0 is the box itself."""
    m, k = sliding_grid_shape(proposals_per_gt)
    shift = zigzag_axis(m, SHIFT_RADIUS, SHIFT_POWER, device)
    scale = zigzag_axis(k, SCALE_RADIUS, SCALE_POWER, device)
    axes = torch.meshgrid(shift, shift, scale, scale, indexing="ij")
    return torch.stack([a.reshape(-1) for a in axes], dim=1)


# ------------------------------------------------------------------------------------------------ either grid
def sliding_window_grid(proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT, device: torch.device | str | None = None,
                        kind: str = DEFAULT_GRID) -> torch.Tensor:
    """The relative grid ``(M, 4)`` float64 of ``kind`` (``"spiral"`` or ``"sliding"``): rows ``(dx, dy, a, b)``,
    ``M ≈ proposals_per_gt``; row 0 is the box itself."""
    if check_grid_kind(kind) == "sliding":
        return sliding_grid(proposals_per_gt, device)
    return spiral_grid(proposals_per_gt, device)


def grid_info(proposals_per_gt: int, kind: str = DEFAULT_GRID) -> dict[str, int | str]:
    """What a grid is made of, for result summaries: its kind, its factors and its windows per box."""
    if check_grid_kind(kind) == "sliding":
        m, k = sliding_grid_shape(proposals_per_gt)
        return {"kind": kind, "shifts_per_axis": m, "scales_per_axis": k, "per_box_before_clipping": m * m * k * k}
    n_pos, n_size = grid_shape(proposals_per_gt)
    return {"kind": kind, "positions": n_pos, "sizes": n_size, "per_box_before_clipping": n_pos * n_size}


def sliding_window_proposals(
    gt_boxes: torch.Tensor,
    image_size: tuple[int, int],
    proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT,
    min_size: float = 1e-3,
    grid: torch.Tensor | None = None,
    kind: str = DEFAULT_GRID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows around every box of one image, clipped to the image, degenerate ones dropped.

    Args:
        gt_boxes: ``(G, 4)`` xyxy, pixels of the image the windows are for.
        image_size: ``(height, width)`` of that image (clipping bounds).
        grid: a precomputed `sliding_window_grid` (saves rebuilding it per image); else built from
            ``proposals_per_gt`` and ``kind``.

    Returns:
        proposals ``(P, 4)`` xyxy on ``gt_boxes``' device and in its dtype (float32 for integer boxes), and owner
        ``(P,)`` int64, the index of each window's box. Windows are grouped by box in box order, each box's in grid
        order.
    """
    if not gt_boxes.is_floating_point():
        gt_boxes = gt_boxes.float()
    if grid is None:
        grid = sliding_window_grid(proposals_per_gt, gt_boxes.device, kind)
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
