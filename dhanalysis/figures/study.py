"""The reproduction's own figure: the dose-response of the §3.2 differences against recognition strength.

Reads ``dose_response.csv`` (`dhanalysis.study.claims.dose_response`): per fc width, the Single-FC − Single-Conv AP
gap and the fc − conv difference of each alignment measure, each with its 95% interval. One panel per measure; each
point is one fc width at (AP gap, difference), with both intervals as error bars. The paper's regime is the upper
right quadrant (the fc-head the better recogniser, and its scores the better aligned); a difference that moves with
the gap is a verdict that follows recognition strength.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from dhanalysis.errors import DHError
from dhanalysis.figures.style import new_figure, paper_style
from dhanalysis.vocab import ALIGNMENT_MEASURE_LABELS

DOSE_WHERE = {"windows": "sliding windows", "rpn": "RPN proposals"}


def dose_response(table: pd.DataFrame, where: str = "windows") -> Figure:
    """One panel per alignment measure: difference (fc − conv, on ``where``'s boxes) against the AP gap, per fc
    width, with both 95% intervals."""
    need = {"role", "fc_dim", "quantity", "alignment", "ours", "ci_low", "ci_high"}
    if not need <= set(table.columns):
        raise DHError(f"the dose-response table lacks {', '.join(sorted(need - set(table.columns)))}; rerun the study's "
                      "findings (dhanalysis reproduce)")
    gap = table[table["quantity"] == "ap_gap"].set_index("role")
    part = table[(table["quantity"] == where) & table["role"].isin(gap.index)]
    measures = list(dict.fromkeys(part["alignment"]))
    if gap.empty or not measures:
        raise DHError("the dose-response table has no AP gap or no alignment difference to draw")
    with paper_style():
        fig, axes = new_figure(1, len(measures), (4.2 * len(measures), 3.6))
        for ax, measure in zip(axes[0], measures):
            rows = part[part["alignment"] == measure].sort_values("fc_dim")
            x = gap.loc[rows["role"]]
            ax.errorbar(x["ours"], rows["ours"],
                        xerr=[x["ours"] - x["ci_low"], x["ci_high"] - x["ours"]],
                        yerr=[rows["ours"] - rows["ci_low"], rows["ci_high"] - rows["ours"]],
                        fmt="o-", capsize=3, color="#333333")
            for (_, r), gx in zip(rows.iterrows(), x["ours"]):
                ax.annotate(f"fc {int(r['fc_dim'])}", (gx, r["ours"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=8)
            ax.axhline(0, color="#999999", lw=0.8)
            ax.axvline(0, color="#999999", lw=0.8)
            ax.set_xlabel("AP gap, Single-FC − Single-Conv (points)")
            ax.set_ylabel(f"fc − conv, {DOSE_WHERE.get(where, where)}")
            ax.set_title(ALIGNMENT_MEASURE_LABELS.get(measure, measure))
        fig.suptitle("§3.2 against recognition strength (one point per fc width, 95% intervals)")
    return fig
