"""The sliding-window curves: score and regressed IoU against proposal IoU (Figs. 2, 6, 7, A.1, A.3; paper §3.1).

Every function takes a tidy *curves* table, one row per (model, head, group, IoU bin), as returned by
`dhanalysis.stats.moments.bin_summary` with the group column renamed to ``group``:

    model, variant, head, group, bin, iou_lo, iou_hi, n, score_mean, score_std, reg_iou_mean, reg_iou_std

(``variant`` and ``group`` may be absent when a figure does not need them; ``iou_center`` may replace
``iou_lo``/``iou_hi``; ``reg_mean``/``reg_std`` are accepted for ``reg_iou_mean``/``reg_iou_std``). A NaN mean is a
task the head does not have (vanilla Double-Head's conv-head has no classifier); such a curve is not drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, FigureBase
from matplotlib.patches import Rectangle

from dhanalysis.figures.style import (PROPOSAL_IOU_LABEL, REG_IOU_LABEL, SCORE_LABEL, VARIANT_LINESTYLES,
                                      VARIANT_MARKERS, caveat_figure, head_color, head_label, new_figure,
                                      paper_style, variant_color, variant_label)
from dhanalysis.vocab import DIFFICULTY_GROUPS, SIZE_GROUPS

CURVE_KINDS = (("score", SCORE_LABEL), ("reg_iou", REG_IOU_LABEL))  # (column prefix, axis label) per curve kind
SIZE_TITLES = {g: f"{g} objects" for g in (*SIZE_GROUPS, "all")}
DIFFICULTY_TITLES = {g: f"{g} classes" for g in DIFFICULTY_GROUPS}


def tidy_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """The curves with ``iou_center``, ``reg_iou_mean``/``reg_iou_std`` and ``variant`` present, sorted by bin."""
    df = curves.rename(columns={"reg_mean": "reg_iou_mean", "reg_std": "reg_iou_std"}).copy()
    if "iou_center" not in df.columns:
        if {"iou_lo", "iou_hi"} <= set(df.columns):
            df["iou_center"] = (df["iou_lo"] + df["iou_hi"]) / 2
        else:
            df["iou_center"] = (df["bin"] + 0.5) / 20
    for col in ("model", "variant"):
        if col not in df.columns:
            df[col] = None
    for col in ("score_mean", "score_std", "reg_iou_mean", "reg_iou_std"):
        if col not in df.columns:
            df[col] = np.nan
    return df.sort_values("iou_center", kind="stable")


def _series(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(model, head) curves in order of first appearance."""
    return list(df.groupby(["model", "head"], sort=False, dropna=False))


def draw_curve(ax: Axes, part: pd.DataFrame, task: str, color: str, label: str, std: bool = True,
               linestyle: str = "-", marker: str = "o") -> bool:
    """One mean curve (and its ±1 std band) of ``task`` (``score`` or ``reg_iou``); False when the head lacks it."""
    mean = part[f"{task}_mean"].to_numpy(dtype=float)
    if not np.isfinite(mean).any():
        return False
    x = part["iou_center"].to_numpy(dtype=float)
    ax.plot(x, mean, color=color, linestyle=linestyle, marker=marker, markersize=3, linewidth=1.4, label=label)
    if std:
        sd = part[f"{task}_std"].to_numpy(dtype=float)
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.18, linewidth=0)
    return True


def _unit_axes(ax: Axes, ylabel: str | None, xlabel: bool = True) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(np.linspace(0, 1, 6))
    if xlabel:
        ax.set_xlabel(PROPOSAL_IOU_LABEL)
    if ylabel:
        ax.set_ylabel(ylabel)


def _figure_legend(fig: FigureBase, axes: list[Axes], note: str | None = None) -> None:
    """One legend above the panels (never over the data), from the first panel that has each label; ``note``
    (what the figure is drawn from) becomes the legend's title."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4), frameon=False, title=note)


def _head_series_label(model: str, variant: str | None, head: str, models_differ: bool) -> str:
    """"fc-head", or "fc-head (Single-FC)" when the compared heads come from different models."""
    label = head_label(head)
    return f"{label} ({variant_label(variant, str(model))})" if models_differ else label


def plot_head_comparison(curves: pd.DataFrame, groups: Sequence[str], fig: Figure | None = None,
                         note: str | None = None, titles: dict[str, str] | None = None,
                         caveat: str | None = None) -> Figure:
    """fc-head vs conv-head, mean ± std: scores (top row) and regressed IoUs (bottom row), one column per group.

    ``note``: the legend's title; ``caveat``: the figure's title, in red (see `draw_caveat`).
    """
    df = tidy_curves(curves)
    groups = [g for g in groups if g in set(df["group"])] or list(dict.fromkeys(df["group"]))
    with paper_style():
        fig, panel, axes = caveat_figure(2, len(groups), (3.1 * len(groups), 5.6), fig, caveat, sharex=True,
                                         sharey="row")
        models_differ = df["model"].nunique() > 1 if "model" in df.columns else False
        for j, group in enumerate(groups):
            for (model, head), part in _series(df[df["group"] == group]):
                variant = part["variant"].iloc[0]
                for i, (task, _) in enumerate(CURVE_KINDS):
                    draw_curve(axes[i][j], part, task, head_color(head),
                               _head_series_label(model, variant, head, models_differ))
            axes[0][j].set_title((titles or SIZE_TITLES).get(group, str(group)))
            for i, (_, ylabel) in enumerate(CURVE_KINDS):
                _unit_axes(axes[i][j], ylabel if j == 0 else None, xlabel=i == 1)
        _figure_legend(panel, [ax for row in axes for ax in row], note)
    return fig


def plot_fig2(curves: pd.DataFrame, fig: Figure | None = None, note: str | None = None,
              caveat: str | None = None) -> Figure:
    """Fig. 2: fc-head vs conv-head for small, medium and large objects (``group`` holds the size)."""
    return plot_head_comparison(curves, SIZE_GROUPS, fig, note, caveat=caveat)


def plot_figA1(curves: pd.DataFrame, fig: Figure | None = None, note: str | None = None,
               caveat: str | None = None) -> Figure:
    """Fig. A.1: fc-head vs conv-head for easy, medium and hard classes (``group`` holds the difficulty)."""
    return plot_head_comparison(curves, DIFFICULTY_GROUPS, fig, note, DIFFICULTY_TITLES, caveat)


def plot_model_comparison(curves: pd.DataFrame, fig: Figure | None = None, note: str | None = None) -> Figure:
    """Two models' heads, mean ± std over all objects: scores (left), regressed IoUs (right). Figs. 6 and 7(a, c)."""
    df = tidy_curves(curves)
    with paper_style():
        fig, axes = new_figure(1, 2, (7.2, 3.2), fig)
        for (model, head), part in _series(df):
            variant = part["variant"].iloc[0]
            for j, (task, ylabel) in enumerate(CURVE_KINDS):
                draw_curve(axes[0][j], part, task, variant_color(variant), variant_label(variant, str(model)),
                           marker=VARIANT_MARKERS.get(variant or "", "o"))
                _unit_axes(axes[0][j], ylabel)
        _figure_legend(fig, axes[0], note)
    return fig


