"""Figures of `dhanalysis detections`, drawn from its tables alone: the (IoU, score) histogram with the per-bin mean
score (the paper's Fig. 2 top and Fig. 3 right for any detector), COCO analyze()'s stacked precision–recall curves,
TIDE's ΔAP bars, the reliability diagram, the confusion matrix and every alignment measure with its interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from dhanalysis.errors import DHError
from dhanalysis.figures.correlation import measures_of
from dhanalysis.figures.from_files import FileFigure, Reader
from dhanalysis.figures.style import new_figure, paper_style
from dhanalysis.vocab import (ALIGNMENT_MEASURE_LABELS, DETECTIONS_ALIGNMENT_BINS_CSV, DETECTIONS_ALIGNMENT_CSV,
                              DETECTIONS_ALIGNMENT_HIST_CSV, DETECTIONS_ANALYZE_CSV, DETECTIONS_ANALYZE_PR_CSV,
                              DETECTIONS_CALIBRATION_CSV, DETECTIONS_CONFUSION_CSV, DETECTIONS_MEASURES_CSV,
                              DETECTIONS_SUMMARY_JSON, DETECTIONS_TIDE_CSV, SIZE_GROUPS)

ANALYZE_COLORS = {"C75": "#FFFFFF", "C50": "#3F7FBF", "Loc": "#7FBFFF", "Sim": "#BFBF3F", "Oth": "#FFBF7F",
                  "BG": "#FF7F7F", "FN": "#BF3F3F"}  # the classic analyze() palette, lightest first
FIELD_COLORS = ("#0173B2", "#DE8F05", "#029E73", "#D55E00", "#CC78BC", "#CA9161", "#949494")  # one per score field


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


def plot_reliability(calibration: pd.DataFrame, summary: dict | None = None) -> Figure:
    """Reliability diagram of D-ECE (Küppers et al. 2020, confidence only): each score bin's precision (COCOeval's
    true positives at the IoU) against its mean score, every class pooled, at each IoU threshold; the title names the
    binning (det_calibration.csv's ``binning``), the legend each IoU's D-ECE and MCE from the summary. The table's
    LaECE rows (per class) are not drawn; the title gives LaECE_0's value."""
    if "measure" not in calibration:  # a table from before the measures were named: D-ECE's equal-count bins
        calibration = calibration.assign(measure="D-ECE", binning="equal-count", accuracy=calibration["precision"])
    dece = calibration[calibration["measure"] == "D-ECE"]
    binning = ", ".join(dict.fromkeys(dece["binning"])) or "no"
    summary = summary or {}
    with paper_style():
        fig, axes = new_figure(1, 1, (4.2, 3.8))
        ax = axes[0][0]
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--", label="calibrated")
        for iou, part in dece.groupby("iou"):
            key = int(round(iou * 100))
            words = ", ".join(f"{name} {summary[f'{stem}_{key}']:.3f}" for name, stem in (("D-ECE", "ece"),
                                                                                       ("MCE", "mce"))
                              if summary.get(f"{stem}_{key}") is not None)
            ax.plot(part["score_mean"], part["accuracy"], marker="o", ms=3,
                    label=f"IoU {iou:.2f}" + (f": {words}" if words else ""))
        laece = summary.get("laece")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean score in bin", ylabel="precision (COCOeval true positives)",
               title=f"D-ECE reliability, {binning} score bins (Küppers et al. 2020)"
                     + (f"\nLaECE_0 (per class, 25 bins) {laece:.3f}" if laece is not None else ""))
        ax.title.set_fontsize(8)
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


def _slots(table: pd.DataFrame, groupings: Sequence[str]) -> list[tuple[str, str]]:
    """The (grouping, group) columns of the measures figure: ``groupings`` in their order, size groups small to
    large, every other grouping's groups as the table lists them."""
    slots = []
    for grouping in groupings:
        groups = list(dict.fromkeys(table.loc[table["grouping"] == grouping, "group"].astype(str)))
        if grouping == "size":
            groups = sorted(groups, key=lambda g: SIZE_GROUPS.index(g) if g in SIZE_GROUPS else len(SIZE_GROUPS))
        slots += [(grouping, g) for g in groups]
    return slots


