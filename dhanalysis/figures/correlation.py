"""Correlation figures: PCC bars (Fig. 3, Fig. A.2; paper §3.2) and spatial-correlation maps (Fig. 4; §3.4).

PCC functions take the tidy ``pcc.csv`` table (`dhanalysis.probes.pcc.pcc_table`): one row per (model, head,
proposal_set, grouping, group, measure) with the value in ``pcc`` (``variant`` optional, for legend labels). Every
alignment measure the table holds gets its own row of panels, the paper's pooled PCC first; a table without the
``measure`` column (written before the measures) holds the pooled PCC alone and draws as the paper's figure. Fig. 4 takes the three
(S², S²) cell-by-cell cosine matrices of ``spatial_corr.npz`` (cell = y·S + x).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, FigureBase

from dhanalysis.figures.style import (CORRELATION_CMAP, PROPOSAL_SET_LABELS, caveat_figure, draw_caveat, head_color,
                                      head_label, paper_style, variant_label)
from dhanalysis.vocab import (ALIGNMENT_MEASURE_LABELS, ALIGNMENT_MEASURES, DIFFICULTY_GROUPS, MODEL_PROPOSAL_SETS,
                              PREDEFINED, SIZE_GROUPS)

FIG3_SIZES = tuple(reversed(SIZE_GROUPS))  # the paper's order, left panel: large, medium, small
FIG3_SETS = MODEL_PROPOSAL_SETS  # right panel: the model's own proposals
MAP_TITLES = {"conv_output": "conv-head: output feature map",
              "conv_output_pre_relu": "conv-head: output map before its last ReLU", "fc_output": "fc-head: output feature map",
              "fc_weight": "fc-head: weight parameters"}


def _bars(ax: Axes, table: pd.DataFrame, categories: Sequence[str], category_col: str,
          category_labels: Mapping[str, str] | None = None) -> None:
    """Grouped bars: one group per category, one bar per (model, head) series, coloured by head, values on top."""
    if table.empty:
        ax.text(0.5, 0.5, "no results", transform=ax.transAxes, ha="center", va="center", color="#777777")
    series = list(table.groupby(["model", "head"], sort=False, dropna=False))
    models_differ = table["model"].nunique() > 1
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(categories))
    for k, ((model, head), part) in enumerate(series):
        values = part.set_index(category_col)["pcc"].reindex(list(categories)).to_numpy(dtype=float)
        variant = part["variant"].iloc[0] if "variant" in part.columns else None
        label = head_label(head)
        if models_differ:
            label += f" ({variant_label(variant, str(model))})"
        pos = x - 0.4 + width * (k + 0.5)
        bars = ax.bar(pos, np.nan_to_num(values), width * 0.92, color=head_color(head), label=label,
                      edgecolor="white", linewidth=0.5)
        for bar, v in zip(bars, values):
            if np.isfinite(v):
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, max(v, 0)), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [(category_labels or {}).get(c, c) for c in categories])
    ax.set_xlim(-0.5, len(categories) - 0.5)
    low = min(0.0, float(np.nanmin(table["pcc"])) - 0.05) if len(table) else 0.0
    ax.set_ylim(low, 1.0)
    ax.set_ylabel("PCC")
    ax.grid(axis="x", visible=False)


def measures_of(pcc: pd.DataFrame) -> list[str]:
    """The measures ``pcc`` holds, the paper's pooled PCC first (a table without a ``measure`` column: that alone)."""
    if "measure" not in pcc.columns:
        return ["pooled_pcc"]
    present = set(pcc["measure"].dropna())
    return [m for m in ALIGNMENT_MEASURES if m in present] + sorted(present - set(ALIGNMENT_MEASURES))


def _of(pcc: pd.DataFrame, measure: str) -> pd.DataFrame:
    return pcc[pcc["measure"] == measure] if "measure" in pcc.columns else pcc


def _legend_above(fig: FigureBase, ax: Axes, note: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4), frameon=False, title=note)


def plot_fig3(pcc: pd.DataFrame, fig: Figure | None = None, note: str | None = None,
              caveat: str | None = None) -> Figure:
    """Fig. 3: PCC of predefined proposals by size (left: large, medium, small); RPN proposals and NMS detections
    (right); one bar per head; one row per alignment measure, the paper's pooled PCC first. ``note``: the legend's
    title; ``caveat``: the figure's title, in red."""
    measures = measures_of(pcc)
    with paper_style():
        fig, panel, axes = caveat_figure(len(measures), 2, (7.4, 3.2 * len(measures)), fig, caveat,
                                         width_ratios=[3, 2])
        for row, measure in enumerate(measures):
            rows = _of(pcc, measure)
            pre = rows[(rows["proposal_set"] == PREDEFINED) & (rows["grouping"] == "size")]
            post = rows[rows["proposal_set"].isin(FIG3_SETS) & (rows["grouping"] == "all")]
            left, right = axes[row]
            _bars(left, pre, FIG3_SIZES, "group")
            _bars(right, post, FIG3_SETS, "proposal_set", PROPOSAL_SET_LABELS)
            right.set_ylabel("")
            if len(measures) > 1:
                left.set_ylabel(ALIGNMENT_MEASURE_LABELS.get(measure, measure))
            if row == 0:
                left.set_title("predefined proposals")
                right.set_title("RPN proposals and\ndetections after NMS")
                _legend_above(panel, left if len(pre) else right, note)
    return fig


