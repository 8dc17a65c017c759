"""The figure of `dhanalysis compare`, drawn from compare.csv alone: every metric's difference B − A with its 95%
paired bootstrap interval, one panel per family of metrics (each on its own scale), Holm's verdict on each mark."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dhanalysis.errors import DHError
from dhanalysis.figures.from_files import FileFigure
from dhanalysis.figures.style import new_figure, paper_style
from dhanalysis.vocab import ALIGNMENT_MEASURE_LABELS, COMPARE_CSV, COMPARE_SUMMARY_JSON

FAMILY_TITLES = {"coco": "COCO AP and AR", "tide": "TIDE: AP lost to each error (ΔAP)",
                 "alignment": "score–IoU alignment", "calibration": "calibration", "lrp": "LRP"}
FAVOURS_B, FAVOURS_A, UNDECIDED = "#029E73", "#D55E00", "#555555"  # Holm-rejected for B, for A; not rejected


def metric_label(metric: str) -> str:
    """How a metric of compare.csv reads on the figure."""
    if metric.startswith("tide_"):
        return f"ΔAP {metric[len('tide_'):]}"
    return {"d_ece_50": "D-ECE @ IoU 0.5", "olrp": "moLRP @ IoU 0.5", "AR100": "AR@100"}.get(
        metric, ALIGNMENT_MEASURE_LABELS.get(metric, metric))


def plot_compare(table: pd.DataFrame, names: Mapping[str, str] | None = None) -> Figure:
    """Each metric's difference B − A (compare.csv's ``difference``) as a dot with its paired interval, one panel per
    ``family`` in the table's order, the metrics top to bottom as listed. A dot is filled, and coloured by the
    detector it favours (``higher_is_better`` gives the direction), where Holm's correction rejects "no
    difference"; hollow and grey otherwise. ``names``: {"a": ..., "b": ...} for the title."""
    if table.empty:
        raise DHError("the comparison table has no rows: nothing to draw")
    families = list(dict.fromkeys(table["family"]))
    sizes = [int((table["family"] == f).sum()) for f in families]
    a, b = (names or {}).get("a", "A"), (names or {}).get("b", "B")
    with paper_style():
        fig, axes = new_figure(len(families), 1, (6.4, 0.6 + 0.32 * sum(sizes) + 0.45 * len(families)),
                               height_ratios=[s + 0.8 for s in sizes])
        for ax, family in zip((row[0] for row in axes), families):
            part = table[table["family"] == family].reset_index(drop=True)
            y = np.arange(len(part))[::-1]
            diff, lo, hi = (part[c].to_numpy(np.float64) for c in ("difference", "ci_low", "ci_high"))
            rejected = part["holm_reject"].astype(bool).to_numpy()
            better = np.where(part["higher_is_better"].astype(bool).to_numpy(), diff, -diff) > 0
            colors = np.where(rejected, np.where(better, FAVOURS_B, FAVOURS_A), UNDECIDED)
            has = np.isfinite(lo) & np.isfinite(hi)
            ax.hlines(y[has], lo[has], hi[has], colors=colors[has], lw=1.4)
            for yi, d, c, filled in zip(y, diff, colors, rejected):
                if np.isfinite(d):
                    ax.plot(d, yi, marker="o", ms=5, color=c, mfc=c if filled else "white", ls="none")
            ax.axvline(0, color="#999999", lw=0.8)
            ax.set_yticks(y, [metric_label(m) for m in part["metric"]], fontsize=7)
            ax.set_ylim(-0.7, len(part) - 0.3)
            ax.set_title(FAMILY_TITLES.get(family, family), fontsize=8, loc="left")
            ax.grid(axis="y", visible=False)
        axes[-1][0].set_xlabel(f"{b} − {a}")
        n = int(table["n_images"].iloc[0]) if "n_images" in table else 0
        fig.suptitle(f"{b} − {a} on {n} images: 95% paired bootstrap intervals; filled: Holm rejects 0 "
                     f"(green favours {b}, orange {a})", fontsize=8)
    return fig


FILE_FIGURES: dict[str, FileFigure] = {
    "det-compare": FileFigure("Detections: two detectors compared", (COMPARE_CSV,),
                              lambda read: plot_compare(read(COMPARE_CSV), read(COMPARE_SUMMARY_JSON).get("names")),
                              COMPARE_SUMMARY_JSON),
}