def plot_measures(table: pd.DataFrame, groupings: Sequence[str] = ("all", "size")) -> Figure:
    """Every alignment measure of det_measures.csv with its 95% bootstrap interval: one panel per measure, the
    paper's pooled PCC first (as bars, the others as dots); along each panel the groups of ``groupings`` (overall,
    then small, medium, large; add ``"class"`` for every class), one mark per score field, its interval a vertical
    segment. A row without an interval (no bootstrap replicates) draws its value alone; one without a value, nothing.
    """
    table = table[table["grouping"].isin(list(groupings))]
    if table.empty:
        raise DHError(f"the alignment-measures table has no rows of grouping {', '.join(groupings)}: nothing to draw")
    slots = _slots(table, groupings)
    fields = list(dict.fromkeys(table["score_field"].astype(str)))
    measures = measures_of(table)
    ncols = min(3, len(measures))
    nrows = math.ceil(len(measures) / ncols)
    width = 0.8 / len(fields)
    x = np.arange(len(slots))
    with paper_style():
        panel = min(max(2.4, 0.3 * len(slots) * len(fields) ** 0.5), 8.0)
        fig, axes = new_figure(nrows, ncols, (panel * ncols + 0.4, 2.4 * nrows + 0.6))
        flat = [ax for row in axes for ax in row]
        for ax, measure in zip(flat, measures):
            part = table[table["measure"] == measure]
            for k, field in enumerate(fields):
                rows = part[part["score_field"].astype(str) == field].assign(group=lambda d: d["group"].astype(str))
                rows = rows.set_index(["grouping", "group"]).reindex(slots)
                value, lo, hi = (rows[c].to_numpy(np.float64) for c in ("pcc", "ci_low", "ci_high"))
                pos = x - 0.4 + width * (k + 0.5)
                color = FIELD_COLORS[k % len(FIELD_COLORS)]
                has = np.isfinite(value)
                if measure == "pooled_pcc":  # the paper's bar
                    ax.bar(pos[has], value[has], width * 0.9, color=color, label=field, edgecolor="white",
                           linewidth=0.5)
                    interval_color = "#333333"
                else:
                    ax.plot(pos[has], value[has], marker="o", ms=4, ls="none", color=color, label=field)
                    interval_color = color
                both = np.isfinite(lo) & np.isfinite(hi)
                if both.any():
                    ax.vlines(pos[both], lo[both], hi[both], color=interval_color, lw=1.2)
            ax.axhline(0, color="#999999", lw=0.6)
            ax.set_title(ALIGNMENT_MEASURE_LABELS.get(measure, measure), fontsize=8)
            ax.set_xticks(x, [g for _, g in slots], rotation=90 if len(slots) > 4 else 0, fontsize=7)
            ax.set_xlim(-0.5, len(slots) - 0.5)
            ax.grid(axis="x", visible=False)
        for ax in flat[len(measures):]:
            ax.set_visible(False)
        handles, labels = flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4), frameon=False,
                   title="score field: value and 95% bootstrap interval over images")
    return fig


def _measures_or_why(read: Reader) -> Figure | str:
    """The alignment measures of det_measures.csv, or why a folder's table cannot be drawn (it has no rows)."""
    table = read(DETECTIONS_MEASURES_CSV)
    if table.empty:
        return (f"needs {DETECTIONS_MEASURES_CSV} with rows (the folder's has none; rerun dhanalysis detections on a "
                "results file with detections)")
    return plot_measures(table)


_SUMMARY = DETECTIONS_SUMMARY_JSON  # every figure needs the finished analysis's record; two read it
_HIST, _BINS, _CORR = DETECTIONS_ALIGNMENT_HIST_CSV, DETECTIONS_ALIGNMENT_BINS_CSV, DETECTIONS_ALIGNMENT_CSV

FILE_FIGURES: dict[str, FileFigure] = {
    "det-alignment": FileFigure("Detections: score vs IoU", (_HIST, _BINS, _CORR),
                                lambda read: plot_alignment(read(_HIST), read(_BINS), read(_CORR)), _SUMMARY),
    "det-analyze": FileFigure("Detections: COCO analyze()", (DETECTIONS_ANALYZE_PR_CSV, DETECTIONS_ANALYZE_CSV),
                              lambda read: plot_analyze(read(DETECTIONS_ANALYZE_PR_CSV), read(DETECTIONS_ANALYZE_CSV)),
                              _SUMMARY),
    "det-tide": FileFigure("Detections: TIDE", (DETECTIONS_TIDE_CSV,),
                           lambda read: plot_tide(read(DETECTIONS_TIDE_CSV), read(_SUMMARY).get("tide_ap50")),
                           _SUMMARY),
    "det-reliability": FileFigure("Detections: reliability", (DETECTIONS_CALIBRATION_CSV,),
                                  lambda read: plot_reliability(read(DETECTIONS_CALIBRATION_CSV), read(_SUMMARY)),
                                  _SUMMARY),
    "det-confusion": FileFigure("Detections: confusion matrix", (DETECTIONS_CONFUSION_CSV,),
                                lambda read: plot_confusion(read(DETECTIONS_CONFUSION_CSV)), _SUMMARY),
    "det-measures": FileFigure("Detections: alignment measures", (DETECTIONS_MEASURES_CSV,), _measures_or_why,
                               _SUMMARY),
}
