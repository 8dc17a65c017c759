"""Sliding-window proposals (§3.1): counts, even IoU coverage, clipping, and IoUs against torchvision."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from dhanalysis.probes.proposals import (SCALE_RADIUS, SHIFT_RADIUS, grid_info, grid_shape, sliding_grid_shape,
                                           sliding_window_grid, sliding_window_proposals, spiral_grid)
from dhanalysis.probes.scoring import sample_per_box
from dhanalysis.stats.moments import NUM_BINS, iou_bin
from dhanalysis.boxes import matched_iou
from dhanalysis.errors import DHError

IMAGE = (1000, 1200)  # height, width
# well inside the image even for the largest windows (2.7x the box, shifted by one box size)
SHAPES = {
    "square": [500.0, 400.0, 600.0, 500.0],
    "wide": [450.0, 480.0, 650.0, 500.0],  # 10:1
    "tall": [580.0, 380.0, 600.0, 540.0],  # 1:8
    "small": [600.0, 500.0, 608.0, 506.0],  # 8 x 6 pixels, COCO "small"
}


def bin_shares(iou: torch.Tensor) -> torch.Tensor:
    return torch.bincount(iou_bin(iou), minlength=NUM_BINS).double() / len(iou)


@pytest.mark.parametrize("requested", [300, 2000, 14_000, 20_000])
def test_count_per_box_is_close_to_requested(requested):
    n_pos, n_size = grid_shape(requested)
    assert abs(n_pos * n_size - requested) / requested < 0.03
    gt = torch.tensor([SHAPES["square"]])
    boxes, owner = sliding_window_proposals(gt, IMAGE, requested)
    assert len(boxes) == n_pos * n_size  # nothing clipped away for a box well inside the image
    assert torch.equal(owner, torch.zeros(len(boxes), dtype=torch.long))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("requested", [1000, 14_000])
def test_every_iou_bin_gets_at_least_one_percent(shape, requested):
    gt = torch.tensor([SHAPES[shape]])
    boxes, owner = sliding_window_proposals(gt, IMAGE, requested)
    iou = matched_iou(boxes, gt[owner])
    shares = bin_shares(iou)
    assert shares.min() >= 0.01, f"{shape}: smallest bin share {shares.min():.4f}"
    assert iou.max() == pytest.approx(1.0)  # the box itself (grid row 0)
    assert (iou == 0).any()  # some windows are pure background


def test_iou_matches_torchvision_box_iou():
    gt = torch.tensor([SHAPES["square"], SHAPES["wide"], [0.0, 0.0, 90.0, 70.0]])
    boxes, owner = sliding_window_proposals(gt, IMAGE, 500)
    ours = matched_iou(boxes, gt[owner])
    reference = box_iou(boxes, gt)[torch.arange(len(boxes)), owner]
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_windows_are_clipped_and_degenerate_ones_dropped():
    gt = torch.tensor([[0.0, 0.0, 80.0, 60.0], [1150.0, 950.0, 1200.0, 1000.0], SHAPES["square"]])
    boxes, owner = sliding_window_proposals(gt, IMAGE, 2000)
    h, w = IMAGE
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 1e-3).all()
    counts = torch.bincount(owner, minlength=3)
    n = grid_shape(2000)[0] * grid_shape(2000)[1]
    assert counts[2] == n and counts[0] <= n and counts[1] <= n
    assert torch.equal(owner, owner.sort().values)  # grouped by box, in box order


def test_grid_is_deterministic_and_starts_with_the_box_itself():
    a, b = sliding_window_grid(5000), sliding_window_grid(5000)
    assert torch.equal(a, b)
    assert torch.equal(a[0], torch.zeros(4, dtype=a.dtype))
    assert len(torch.unique(a, dim=0)) == len(a)


def test_integer_boxes_and_bad_density():
    boxes, _ = sliding_window_proposals(torch.tensor([[500, 400, 600, 500]]), IMAGE, 100)
    assert boxes.is_floating_point()
    with pytest.raises(DHError, match="windows per box must be at least 1, got 0"):
        grid_shape(0)


def test_raw_sample_takes_k_per_box_reproducibly():
    owner = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    pick = sample_per_box(owner, 4, torch.Generator().manual_seed(1))
    assert torch.bincount(owner[pick], minlength=3).tolist() == [4, 3, 4]
    again = sample_per_box(owner, 4, torch.Generator().manual_seed(1))
    assert torch.equal(pick, again)
    assert len(set(pick.tolist())) == len(pick)


# ------------------------------------------------------------------------------------------------ --grid sliding
@pytest.mark.parametrize("requested", [150, 2000, 14_000])
def test_sliding_grid_is_a_product_of_four_axes(requested):
    grid = sliding_window_grid(requested, kind="sliding")
    m, k = sliding_grid_shape(requested)
    assert len(grid) == m * m * k * k and max(m, k) <= 1.5 * min(m, k)
    axes = [torch.unique(grid[:, c]) for c in range(4)]
    assert [len(a) for a in axes] == [m, m, k, k]  # distinct shifts per shift axis, distinct scales per scale axis
    assert torch.equal(axes[0], axes[1]) and torch.equal(axes[2], axes[3])  # x as y, width as height
    assert len(torch.unique(grid, dim=0)) == len(grid)  # m·m·k·k distinct rows of the product: all of it
    assert torch.equal(grid[0], torch.zeros(4, dtype=grid.dtype))  # row 0: the box itself
    assert axes[0].abs().max() == pytest.approx(SHIFT_RADIUS) and axes[2].abs().max() == pytest.approx(SCALE_RADIUS)
    assert grid_info(requested, "sliding")["per_box_before_clipping"] == len(grid)


def test_sliding_grid_at_the_default_density():
    assert sliding_grid_shape(14_000) == (13, 9)  # 13,689 windows, the m² k² closest to 14,000
    assert grid_info(14_000, "sliding") == {"kind": "sliding", "shifts_per_axis": 13, "scales_per_axis": 9,
                                            "per_box_before_clipping": 13_689}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_sliding_grid_puts_at_least_one_percent_in_every_iou_bin(shape):
    gt = torch.tensor([SHAPES[shape]], dtype=torch.float64)
    boxes, owner = sliding_window_proposals(gt, IMAGE, 14_000, kind="sliding")
    assert len(boxes) == 13_689  # nothing clipped away for a box well inside the image
    iou = box_iou(boxes, gt)[:, 0]  # torchvision as the independent reference
    shares = bin_shares(iou)
    assert shares.min() >= 0.01, f"{shape}: smallest bin share {shares.min():.4f}"
    assert shares.min() >= 0.034 and shares.max() <= 0.087  # the shares docs/analysis.md states
    assert iou[0] == pytest.approx(1.0)  # row 0 is the box itself
    assert (iou == 0).any()  # some windows are pure background


def test_default_grid_is_the_spiral_and_unknown_kinds_are_refused():
    assert torch.equal(sliding_window_grid(5000), sliding_window_grid(5000, kind="spiral"))
    assert torch.equal(sliding_window_grid(5000), spiral_grid(5000))
    assert grid_info(14_000) == {"kind": "spiral", "positions": 118, "sizes": 119, "per_box_before_clipping": 14_042}
    gt = torch.tensor([SHAPES["square"]])
    assert torch.equal(sliding_window_proposals(gt, IMAGE, 300)[0],
                       sliding_window_proposals(gt, IMAGE, 300, grid=spiral_grid(300))[0])
    with pytest.raises(DHError, match="'hexagonal'.*spiral, sliding"):
        sliding_window_grid(300, kind="hexagonal")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-image synthetic dataset and a tiny random single-fc checkpoint."""
    from dhanalysis.data.synth import make_synth_dataset
    from dhanalysis.model import build_model, save_checkpoint

    from helpers import tiny_config

    base = tmp_path_factory.mktemp("grid")
    make_synth_dataset(base / "data", num_train=1, num_val=1, image_size=64, seed=0)
    torch.manual_seed(0)
    cfg = tiny_config("single-fc", "model.num_classes=6", "model.min_size=64", "model.max_size=64",
                      f"data.root={base / 'data'}")
    save_checkpoint(base / "fc.pth", build_model(cfg))
    return base


