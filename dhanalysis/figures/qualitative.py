"""Figs. A.4 and A.5: ground truth, conv-head alone, fc-head alone and Double-Head-Ext on the images where the heads
disagree (tables from `dhanalysis.probes.qualitative`). Green: a correct detection; red: a duplicate of an object
already found; orange: any other confident detection. Scores are printed beside each box."""

from __future__ import annotations

import matplotlib.image as mpimg
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from dhanalysis.figures.style import new_figure, paper_style, variant_label
from dhanalysis.vocab import INFERENCE_MODES, QUALITATIVE_MODES

COLUMNS = (("ground-truth", "ground truth"), *((m, INFERENCE_MODES[m].label) for m in QUALITATIVE_MODES[:-1]),
           (QUALITATIVE_MODES[-1], variant_label("double-head-ext")))
COLOURS = {"found": "#2CA02C", "duplicate": "#D62728", "other": "#FF7F0E"}
CAPTIONS = {"A.4": "Fig. A.4: the fc-head classifies better (objects only the fc-head detects)",
            "A.5": "Fig. A.5: the conv-head localises better (duplicates only the fc-head keeps)"}


def plot_qualitative(detections: pd.DataFrame, images: pd.DataFrame, case: str, fig: Figure | None = None) -> Figure:
    """One row per picked image of ``case`` ("A.4" or "A.5"), one column per reading of the model."""
    picked = images[images["case"] == case].sort_values("rank")
    with paper_style():
        fig, axes = new_figure(len(picked), len(COLUMNS), (2.6 * len(COLUMNS), 2.7 * len(picked) + 0.4), fig)
        for i, row in enumerate(picked.itertuples()):
            pixels = mpimg.imread(row.file)
            dets = detections[(detections["image_id"] == row.image_id) & (detections["case"] == case)]
            for j, (mode, title) in enumerate(COLUMNS):
                ax = axes[i][j]
                ax.imshow(pixels)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title)
                for d in dets[dets["mode"] == mode].itertuples():
                    colour = "#1F77B4" if mode == "ground-truth" else COLOURS.get(d.status, "#FF7F0E")
                    ax.add_patch(Rectangle((d.x1, d.y1), d.x2 - d.x1, d.y2 - d.y1, fill=False, lw=1.4,
                                           edgecolor=colour))
                    label = d.category if mode == "ground-truth" else f"{d.category} {d.score:.2f}"
                    ax.text(d.x1, d.y1 - 2, label, color=colour, fontsize=6, va="bottom",
                            bbox={"facecolor": "white", "alpha": 0.6, "pad": 0.5, "lw": 0})
            axes[i][0].set_ylabel(f"image {row.image_id}")
        fig.suptitle(CAPTIONS.get(case, case), fontsize=9)
    return fig