def plot_fig6(curves: pd.DataFrame, fig: Figure | None = None, note: str | None = None) -> Figure:
    """Fig. 6: Single-Conv vs Double-Conv (their conv-heads), all objects."""
    return plot_model_comparison(curves, fig, note)


def zoom_limits(df: pd.DataFrame, task: str, x_range: tuple[float, float]) -> tuple[float, float]:
    """y-range of the mean ± std of ``task`` over bins whose centre lies in ``x_range``, with a small margin."""
    inside = df[(df["iou_center"] >= x_range[0]) & (df["iou_center"] <= x_range[1])]
    lo = (inside[f"{task}_mean"] - inside[f"{task}_std"].fillna(0)).min()
    hi = (inside[f"{task}_mean"] + inside[f"{task}_std"].fillna(0)).max()
    if not np.isfinite([lo, hi]).all():
        return 0.0, 1.0
    pad = max(0.02, 0.06 * (hi - lo))
    return max(0.0, lo - pad), min(1.0, hi + pad)


def plot_fig7(curves: pd.DataFrame, zoom: tuple[float, float] = (0.5, 1.0), fig: Figure | None = None,
              note: str | None = None) -> Figure:
    """Fig. 7: Single-FC vs Double-FC: (a) scores, (b) zoom of the box in (a), (c) regressed IoUs, (d) zoom of (c)."""
    df = tidy_curves(curves)
    with paper_style():
        fig, axes = new_figure(1, 4, (13.0, 3.3), fig)
        panels = [(axes[0][0], axes[0][1], "score", SCORE_LABEL, "a", "b"),
                  (axes[0][2], axes[0][3], "reg_iou", REG_IOU_LABEL, "c", "d")]
        for full, zoomed, task, ylabel, a, b in panels:
            for (model, head), part in _series(df):
                variant = part["variant"].iloc[0]
                style = dict(marker=VARIANT_MARKERS.get(variant or "", "o"))
                label = variant_label(variant, str(model))
                draw_curve(full, part, task, variant_color(variant), label, **style)
                draw_curve(zoomed, part, task, variant_color(variant), label, **style)
            _unit_axes(full, ylabel)
            y0, y1 = zoom_limits(df, task, zoom)
            full.add_patch(Rectangle((zoom[0], y0), zoom[1] - zoom[0], y1 - y0, fill=False, edgecolor="black",
                                     linewidth=1.0, linestyle="--", zorder=5, clip_on=False))
            zoomed.set_xlim(*zoom)
            zoomed.set_ylim(y0, y1)
            zoomed.set_xlabel(PROPOSAL_IOU_LABEL)
            full.set_title(f"({a}) {ylabel}")
            zoomed.set_title(f"({b}) zoom of the box in ({a})")
        _figure_legend(fig, [axes[0][0], axes[0][2]], note)
    return fig


def plot_figA3(curves: pd.DataFrame, fig: Figure | None = None, note: str | None = None) -> Figure:
    """Fig. A.3: mean score (left) and mean regressed IoU (right) of single heads vs Double-Head-Ext's two heads.

    Colour follows the head, line style and marker the model, so "fc-head" reads the same as in Fig. 2.
    """
    df = tidy_curves(curves)
    with paper_style():
        fig, axes = new_figure(1, 2, (7.2, 3.4), fig)
        for (model, head), part in _series(df):
            variant = part["variant"].iloc[0]
            label = f"{variant_label(variant, str(model))} {head_label(head)}"
            for j, (task, ylabel) in enumerate(CURVE_KINDS):
                draw_curve(axes[0][j], part, task, head_color(head), label, std=False,
                           linestyle=VARIANT_LINESTYLES.get(variant or "", "-"),
                           marker=VARIANT_MARKERS.get(variant or "", "o"))
                _unit_axes(axes[0][j], f"mean {ylabel}")
        _figure_legend(fig, axes[0], note)
    return fig
