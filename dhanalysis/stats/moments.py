"""Sufficient statistics of the sliding-window analysis, and everything that follows from them (§3.1–3.3).

COCO val2017 has ~36k boxes × 14k windows ≈ 5·10⁸ scored windows per model: too many rows to keep. Every number the
paper shows is a mean, a standard deviation or a Pearson correlation, and all three follow exactly from a few sums.
So the analysis keeps, per (model, head, category, size group, IoU bin), with x = window IoU with its box,
s = classification score of the box's class, r = IoU of the regressed window with the box:

    n, n_s, n_r, Σx, Σx², Σs, Σs², Σxs, Σr, Σr², Σxr

``n_s`` / ``n_r`` count the windows that have a score / a regressed box: a head without a classifier (vanilla
Double-Head's conv-head) has ``n_s = 0`` and zero score sums, so its score mean is NaN rather than a fake 0, and
tables still merge by plain addition (`merge_stats`): shards, ranks and chunks add up to one run over all images.
Sums are accumulated in float64 on the device with one ``index_add_`` per head over a flat (category, size, bin)
index: no Python loop over windows. The table functions need only numpy and pandas (torch is imported by the
accumulating functions alone), so figures can use them without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dhanalysis.vocab import SIZE_GROUPS

if TYPE_CHECKING:  # torch is imported where it is used, so that figures can read tables without it
    import torch

NUM_BINS = 20
KEYS = ("model", "head", "category_id", "category", "size", "bin")
MOMENTS = ("n", "n_s", "n_r", "sum_x", "sum_x2", "sum_s", "sum_s2", "sum_xs", "sum_r", "sum_r2", "sum_xr")
STATS_COLUMNS = KEYS + MOMENTS
PCC_MOMENTS = ("n", "sum_x", "sum_x2", "sum_s", "sum_s2", "sum_xs")  # the streaming sums of rpn / detection PCCs
TARGETS = {"score": "s", "reg_iou": "r"}  # pcc_from_stats(y=...) -> letter used in the column names


def iou_bin(iou: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """Index of the uniform bin on [0, 1] holding each IoU ``(N,)``; IoU 1 falls in the last bin."""
    return (iou * num_bins).long().clamp(0, num_bins - 1)


def moment_columns(x: torch.Tensor, s: torch.Tensor | None, r: torch.Tensor | None) -> torch.Tensor:
    """``(N, 11)`` float64 rows in `MOMENTS` order for windows with IoU ``x``, scores ``s``, regressed IoUs ``r``.

    ``s`` / ``r`` are None when the head lacks the task; their columns are then 0 (with ``n_s`` / ``n_r`` 0).
    """
    import torch

    x = x.double()
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    cols = [one, one if s is not None else zero, one if r is not None else zero, x, x * x]
    for y in (s, r):
        if y is None:
            cols += [zero, zero, zero]
        else:
            y = y.double()
            cols += [y, y * y, x * y]
    return torch.stack(cols, dim=1)


def new_sums(num_heads: int, num_classes: int, device: torch.device | str = "cpu",
             num_bins: int = NUM_BINS) -> torch.Tensor:
    """Zeroed running sums ``(H, K·G·B, 11)`` float64 for H heads, K classes, G size groups, B IoU bins."""
    import torch

    cells = num_classes * len(SIZE_GROUPS) * num_bins
    return torch.zeros(num_heads, cells, len(MOMENTS), dtype=torch.float64, device=device)


def cell_index(label: torch.Tensor, size: torch.Tensor, iou: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """Flat (category, size, bin) cell ``(N,)`` of windows with class labels 1..K, size indices and IoUs."""
    return ((label - 1) * len(SIZE_GROUPS) + size) * num_bins + iou_bin(iou, num_bins)


def add_moments(sums: torch.Tensor, cell: torch.Tensor, x: torch.Tensor, s: torch.Tensor | None,
                r: torch.Tensor | None) -> None:
    """Add windows ``(N,)`` to one head's sums ``(K·G·B, 11)`` in place: one ``index_add_``, no loop."""
    sums.index_add_(0, cell, moment_columns(x, s, r))


def stats_frame(
    sums: Any,
    heads: Sequence[str],
    model: str,
    category_ids: Sequence[int],
    category_names: Sequence[str],
    num_bins: int = NUM_BINS,
) -> pd.DataFrame:
    """The tidy statistics table (`STATS_COLUMNS`) of sums ``(H, K·G·B, 11)`` (tensor or array); empty cells left out.

    ``category_ids[k]`` / ``category_names[k]`` describe class label k + 1.
    """
    h, cells, _ = sums.shape
    k, g = len(category_ids), len(SIZE_GROUPS)
    if cells != k * g * num_bins:
        raise ValueError(f"sums have {cells} cells, expected {k} classes × {g} sizes × {num_bins} bins")
    array = sums.detach().cpu().numpy() if hasattr(sums, "detach") else np.asarray(sums)
    flat = array.reshape(h * cells, len(MOMENTS))
    head_i, cat_i, size_i, bin_i = np.unravel_index(np.arange(h * cells), (h, k, g, num_bins))
    keep = flat[:, 0] > 0
    frame = pd.DataFrame({
        "model": model,
        "head": np.asarray(heads, dtype=object)[head_i[keep]],
        "category_id": np.asarray(category_ids, dtype=np.int64)[cat_i[keep]],
        "category": np.asarray(category_names, dtype=object)[cat_i[keep]],
        "size": np.asarray(SIZE_GROUPS, dtype=object)[size_i[keep]],
        "bin": bin_i[keep].astype(np.int64),
    })
    for j, name in enumerate(MOMENTS):
        frame[name] = flat[keep, j]
    for name in ("n", "n_s", "n_r"):
        frame[name] = frame[name].round().astype(np.int64)
    return frame.reset_index(drop=True)


