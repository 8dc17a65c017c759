"""Ablations from evaluation results: Fig. 8 (AP over λ_fc × λ_conv) and Tables 1, 2, 3 and 5 (paper §5.2, §5.3).

Inputs are the sweep table ``results.csv`` (`dhanalysis.engine.sweep.write_index`: the run index — grid, run and the
grid's settings — joined with each run's ``eval.csv`` rows) and per-model ``eval.csv`` tables. AP values are stored
as fractions and shown ×100 with one decimal, like the paper. Every table is returned as a DataFrame; `render` writes
it as Markdown (`markdown_table`) and CSV.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from dhanalysis.figures.style import HEATMAP_CMAP, MISSING_COLOR, new_figure, paper_style, variant_label
from dhanalysis.results import pick_mode
from dhanalysis.vocab import FUSION_MODES, HEAD_TYPES, INFERENCE_MODES, METRICS, TASKS, VARIANTS

VANILLA_MODE = VARIANTS["double-head"].default_mode  # (c): the green box marks vanilla Double-Head in it
EXT_MODE = VARIANTS["double-head-ext"].default_mode  # (d): the blue box marks its best cell
# Fig. 8's panels: each head alone, then vanilla Double-Head's and Double-Head-Ext's modes, titled by the mode table.
FIG8_MODES = {name: f"({'abcdefgh'[i]}) {INFERENCE_MODES[name].label}" for i, name in enumerate(
    [m.name for m in INFERENCE_MODES.values() if m.alone] + [VANILLA_MODE, EXT_MODE])}
BEST_COLOR = "#1f4fd8"  # the paper's blue box: best cell of (d)
VANILLA_COLOR = "#1a9641"  # the paper's green box: vanilla Double-Head (λ_fc = λ_conv = 1) in (c)
TABLE_METRICS = METRICS[:3]  # AP, AP50, AP75: the columns of Tables 2 and 3
TABLE3_MODES = {name: INFERENCE_MODES[name].fusion_label for name in FUSION_MODES}

# Table 1's weight columns: the (head, task) pairs each variant trains when λ = 1, weighted by that head's ω.
TABLE1_TASKS = {name: v.focused_tasks for name, v in VARIANTS.items()}


# ------------------------------------------------------------------------------------------------------ tables
def _percent(row: pd.Series, metrics: Sequence[str]) -> dict[str, float]:
    return {m: round(100 * float(row[m]), 1) if m in row and pd.notna(row[m]) else np.nan for m in metrics}


def _grid(results: pd.DataFrame, grid: str) -> pd.DataFrame:
    return results[results["grid"] == grid] if "grid" in results.columns else results


def table1(results: pd.DataFrame) -> pd.DataFrame:
    """Table 1: each head structure with its loss weights (fc-head cls/reg, conv-head cls/reg) and AP."""
    rows = []
    for run, part in _grid(results, "table1").groupby("run", sort=False):
        best = pick_mode(part)
        variant = str(best["variant"])
        weights = {"fc": float(best["w_fc"]), "conv": float(best["w_conv"])}
        cells = {f"{h}-head {t}": "-" for h in HEAD_TYPES for t in TASKS}
        for head, task in TABLE1_TASKS.get(variant, ()):
            cells[f"{head}-head {task}"] = f"{weights[head]:.1f}"
        rows.append({"group": best.get("group", ""), "method": variant_label(variant), **cells,
                     "AP": _percent(best, ["AP"])["AP"], "mode": best["mode"], "run": run})
    return pd.DataFrame(rows)


def table2(results: pd.DataFrame) -> pd.DataFrame:
    """Table 2: conv-head depth K with and without non-local blocks; ΔAP against K = 0 (the FPN baseline).

    The parameter column is filled when the sweep table carries the conv-head's size (``param`` or ``params_M``).
    """
    rows = []
    for run, part in _grid(results, "table2").groupby("run", sort=False):
        best = pick_mode(part)
        param = next((best[c] for c in ("param", "params_M", "weights_M") if c in best and pd.notna(best[c])), "-")
        non_local = str(best["non_local"]).strip().lower() in ("true", "1", "1.0")
        rows.append({"NL": "✓" if non_local else "", "K": int(best["K"]), "param": param,
                     **_percent(best, TABLE_METRICS), "mode": best["mode"], "run": run})
    table = pd.DataFrame(rows)
    if len(table):
        base = table.loc[table["K"] == 0, "AP"]
        table.insert(table.columns.get_loc("AP") + 1, "ΔAP",
                     (table["AP"] - base.iloc[0]).round(1) if len(base) else np.nan)
        table.loc[table["K"] == 0, "ΔAP"] = np.nan
    return table


def table3(results: pd.DataFrame) -> pd.DataFrame:
    """Table 3: the fusion rules of one Double-Head-Ext model (no fusion, max, average, complementary)."""
    part = _grid(results, "table3")
    rows = []
    for mode, name in TABLE3_MODES.items():
        hit = part[part["mode"] == mode]
        if len(hit):
            rows.append({"fusion method": name, **_percent(hit.iloc[0], TABLE_METRICS), "mode": mode})
    return pd.DataFrame(rows)


def table5(evals: pd.DataFrame, preferred_modes: dict[str, str] | None = None) -> pd.DataFrame:
    """Table 5 for any evaluated models: one row per model, its preferred (else best-AP) mode, all six metrics.

    ``evals``: eval.csv rows of several models (``variant`` optional, for the method name).
    """
    rows = []
    for model, part in evals.groupby("model", sort=False):
        best = pick_mode(part, (preferred_modes or {}).get(model))
        variant = best["variant"] if "variant" in best and pd.notna(best["variant"]) else None
        rows.append({"method": variant_label(variant, str(model)), "model": model, "mode": best["mode"],
                     **_percent(best, METRICS), "_order": list(VARIANTS).index(variant)
                     if variant in VARIANTS else len(VARIANTS)})
    if not rows:
        return pd.DataFrame(columns=["method", "model", "mode", *METRICS])
    table = pd.DataFrame(rows).sort_values(["_order", "model"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub Markdown table; floats with one decimal (ΔAP signed), missing values as '-'."""
    def cell(column: str, value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        if isinstance(value, (float, np.floating)):
            return f"{value:+.1f}" if column.startswith("Δ") else f"{value:.1f}"
        return str(value)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(c, v) for c, v in zip(table.columns, row)) + " |"
            for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


