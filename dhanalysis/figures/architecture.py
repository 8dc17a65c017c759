"""Fig. 5: the conv-head's residual block (a), bottleneck (b) and non-local block (c) as block diagrams.

Drawn from the ``architecture.csv`` table (`dhanalysis.probes.architecture.describe_conv_head`), one row per conv
layer: every channel count and weight count in the figure comes from that table, so the drawing shows the widths
of the model that was analysed, not the paper's numbers typed in.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from dhanalysis.figures.style import HEAD_COLORS, new_figure, paper_style

PANELS = {"residual": "(a) residual block", "bottleneck": "(b) bottleneck block", "non_local": "(c) non-local block"}
LAYER_LABELS = {"theta": "θ", "phi": "φ", "g": "g", "out": "out", "shortcut": "shortcut"}
BOX_FILL = "#fde9cf"  # a light tint of the conv-head colour
ARROW = dict(arrowstyle="-|>", color="#333333", linewidth=1.0, shrinkA=0, shrinkB=0)
BOX_W, BOX_H = 0.40, 0.085


def _layer_text(row: pd.Series) -> str:
    kernel = str(row["kernel"]).replace("x", "×")
    layer = row["layer"] if "layer" in row.index else row.name
    name = LAYER_LABELS.get(layer, layer)
    return f"{name}: {kernel}, {int(row['out_channels'])}\n{int(row['weights']):,} weights"


def _box(ax: Axes, xy: tuple[float, float], text: str, width: float = BOX_W) -> None:
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - width / 2, y - BOX_H / 2), width, BOX_H, boxstyle="round,pad=0.008",
                                facecolor=BOX_FILL, edgecolor=HEAD_COLORS["conv"], linewidth=1.1))
    ax.text(x, y, text, ha="center", va="center", fontsize=7)


NODE_PT = 7.5  # radius of a +/× node in points: arrows stop this short of a node's centre


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], from_node: bool = False,
           to_node: bool = False) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops={**ARROW, "shrinkA": NODE_PT if from_node else 0, "shrinkB": NODE_PT if to_node else 0})


def _line(ax: Axes, *points: tuple[float, float]) -> None:
    xs, ys = zip(*points)
    ax.plot(xs, ys, color="#333333", linewidth=1.0)


def _node(ax: Axes, xy: tuple[float, float], symbol: str) -> None:
    """A round sum / product node (a marker, so it stays round whatever the panel's aspect)."""
    ax.plot(*xy, marker="o", markersize=2 * NODE_PT, markerfacecolor="white", markeredgecolor="#333333",
            markeredgewidth=1.0, zorder=3)
    ax.text(xy[0], xy[1], symbol, ha="center", va="center", fontsize=9, zorder=4)


def _io(ax: Axes, xy: tuple[float, float], text: str) -> None:
    ax.text(xy[0], xy[1], text, ha="center", va="center", fontsize=8, fontweight="bold")


def _total(ax: Axes, rows: pd.DataFrame) -> None:
    first = rows.iloc[0]
    ax.text(0.5, 0.005, f"block: {int(first['block_weights']):,} weights = {first['block_M']}M",
            ha="center", va="bottom", fontsize=8)


def _residual(ax: Axes, rows: pd.DataFrame) -> None:
    """Fig. 5(a): 3×3 → 1×1 on the main path, a 1×1 projection on the shortcut, sum, ReLU."""
    r = rows.set_index("layer")
    mx, sx = 0.33, 0.78
    _io(ax, (mx, 0.95), f"input: {int(r.loc['conv1', 'in_channels'])} ch")
    _box(ax, (mx, 0.76), _layer_text(r.loc["conv1"]))
    _box(ax, (mx, 0.54), _layer_text(r.loc["conv2"]))
    _box(ax, (sx, 0.65), _layer_text(r.loc["shortcut"]), width=0.38)
    _node(ax, (mx, 0.34), "+")
    _arrow(ax, (mx, 0.925), (mx, 0.76 + BOX_H / 2))
    _arrow(ax, (mx, 0.76 - BOX_H / 2), (mx, 0.54 + BOX_H / 2))
    ax.text(mx + 0.02, 0.65, "BN, ReLU", fontsize=6.5, va="center")
    _arrow(ax, (mx, 0.54 - BOX_H / 2), (mx, 0.34), to_node=True)
    _line(ax, (mx, 0.90), (sx, 0.90))
    _arrow(ax, (sx, 0.90), (sx, 0.65 + BOX_H / 2))
    _line(ax, (sx, 0.65 - BOX_H / 2), (sx, 0.34))
    _arrow(ax, (sx, 0.34), (mx, 0.34), to_node=True)
    _arrow(ax, (mx, 0.34), (mx, 0.16), from_node=True)
    ax.text(mx + 0.02, 0.24, "ReLU", fontsize=6.5, va="center")
    _io(ax, (mx, 0.12), f"output: {int(r.loc['conv2', 'out_channels'])} ch")


def _bottleneck(ax: Axes, rows: pd.DataFrame) -> None:
    """Fig. 5(b): 1×1 reduce → 3×3 → 1×1 expand, identity shortcut, sum, ReLU."""
    r = rows.set_index("layer")
    mx, sx = 0.38, 0.82
    _io(ax, (mx, 0.95), f"input: {int(r.loc['conv1', 'in_channels'])} ch")
    ys = {"conv1": 0.79, "conv2": 0.63, "conv3": 0.47}
    _arrow(ax, (mx, 0.925), (mx, ys["conv1"] + BOX_H / 2))
    for layer, y in ys.items():
        _box(ax, (mx, y), _layer_text(r.loc[layer]))
    _arrow(ax, (mx, ys["conv1"] - BOX_H / 2), (mx, ys["conv2"] + BOX_H / 2))
    _arrow(ax, (mx, ys["conv2"] - BOX_H / 2), (mx, ys["conv3"] + BOX_H / 2))
    _node(ax, (mx, 0.32), "+")
    _arrow(ax, (mx, ys["conv3"] - BOX_H / 2), (mx, 0.32), to_node=True)
    _line(ax, (mx, 0.90), (sx, 0.90), (sx, 0.32))
    _arrow(ax, (sx, 0.32), (mx, 0.32), to_node=True)
    ax.text(sx + 0.015, 0.62, "identity", rotation=90, fontsize=6.5, va="center")
    _arrow(ax, (mx, 0.32), (mx, 0.16), from_node=True)
    ax.text(mx + 0.02, 0.23, "ReLU", fontsize=6.5, va="center")
    _io(ax, (mx, 0.12), f"output: {int(r.loc['conv3', 'out_channels'])} ch")


def _non_local(ax: Axes, rows: pd.DataFrame) -> None:
    """Fig. 5(c): θ, φ, g 1×1 embeddings, affinity θᵀφ, weighted sum of g, 1×1 back to the input width, plus
    the input."""
    r = rows.set_index("layer")
    xs = {"theta": 0.215, "phi": 0.50, "g": 0.785}
    top, emb = 0.95, 0.78
    _io(ax, (0.5, top), f"input: {int(r.loc['theta', 'in_channels'])} ch")
    _line(ax, (xs["theta"], 0.90), (xs["g"], 0.90))
    _line(ax, (0.5, 0.925), (0.5, 0.90))
    for layer, x in xs.items():
        _box(ax, (x, emb), _layer_text(r.loc[layer]), width=0.265)
        _arrow(ax, (x, 0.90), (x, emb + BOX_H / 2))
    groups = r.loc["theta", "nl_groups"]
    groups_text = f", {int(groups)} groups" if pd.notna(groups) and int(groups) > 1 else ""
    mode = r.loc["theta", "nl_mode"] if "nl_mode" in r.columns else "dot"
    affinity = "softmax(θᵀφ)" if mode == "gaussian" else "θᵀφ / N"
    aff, mix = (0.36, 0.62), (0.5, 0.48)
    _node(ax, aff, "×")
    ax.text(aff[0] + 0.04, aff[1], f"{affinity}{groups_text}", fontsize=6.5, va="center")
    _arrow(ax, (xs["theta"], emb - BOX_H / 2), aff, to_node=True)
    _arrow(ax, (xs["phi"], emb - BOX_H / 2), aff, to_node=True)
    _node(ax, mix, "×")
    _arrow(ax, aff, mix, from_node=True, to_node=True)
    _line(ax, (xs["g"], emb - BOX_H / 2), (xs["g"], mix[1]))
    _arrow(ax, (xs["g"], mix[1]), mix, to_node=True)
    _box(ax, (0.5, 0.34), _layer_text(r.loc["out"]) + ", BN", width=0.42)
    _arrow(ax, mix, (0.5, 0.34 + BOX_H / 2), from_node=True)
    _node(ax, (0.5, 0.20), "+")
    _arrow(ax, (0.5, 0.34 - BOX_H / 2), (0.5, 0.20), to_node=True)
    _line(ax, (0.04, 0.90), (0.04, 0.20))
    _line(ax, (0.04, 0.90), (xs["theta"], 0.90))
    _arrow(ax, (0.04, 0.20), (0.5, 0.20), to_node=True)
    ax.text(0.025, 0.55, "identity", rotation=90, fontsize=6.5, va="center", ha="right")
    _arrow(ax, (0.5, 0.20), (0.5, 0.09), from_node=True)
    _io(ax, (0.5, 0.065), f"output: {int(r.loc['out', 'out_channels'])} ch")


DRAW = {"residual": _residual, "bottleneck": _bottleneck, "non_local": _non_local}


def plot_fig5(architecture: pd.DataFrame, fig: Figure | None = None) -> Figure:
    """Fig. 5: one panel per block kind in ``architecture`` (residual, bottleneck, non-local), channels and weight
    counts taken from the table; a block kind the head does not have gets a panel saying so."""
    with paper_style():
        fig, axes = new_figure(1, len(PANELS), (11.5, 5.0), fig)
        for ax, (kind, title) in zip(axes[0], PANELS.items()):
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.axis("off")
            rows = architecture[architecture["block"] == kind]
            ax.set_title(title)
            if rows.empty:
                ax.text(0.5, 0.5, "this conv-head has no such block", ha="center", va="center", fontsize=8)
                continue
            DRAW[kind](ax, rows)
            _total(ax, rows)
        source = str(architecture["source"].iloc[0]) if "source" in architecture.columns and len(architecture) else ""
        if source and source not in ("model", "conv-head", "branch"):
            fig.supxlabel(f"drawn from {source}", fontsize=7, style="italic")
    return fig