def plot_figA2(pcc: pd.DataFrame, ax: Axes | None = None, title: str | None = None,
               note: str | None = None, caveat: str | None = None) -> Figure:
    """Fig. A.2: PCC of predefined proposals for easy, medium and hard classes, one bar per head; one panel per
    alignment measure, the paper's pooled PCC first (into the caller's ``ax``: the pooled PCC alone). ``title``: the
    first axes' title; ``note``: the legend's title; ``caveat``: the figure's title, in red."""
    part = pcc[(pcc["proposal_set"] == PREDEFINED) & (pcc["grouping"] == "difficulty")]
    measures = measures_of(part) if ax is None else ["pooled_pcc"]
    with paper_style():
        if ax is None:
            fig, panel, axes = caveat_figure(len(measures), 1, (4.8, 3.4 * len(measures)), caveat=caveat)
            panels = [a[0] for a in axes]
        else:  # the caller's figure: the caveat becomes its title
            fig = panel = ax.figure
            panels = [ax]
            if caveat:
                draw_caveat(fig, caveat)
        for axis, measure in zip(panels, measures):
            _bars(axis, _of(part, measure), DIFFICULTY_GROUPS, "group")
            if len(measures) > 1:
                axis.set_ylabel(ALIGNMENT_MEASURE_LABELS.get(measure, measure))
        panels[0].set_title(title or "predefined proposals by class difficulty")
        _legend_above(panel, panels[0], note)
    return fig


def tile_cells(matrix: np.ndarray) -> np.ndarray:
    """Tile a cell-by-cell matrix ``(S², S²)`` into the ``(S², S²)`` image of §3.4 / Fig. 4.

    Block (row y, column x) of the image is the S×S map of cell (y, x)'s correlation with every cell, so pixel
    ``[y·S + v, x·S + u]`` holds ``matrix[y·S + x, v·S + u]``.
    """
    cells = matrix.shape[0]
    s = int(round(np.sqrt(cells)))
    if matrix.shape != (cells, cells) or s * s != cells:
        raise ValueError(f"expected a square cell-by-cell matrix with a square number of cells, got {matrix.shape}")
    return matrix.reshape(s, s, s, s).transpose(0, 2, 1, 3).reshape(cells, cells)


def plot_fig4(maps: Mapping[str, np.ndarray], fig: Figure | None = None, titles: Mapping[str, str] | None = None,
              tiled: bool = False, caveat: str | None = None) -> Figure:
    """Fig. 4: conv-head output, fc-head reconstructed output and fc-head weights, each tiled S×S blocks of S×S,
    with grid lines between blocks and one colour bar shared by the panels.

    ``maps``: name -> (S², S²) cell-by-cell matrix (``tiled=True``: already tiled). Missing names are left out.
    ``caveat``: the figure's title, in red (e.g. which maps do not come from the paper's models).
    """
    names = [m for m in MAP_TITLES if m in maps] + [m for m in maps if m not in MAP_TITLES]
    images = [np.asarray(maps[m], dtype=float) if tiled else tile_cells(np.asarray(maps[m], dtype=float))
              for m in names]
    vmin = min(0.0, min(float(np.nanmin(im)) for im in images))
    with paper_style():
        fig, panel, axes = caveat_figure(1, len(names), (3.3 * len(names) + 0.6, 3.6), fig, caveat)
        mappable = None
        for ax, name, image in zip(axes[0], names, images):
            s = int(round(np.sqrt(image.shape[0])))
            mappable = ax.imshow(image, cmap=CORRELATION_CMAP, vmin=vmin, vmax=1.0, interpolation="nearest")
            for k in range(1, s):
                ax.axhline(k * s - 0.5, color="white", linewidth=0.6)
                ax.axvline(k * s - 0.5, color="white", linewidth=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.set_title((titles or {}).get(name, MAP_TITLES.get(name, name)))
        panel.colorbar(mappable, ax=[ax for ax in axes[0]], shrink=0.85, label="cosine similarity")
    return fig
