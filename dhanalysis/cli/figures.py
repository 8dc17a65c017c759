"""Render the paper's figures and tables from result files alone (no model is run).

  dhanalysis figures --results results/ --out figures/
  dhanalysis figures --results results/ --out figures/ --models synth-single-fc,synth-single-conv --only fig2,fig3
  dhanalysis figures --results results/ --fc-head synth-double-head-ext:fc --conv-head synth-double-head-ext:conv

Reads every model folder under --results (config.json / summary.json / eval.csv / sliding_window_stats.csv /
pcc.csv / spatial_corr.npz / architecture.csv; the variant comes from config.json's model.variant, else the folder
name) and the sweeps' results.csv (--sweeps, default RESULTS/sweeps). Writes, as far as the results allow:
fig2, fig3, fig4, fig5, fig6, fig7, fig8, figA1, figA2, figA3 (.png and .pdf) and table1, table2, table3, table5
(.md and .csv), and from a `dhanalysis detections` folder det-alignment, det-analyze, det-tide, det-reliability.
Each figure or table whose inputs are missing is skipped with one line naming the results it needs.
By default Figs. 2-4, A.1 and A.2 compare Single-FC's fc-head with Single-Conv's conv-head (the paper's setting),
else the two heads of one Double-Head(-Ext) model; --fc-head / --conv-head MODEL[:HEAD] choose others. A figure drawn
from any head but the paper's says so in a red title and prints one "WARNING: Fig. N: Substitute: ..." line.
"""

from __future__ import annotations

import argparse


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _head_ref(text: str | None, default_head: str) -> tuple[str, str] | None:
    if not text:
        return None
    model, _, head = text.partition(":")
    return model, head or default_head


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results", help="results folder, one sub-folder per model (default "
                                                             "results)")
    parser.add_argument("--out", default="figures", help="output folder (default figures)")
    parser.add_argument("--models", help="comma-separated model folder names or variants to use (default all)")
    parser.add_argument("--sweeps", help="folder of the sweeps' results.csv (default RESULTS/sweeps)")
    parser.add_argument("--only", help="comma-separated figures/tables, e.g. fig2,fig8,table1 (default all)")
    parser.add_argument("--fc-head", metavar="MODEL[:HEAD]", help="the 'fc-head' of Figs. 2-4, A.1, A.2")
    parser.add_argument("--conv-head", metavar="MODEL[:HEAD]", help="the 'conv-head' of Figs. 2-4, A.1, A.2")
    parser.add_argument("--formats", default="png,pdf", help="figure file formats (default png,pdf)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window

    from dhanalysis.errors import DHError
    from dhanalysis.figures.render import FIGURES, TABLE_CAPTIONS, Results, render_all

    root = Path(args.results)
    if not root.is_dir():
        raise DHError(f"--results {root} is not a folder; write results with dhanalysis sliding-window / eval / "
                      "sweep first")
    only = _split(args.only)
    unknown = [k for k in only if k not in FIGURES and k not in TABLE_CAPTIONS]
    if unknown:
        raise DHError(f"--only: unknown {', '.join(unknown)}; choose from {', '.join([*FIGURES, *TABLE_CAPTIONS])}")
    res = Results(root, _split(args.models) or None, args.sweeps, _head_ref(args.fc_head, "fc"),
                  _head_ref(args.conv_head, "conv"))
    for which, ref in (("--fc-head", res.overrides["fc"]), ("--conv-head", res.overrides["conv"])):
        if ref is not None and ref[0] not in res.models:
            raise DHError(f"{which} {ref[0]}: no such model under {root}; models: {', '.join(res.models) or 'none'}")
    print(f"{len(res.models)} model(s) under {root}: "
          + (", ".join(f"{n} ({m.variant or 'unknown variant'})" for n, m in res.models.items()) or "none"))
    written = render_all(res, args.out, only or None, formats=_split(args.formats))
    print(f"wrote {len(written)} file(s) to {Path(args.out)}")
    return 0
