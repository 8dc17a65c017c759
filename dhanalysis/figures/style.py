"""One look for every figure: seaborn's paper theme, fixed colours per head and per model, labels, saving.

Colours are fixed so that a reader can compare figures side by side: the fc-head is always blue and the conv-head
always orange, in every figure; each model variant has its own colour (Single-FC and Single-Conv share their head's
colour, since each is "the" fc-head or conv-head of the analysis). When a figure varies both the head and the model
(Fig. A.3), the colour follows the head and the line style the model.
"""

from __future__ import annotations

import contextlib
import io
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure, FigureBase

from dhanalysis.vocab import DETECTIONS, PREDEFINED, RPN_PROPOSALS, VARIANTS

HEAD_LABELS = {"fc": "fc-head", "conv": "conv-head"}
HEAD_COLORS = {"fc": "#0173B2", "conv": "#DE8F05"}

# keyed by dhanalysis.vocab.VARIANTS names; a variant missing here is drawn grey (OTHER_COLOR)
VARIANT_COLORS = {
    "single-fc": HEAD_COLORS["fc"],
    "single-conv": HEAD_COLORS["conv"],
    "double-fc": "#029E73",
    "double-conv": "#CC78BC",
    "double-head": "#D55E00",
    "double-head-reverse": "#949494",
    "double-head-ext": "#CA9161",
}
VARIANT_LINESTYLES = {"single-fc": "-", "single-conv": "-", "double-fc": "--", "double-conv": "--",
                      "double-head": "-.", "double-head-reverse": ":", "double-head-ext": "--"}
VARIANT_MARKERS = {"single-fc": "o", "single-conv": "s", "double-fc": "^", "double-conv": "v", "double-head": "D",
                   "double-head-reverse": "x", "double-head-ext": "P"}
OTHER_COLOR = "#555555"  # a model whose variant is unknown
MISSING_COLOR = "#d9d9d9"  # cells of a heat map whose mode does not exist (Fig. 8)
HEATMAP_CMAP = "YlGnBu"
CORRELATION_CMAP = "viridis"

PROPOSAL_SET_LABELS = {PREDEFINED: "predefined", RPN_PROPOSALS: "RPN", DETECTIONS: "NMS"}

SCORE_LABEL = "classification score"
REG_IOU_LABEL = "IoU of regressed box"
PROPOSAL_IOU_LABEL = "proposal IoU"

RC = {
    "figure.dpi": 100,
    "savefig.dpi": 200,
    # no "tight" bounding box: constrained layout already fits titles, outside legends and colour bars, and a
    # tight box would cost a second draw per file
    "pdf.fonttype": 42,  # embed TrueType so the text stays selectable and editable
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "legend.framealpha": 0.85,
}


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Seaborn's white-grid paper theme plus `RC`, restored on exit so importing us changes nobody's defaults."""
    with plt.rc_context():
        sns.set_theme(context="paper", style="whitegrid", palette="colorblind", rc=RC)
        yield


def new_figure(nrows: int, ncols: int, figsize: tuple[float, float], fig: Figure | None = None,
               **subplot_kw) -> tuple[Figure, list]:
    """A figure (or the caller's, cleared) with an ``nrows × ncols`` grid of axes, returned as a 2-D list."""
    if fig is None:
        fig = plt.figure(figsize=figsize, layout="constrained")
    else:
        fig.clear()
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, [list(row) for row in axes]


CAVEAT_COLOR = "#B00020"  # a red that reads as "not the paper's setting" on screen and in print


def draw_caveat(fig: FigureBase, caveat: str) -> None:
    """``caveat`` as the figure's title, in red and wrapped to the figure's width."""
    width = max(40, int(fig.bbox.width / fig.dpi * 13))  # characters per line at 9 pt, inches from a (sub)figure
    # never break inside a model name ("synth-double-head-ext")
    fig.suptitle(textwrap.fill(caveat, width, break_on_hyphens=False), color=CAVEAT_COLOR, fontsize=9)


def caveat_figure(nrows: int, ncols: int, figsize: tuple[float, float], fig: Figure | None = None,
                  caveat: str | None = None, **subplot_kw) -> tuple[Figure, FigureBase, list]:
    """`new_figure` with ``caveat`` (how the figure departs from the paper, e.g. a substitute model) as its title, in
    red and wrapped to its width, so it cannot be missed the way a legend title can.

    Returns (figure, panel, axes); figure legends and colour bars go on ``panel``. With a caveat the panels sit in a
    sub-figure under it, because constrained layout puts a suptitle and an "outside upper" legend at the same height.
    """
    if not caveat:
        fig, axes = new_figure(nrows, ncols, figsize, fig, **subplot_kw)
        return fig, fig, axes
    if fig is None:
        fig = plt.figure(figsize=figsize, layout="constrained")
    else:
        fig.clear()
    draw_caveat(fig, caveat)
    panel = fig.subfigures(1, 1)
    _, axes = new_figure(nrows, ncols, figsize, panel, **subplot_kw)
    return fig, panel, axes

def variant_label(variant: str | None, fallback: str = "") -> str:
    """The paper's name of a variant ("Double-Head-Ext"), else ``fallback`` (e.g. the model's folder name)."""
    known = VARIANTS.get(variant or "")
    return known.label if known is not None else fallback or str(variant)


def variant_color(variant: str | None) -> str:
    """The variant's fixed colour (grey for an unknown variant)."""
    return VARIANT_COLORS.get(variant or "", OTHER_COLOR)


def head_label(head: str) -> str:
    """"fc" -> "fc-head", the paper's wording."""
    return HEAD_LABELS.get(head, f"{head}-head")


def head_color(head: str) -> str:
    """The head type's fixed colour, the same in every figure."""
    return HEAD_COLORS.get(head, OTHER_COLOR)


def save_figure(fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<fmt>`` for every format; returns the paths written.

    Each file is rendered in memory and written atomically, so a kill or a failed render never leaves half a figure
    where the previous one was; a folder that cannot be made is a one-line `DHError` (the commands check theirs up
    front, this catches the library's other callers).
    """
    from dhanalysis.errors import DHError
    from dhanalysis.folders import atomic_write_bytes

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        raise DHError(f"cannot write figures to {out_dir} ({exc.strerror}); choose another output folder") from None
    paths = []
    with plt.rc_context(RC):
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt)
            atomic_write_bytes(path, buffer.getvalue())
            paths.append(path)
    return paths