# ------------------------------------------------------------------------------------------------------ Fig. 8
def fig8_grid(results: pd.DataFrame, mode: str) -> pd.DataFrame:
    """AP ×100 of one mode as a λ_conv (rows, 1.0 on top) × λ_fc (columns, ascending) grid; NaN where absent."""
    part = _grid(results, "fig8")
    lam_fc = sorted(part["lambda_fc"].astype(float).unique())
    lam_conv = sorted(part["lambda_conv"].astype(float).unique(), reverse=True)
    hit = part[part["mode"] == mode]
    grid = hit.pivot_table(index="lambda_conv", columns="lambda_fc", values="AP", aggfunc="first")
    return (100 * grid).reindex(index=lam_conv, columns=lam_fc)


def _outline(ax, i: int, j: int, color: str) -> None:
    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=color, linewidth=2.2, zorder=4,
                           clip_on=False))


def plot_fig8(results: pd.DataFrame, modes: dict[str, str] | None = None, fig: Figure | None = None) -> Figure:
    """Fig. 8: four AP heat maps over (λ_fc, λ_conv), one per inference mode, on one shared colour scale.

    Cells whose mode does not exist for that pair (no conv classifier at λ_conv = 1, no fc regressor at λ_fc = 1)
    are grey and read "n/a". The best cell of (d) has a blue box, vanilla Double-Head (1, 1) in (c) a green box.
    """
    modes = modes or FIG8_MODES
    grids = {m: fig8_grid(results, m) for m in modes}
    values = np.concatenate([g.to_numpy(dtype=float).ravel() for g in grids.values()])
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    with paper_style():
        fig, axes = new_figure(1, len(modes), (3.25 * len(modes) + 0.8, 3.7), fig)
        mappable = None
        for ax, (mode, title) in zip(axes[0], modes.items()):
            grid = grids[mode]
            data = grid.to_numpy(dtype=float)
            ax.set_facecolor(MISSING_COLOR)
            mappable = ax.imshow(np.ma.masked_invalid(data), cmap=HEATMAP_CMAP, vmin=vmin, vmax=vmax,
                                 interpolation="nearest")
            mid = (vmin + vmax) / 2
            for i in range(data.shape[0]):
                for j in range(data.shape[1]):
                    v = data[i, j]
                    text, color = ("n/a", "#555555") if not np.isfinite(v) else (
                        f"{v:.1f}", "white" if v > mid else "black")
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
            ax.set_xticks(range(data.shape[1]), [f"{v:.1f}" for v in grid.columns])
            ax.set_yticks(range(data.shape[0]), [f"{v:.1f}" for v in grid.index])
            ax.set_xlabel(r"$\lambda^{fc}$")
            ax.set_ylabel(r"$\lambda^{conv}$")
            ax.grid(False)
            ax.set_title(title)
            if mode == EXT_MODE and np.isfinite(data).any():
                i, j = np.unravel_index(np.nanargmax(data), data.shape)
                _outline(ax, int(i), int(j), BEST_COLOR)
            if mode == VANILLA_MODE and 1.0 in grid.index and 1.0 in grid.columns:
                i, j = list(grid.index).index(1.0), list(grid.columns).index(1.0)
                if np.isfinite(data[i, j]):
                    _outline(ax, i, j, VANILLA_COLOR)
        fig.colorbar(mappable, ax=[ax for ax in axes[0]], shrink=0.8, label="AP")
    return fig