def test_grid_flag_reaches_the_windows_and_the_run_identity(tiny_run, capsys):
    import json

    import pandas as pd

    from dhanalysis.probes.harness import image_context
    from dhanalysis.cli import main
    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.model.checkpoint import load_checkpoint

    out = tiny_run / "sliding"
    args = ["sliding-window", "--ckpt", str(tiny_run / "fc.pth"), "--out", str(out), "--proposals-per-gt", "150",
            "--raw-sample", "100000", "--no-progress"]
    assert main(args + ["--grid", "sliding"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grid"] == grid_info(150, "sliding") and summary["run"]["grid"] == "sliding"

    # the windows scored are the sliding grid's: same IoUs, box by box (raw rows hold every window)
    model = load_checkpoint(tiny_run / "fc.pth")
    image, target = CocoDataset(tiny_run / "data", "val")[0]
    with torch.inference_mode():
        ctx, _, _ = image_context(model, image, target, torch.device("cpu"))
    windows, owner = sliding_window_proposals(ctx.boxes, ctx.image_size, 150, kind="sliding")
    expected = box_iou(windows, ctx.boxes)[torch.arange(len(windows)), owner]
    raw = pd.read_csv(out / "raw_sample.csv")
    assert len(raw) == len(windows) == summary["proposals"]
    for i, box in enumerate(ctx.box_index.tolist()):
        got = torch.tensor(sorted(raw.loc[raw["box"] == box, "iou"]), dtype=torch.float64)
        torch.testing.assert_close(got, expected[owner == i].double().sort().values, rtol=1e-6, atol=1e-6)

    # resuming with another grid is refused like another density; a bad kind is a one-line error naming --grid
    capsys.readouterr()
    assert main(args + ["--grid", "spiral"]) == 2
    err = capsys.readouterr().err
    assert "grid: 'sliding' vs absent" in err and "--overwrite" in err and err.count("\n") == 1
    assert main(args + ["--grid", "hexagonal"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dhanalysis: error: --grid: ") and "'hexagonal'" in err and err.count("\n") == 1