def merge_stats(*tables: pd.DataFrame) -> pd.DataFrame:
    """Add statistics tables (shards, ranks, chunks): rows with the same keys are summed, others kept.

    Works for any table whose sum columns are among `MOMENTS` (also the rpn / detection ``pcc_stats`` table); every
    other column is a key.
    """
    frames = [t for t in tables if t is not None and len(t)]
    if not frames:
        return pd.DataFrame(columns=list(STATS_COLUMNS))
    both = pd.concat(frames, ignore_index=True)
    moments = [c for c in MOMENTS if c in both.columns]
    keys = [c for c in both.columns if c not in moments]
    return both.groupby(keys, sort=True, dropna=False, as_index=False)[moments].sum()


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _std(n: np.ndarray, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Population standard deviation (ddof = 0) from n, Σy, Σy²."""
    mean = _divide(total, n)
    return np.sqrt(np.clip(_divide(squares, n) - mean * mean, 0, None))


def _check_by(stats: pd.DataFrame, by: Sequence[str]) -> list[str]:
    by = list(by)
    missing = [c for c in by if c not in stats.columns]
    if missing:
        hint = " (add it with analysis.groups.assign_difficulty)" if "difficulty" in missing else ""
        raise KeyError(f"statistics table has no column(s) {missing}{hint}")
    return by


def bin_summary(stats: pd.DataFrame, by: Sequence[str] = ("model", "head")) -> pd.DataFrame:
    """Mean ± std of score and regressed IoU per IoU bin (the curves of Fig. 2, Fig. A.1, Fig. A.3).

    Returns one row per (``by`` …, bin) with ``iou_lo``, ``iou_hi``, ``n``, ``iou_mean``, ``score_mean``,
    ``score_std``, ``reg_iou_mean``, ``reg_iou_std`` (population std, ddof = 0; NaN for a task the head lacks).
    """
    by = _check_by(stats, by)
    g = stats.groupby(by + ["bin"], sort=True, as_index=False)[list(MOMENTS)].sum()
    n, n_s, n_r = (g[c].to_numpy(np.float64) for c in ("n", "n_s", "n_r"))
    out = g[by + ["bin"]].copy()
    num_bins = NUM_BINS
    out["iou_lo"] = out["bin"] / num_bins
    out["iou_hi"] = (out["bin"] + 1) / num_bins
    out["n"] = g["n"].astype(np.int64)
    out["iou_mean"] = _divide(g["sum_x"].to_numpy(), n)
    out["score_mean"] = _divide(g["sum_s"].to_numpy(), n_s)
    out["score_std"] = _std(n_s, g["sum_s"].to_numpy(), g["sum_s2"].to_numpy())
    out["reg_iou_mean"] = _divide(g["sum_r"].to_numpy(), n_r)
    out["reg_iou_std"] = _std(n_r, g["sum_r"].to_numpy(), g["sum_r2"].to_numpy())
    return out


def pcc_from_moments(n: np.ndarray, sx: np.ndarray, sx2: np.ndarray, sy: np.ndarray, sy2: np.ndarray,
                     sxy: np.ndarray) -> np.ndarray:
    """Pearson's r from n, Σx, Σx², Σy, Σy², Σxy (arrays); NaN where n < 2 or a variable is constant."""
    n, sx, sx2, sy, sy2, sxy = (np.asarray(v, dtype=np.float64) for v in (n, sx, sx2, sy, sy2, sxy))
    cov = n * sxy - sx * sy
    var_x = n * sx2 - sx * sx
    var_y = n * sy2 - sy * sy
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.sqrt(var_x * var_y)
    ok = (n >= 2) & (var_x > 0) & (var_y > 0)
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def pcc_from_stats(stats: pd.DataFrame, by: Sequence[str] = ("model", "head"), y: str = "score") -> pd.DataFrame:
    """PCC between window IoU and ``y`` (``score`` or ``reg_iou``) per group of ``by``, over all bins (§3.2, Fig. 3).

    Returns ``by`` …, ``n`` (windows with a ``y``), ``pcc``. Groups whose head lacks the task (n = 0) are left out.
    """
    by = _check_by(stats, by)
    if y not in TARGETS:
        raise ValueError(f"y must be one of {sorted(TARGETS)}, got {y!r}")
    v = TARGETS[y]
    has = (stats[f"n_{v}"] > 0).to_numpy()
    part = pd.DataFrame({
        "n": stats[f"n_{v}"].to_numpy(np.float64),
        # x sums only over cells whose windows have a y; within a cell either all windows have it or none
        "sx": np.where(has, stats["sum_x"], 0.0),
        "sx2": np.where(has, stats["sum_x2"], 0.0),
        "sy": stats[f"sum_{v}"].to_numpy(np.float64),
        "sy2": stats[f"sum_{v}2"].to_numpy(np.float64),
        "sxy": stats[f"sum_x{v}"].to_numpy(np.float64),
    })
    for c in by:
        part[c] = stats[c].to_numpy()
    g = part.groupby(by, sort=True, as_index=False)[["n", "sx", "sx2", "sy", "sy2", "sxy"]].sum()
    g = g[g["n"] > 0]
    out = g[by].copy()
    out["n"] = g["n"].round().astype(np.int64)
    out["pcc"] = pcc_from_moments(g["n"], g["sx"], g["sx2"], g["sy"], g["sy2"], g["sxy"])
    return out.reset_index(drop=True)
