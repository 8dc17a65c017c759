"""Render the paper's figures and tables from result files alone (no model is run).

  dhanalysis figures --results results/ --out figures/
  dhanalysis figures --results results/ --out figures/ --models synth-single-fc,synth-single-conv --only fig2,fig3
  dhanalysis figures --results results/ --fc-head synth-double-head-ext:fc --conv-head synth-double-head-ext:conv

Reads every model folder under --results (one holding a file listed at the end; the variant comes from config.json's
model.variant, else the folder name) and the sweeps' results.csv (--sweeps, default RESULTS/sweeps). Writes, as far
as the results allow: fig2, fig3, fig4, fig5, fig6, fig7, fig8, figA1, figA2, figA3 (.png and .pdf) and table1,
table2, table3, table5 (.md and .csv), and from a `dhanalysis detections` folder det-alignment, det-analyze, det-tide, det-reliability,
det-confusion, det-measures, from a `dhanalysis compare` folder det-compare.
Each figure or table whose inputs are missing is skipped with one line naming the results it needs; when none
can be drawn (an empty or foreign --results folder, or --only items without their inputs) the command refuses
with one line instead, before writing anything. --formats are checked against what matplotlib writes first.
By default Figs. 2-4, A.1 and A.2 compare Single-FC's fc-head with Single-Conv's conv-head (the paper's setting),
else the two heads of one Double-Head(-Ext) model; --fc-head / --conv-head MODEL[:HEAD] choose others. A figure drawn
from any head but the paper's says so in a red title and prints one "WARNING: Fig. N: Substitute: ..." line.
"""

from __future__ import annotations

import argparse
import textwrap

from dhanalysis.results import MODEL_MARKERS

# the files that mark a model folder, from the results registry (a table's Parquet twin goes with its CSV)
__doc__ += "\n" + textwrap.fill(
    "A model folder holds any of: " + ", ".join(f for f in MODEL_MARKERS if not f.endswith(".parquet")) + ".",
    width=116) + "\n"


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

    from dhanalysis.flags import flag_error
    from dhanalysis.errors import DHError
    from dhanalysis.figures.render import FIGURES, TABLE_CAPTIONS, Results, check_formats, render_all
    from dhanalysis.folders import check_writable_folder

    check_writable_folder(args.out)
    if not _split(args.formats):
        raise DHError(f"--formats {args.formats!r} names no format; give one or more, e.g. png,pdf")
    formats = flag_error("--formats", check_formats, _split(args.formats))  # before anything is read or written
    only = _split(args.only)
    unknown = [k for k in only if k not in FIGURES and k not in TABLE_CAPTIONS]
    if unknown:
        raise DHError(f"--only: unknown {', '.join(unknown)}; choose from {', '.join([*FIGURES, *TABLE_CAPTIONS])}")
    root = Path(args.results)
    _check_folder("--results", root)
    if args.sweeps:
        _check_folder("--sweeps", Path(args.sweeps))
    res = Results(root, _split(args.models) or None, args.sweeps, _head_ref(args.fc_head, "fc"),
                  _head_ref(args.conv_head, "conv"))
    _check_results(args, res)
    for which, ref in (("--fc-head", res.overrides["fc"]), ("--conv-head", res.overrides["conv"])):
        if ref is not None and ref[0] not in res.models:
            raise DHError(f"{which} {ref[0]}: no such model under {root}; models: {', '.join(res.models) or 'none'}")
    print(f"{len(res.models)} model(s) under {root}: "
          + (", ".join(f"{n} ({m.variant or 'unknown variant'})" for n, m in res.models.items()) or "none"))
    log = _HeldSkips()
    written = render_all(res, args.out, only or None, formats=formats, log=log)
    if not written:
        raise DHError(f"nothing to draw from --results {root}: {log.reason(len(only or [*FIGURES, *TABLE_CAPTIONS]))}")
    print(f"wrote {len(written)} file(s) to {Path(args.out)}")
    return 0


def _check_folder(flag: str, folder) -> None:
    """A folder flag names an existing folder: a missing path and a file are told apart."""
    from dhanalysis.errors import DHError

    if folder.is_file():
        raise DHError(f"{flag} {folder} is a file, not a folder; give the folder that holds the results")
    if not folder.is_dir():
        raise DHError(f"{flag} {folder} does not exist; write results with dhanalysis eval / sliding-window / pcc / "
                      "detections / sweep first, or check the path")


def _check_results(args: argparse.Namespace, res) -> None:
    """Refuse, naming what was looked for, a --results folder that holds no results at all (empty, or holding
    other files), --models that match no model, and --sweeps without a sweep's results.csv."""
    from dhanalysis.errors import DHError
    from dhanalysis.results import MODEL_MARKERS, discover_models
    from dhanalysis.vocab import ARCHITECTURE_CSV, SWEEP_RESULTS_CSV

    root = res.root
    if args.sweeps and res.sweeps is None:
        raise DHError(f"--sweeps {args.sweeps} holds no {SWEEP_RESULTS_CSV} with a 'grid' column (nor does any "
                      "sub-folder); point it at the --out of dhanalysis sweep")
    if args.models and not res.models:
        found = discover_models(root)
        raise DHError(f"--models {args.models}: no such model folder or variant under {root}; models: "
                      f"{', '.join(found) or 'none'}")
    if res.models or res.sweeps is not None or res.architecture is not None:
        return
    looked = (f"no model folder (it or a sub-folder holding one of {', '.join(MODEL_MARKERS)}), no "
              f"{res.sweeps_dir / SWEEP_RESULTS_CSV} and no {root / ARCHITECTURE_CSV}")
    if not any(root.iterdir()):
        raise DHError(f"--results {root} is an empty folder: {looked}; write results with dhanalysis eval / "
                      "sliding-window / pcc / detections / sweep first")
    raise DHError(f"--results {root} is not a results folder: it holds {looked}; point it at the --out of dhanalysis "
                  "eval / sliding-window / pcc / detections / sweep, or at the folder holding those")


class _HeldSkips:
    """render_all's log with its skip lines held back until something is drawn: when nothing can be, the command
    refuses with one line instead of printing a skip line per figure and succeeding."""

    def __init__(self):
        from dhanalysis.figures.render import SKIPPED

        self.marker = SKIPPED
        self.held: list[str] = []
        self.drawing = False

    def __call__(self, line: str) -> None:
        if self.drawing:
            print(line)
        elif self.marker in line:
            self.held.append(line)
        else:  # a figure or table is being written: the skips so far are part of a partial success
            self.drawing = True
            for held in self.held:
                print(held)
            print(line)

    def reason(self, asked: int) -> str:
        """Why nothing was drawn, in one line: the one skip reason, or the first of many."""
        if len(self.held) == 1:
            return self.held[0]
        first = self.held[0] if self.held else "no figure or table was asked for"
        return f"none of the {asked} figures and tables has its inputs (first: {first}); see --help for what each reads"
