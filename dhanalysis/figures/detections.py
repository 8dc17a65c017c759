"""Figures of `dhanalysis detections`, drawn from its tables alone: the (IoU, score) histogram with the per-bin mean
score (the paper's Fig. 2 top and Fig. 3 right for any detector), COCO analyze()'s stacked precision–recall curves,
TIDE's ΔAP bars, the reliability diagram and the confusion matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from dhanalysis.figures.style import new_figure, paper_style

ANALYZE_COLORS = {"C75": "#FFFFFF", "C50": "#3F7FBF", "Loc": "#7FBFFF", "Sim": "#BFBF3F", "Oth": "#FFBF7F",
                  "BG": "#FF7F7F", "FN": "#BF3F3F"}  # the classic analyze() palette, lightest first


def plot_alignment(hist: pd.DataFrame, bins: pd.DataFrame, corr: pd.DataFrame | None = None,
                   score_field: str = "score", title: str | None = None) -> Figure:
    """2-D histogram of detections over (IoU, score) with the mean ± std score per IoU bin; the title states the
    overall correlations when ``corr`` (det_alignment.csv) is given."""
    h = hist[hist["score_field"] == score_field]
    n = int(h["iou_bin"].max()) + 1
    grid = np.zeros((n, n))
    grid[h["iou_bin"].to_numpy(), h["score_bin"].to_numpy()] = h["count"].to_numpy()
    b = bins[(bins["score_field"] == score_field) & (bins["size"] == "all")]
    with paper_style():
        fig, axes = new_figure(1, 1, (4.6, 3.8))
        ax = axes[0][0]
        shown = np.ma.masked_equal(grid.T, 0)
        mesh = ax.pcolormesh(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), shown, cmap="Blues",
                             norm=LogNorm(vmin=1, vmax=max(grid.max(), 1)))
        fig.colorbar(mesh, ax=ax, label="detections")
        mid = (b["iou_lo"] + b["iou_hi"]) / 2
        ax.errorbar(mid, b["score_mean"], yerr=b["score_std"], color="#DE8F05", marker="o", ms=3, lw=1.2,
                    capsize=2, label="mean ± std per IoU bin")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="IoU with the best ground truth of the detected class",
               ylabel=score_field)
        ax.legend(loc="upper left")
        if title is None and corr is not None:
            row = corr[(corr["score_field"] == score_field) & (corr["grouping"] == "all")]
            if len(row):
                r = row.iloc[0]
                title = (f"n = {int(r['n'])}: Pearson {r['pearson']:.3f}, Spearman {r['spearman']:.3f}, "
                         f"Kendall {r['kendall']:.3f}")
        if title:
            ax.set_title(title, fontsize=8)
    return fig


def plot_analyze(pr: pd.DataFrame, ap: pd.DataFrame, category: str = "all") -> Figure:
    """COCO analyze()'s stacked PR curves of one class (or "all"): each band the precision gained by forgiving one
    more kind of error, labelled with the curve's AP."""
    part = pr[pr["category"] == category]
    aps = ap[ap["category"] == category].set_index("curve")["AP"]
    curves = [c for c in ANALYZE_COLORS if c in set(part["curve"])]
    with paper_style():
        fig, axes = new_figure(1, 1, (4.6, 3.8))
        ax = axes[0][0]
        for curve in reversed(curves):  # the outermost (FN) first, so the inner bands paint over it
            c = part[part["curve"] == curve]
            ax.fill_between(c["recall"], 0, c["precision"], color=ANALYZE_COLORS[curve],
                            label=f"[{aps.get(curve, np.nan):.3f}] {curve}", edgecolor="#333333", linewidth=0.4)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], loc="lower left")
        ax.set(xlim=(0, 1), ylim=(0, 1.0), xlabel="recall", ylabel="precision",
               title=f"COCO analyze(): {category}")
    return fig


def plot_tide(table: pd.DataFrame, ap50: float | None = None) -> Figure:
    """TIDE's ΔAP (AP points) of each main error type and of the two special ones, as bars."""
    with paper_style():
        fig, axes = new_figure(1, 2, (6.4, 2.8))
        for ax, kind in zip(axes[0], ("main", "special")):
            part = table[table["kind"] == kind]
            ax.bar(part["error"], part["delta_ap"] * 100, color="#0173B2" if kind == "main" else "#DE8F05")
            for x, v in enumerate(part["delta_ap"] * 100):
                ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
            ax.set(ylabel="ΔAP (AP points)", title=f"TIDE {kind} errors" + (f" (AP50 {ap50 * 100:.1f})"
                                                                          if ap50 is not None and kind == "main"
                                                                          else ""))
    return fig


def plot_reliability(calibration: pd.DataFrame, ece: dict[str, float] | None = None) -> Figure:
    """Reliability diagram: precision against mean score per equal-count score bin, at each IoU threshold."""
    with paper_style():
        fig, axes = new_figure(1, 1, (4.2, 3.8))
        ax = axes[0][0]
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--", label="calibrated")
        for iou, part in calibration.groupby("iou"):
            key = f"ece_{int(round(iou * 100))}"
            words = f", ECE {ece[key]:.3f}" if ece and ece.get(key) is not None else ""
            ax.plot(part["score_mean"], part["precision"], marker="o", ms=3, label=f"IoU {iou:.2f}{words}")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean score in bin", ylabel="precision (COCOeval true positives)")
        ax.legend(loc="upper left")
    return fig


def plot_confusion(confusion: pd.DataFrame, normalize: bool = True, max_labels: int = 40) -> Figure:
    """The confusion matrix (det_confusion.csv) as a heat map, predicted class down, true class across, background
    last on both (ultralytics' layout). ``normalize``: each true class's column divided by its total, so a cell reads
    "of the objects of this class (of the false positives, for the background column), the share predicted as that";
    class names are drawn while there are at most ``max_labels`` classes."""
    labels = list(dict.fromkeys(confusion["true"]))  # the table's order: classes by id, background last
    counts = (confusion.pivot(index="predicted", columns="true", values="count")
              .reindex(index=labels, columns=labels).to_numpy(np.float64))
    shown = counts
    if normalize:
        totals = np.nansum(counts, axis=0, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            shown = np.where(totals > 0, counts / totals, np.nan)
    shown = np.ma.masked_where(~np.isfinite(shown) | (shown == 0), shown)
    n = len(labels)
    side = min(3.2 + 0.16 * n, 12.0)
    iou, score = confusion["iou_threshold"].iloc[0], confusion["score_threshold"].iloc[0]
    with paper_style():
        fig, axes = new_figure(1, 1, (side + 1.0, side))
        ax = axes[0][0]
        ax.grid(False)
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class" if normalize else "count")
        ticks = np.arange(n)
        if n <= max_labels + 1:
            font = 7 if n <= 20 else 5
            ax.set_xticks(ticks, labels, rotation=90, fontsize=font)
            ax.set_yticks(ticks, labels, fontsize=font)
        else:
            ax.set_xticks([n - 1], [labels[-1]])
            ax.set_yticks([n - 1], [labels[-1]])
        if n <= 12:
            for (i, j), v in np.ndenumerate(counts):
                if np.isfinite(v) and v > 0:
                    ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] is not np.ma.masked and shown[i, j] > 0.6 else "black")
        ax.set(xlabel="true class", ylabel="predicted class",
               title=f"Confusion matrix (IoU > {iou:g}, score >= {score:g})")
    return fig
