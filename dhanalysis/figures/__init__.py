"""The paper's figures and tables, drawn from result tables only (no torch, no model).

One function per figure (``plot_fig2`` … ``plot_figA3``) taking tidy DataFrames, the tables of §5 as DataFrames
written to Markdown and CSV, a shared style, and `render.render_all`, which reads a results folder and renders
everything it allows.
"""

from dhanalysis.figures.ablation import plot_fig8, table1, table2, table3, table5
from dhanalysis.figures.architecture import plot_fig5
from dhanalysis.figures.correlation import plot_fig3, plot_fig4, plot_figA2
from dhanalysis.figures.sliding_window import plot_fig2, plot_fig6, plot_fig7, plot_figA1, plot_figA3

__all__ = ["plot_fig2", "plot_fig3", "plot_fig4", "plot_fig5", "plot_fig6", "plot_fig7", "plot_fig8", "plot_figA1",
           "plot_figA2", "plot_figA3", "table1", "table2", "table3", "table5"]
