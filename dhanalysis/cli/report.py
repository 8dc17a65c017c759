"""One self-contained page of a results folder: report.html beside its tables (no model is run).

  dhanalysis report --results results/yolo                  # a `dhanalysis detections` folder
  dhanalysis report --results results/synth-single-fc       # a model folder of sliding-window / pcc / eval
  dhanalysis report --results results/ --out figures/all.html

The page holds the headline numbers with their 95% intervals, every figure the folder allows (embedded, so the file
can be mailed or opened offline), the folder's small tables, each measure's definition, and the protocol as the run
recorded it (IoU thresholds, which detections: before or after NMS, maximum detections, the bootstrap's replicates).
`dhanalysis detections` and `dhanalysis compare` write it themselves. A page another program wrote is replaced only
with --overwrite.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", required=True, metavar="FOLDER",
                        help="a results folder (a model folder, a detections or compare folder, or a folder of them)")
    parser.add_argument("--out", metavar="PATH", help="where the page goes (default FOLDER/report.html)")
    parser.add_argument("--overwrite", action="store_true", help="replace a file at --out that this command did not "
                                                                 "write")


def run(args: argparse.Namespace) -> int:
    path = write_page(Path(args.results), Path(args.out) if args.out else None, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def write_page(folder: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """`dhanalysis.figures.report.write_report`, drawn without a window (files only): the page's path."""
    import matplotlib

    matplotlib.use("Agg")

    from dhanalysis.figures.report import write_report

    return write_report(folder, out, overwrite=overwrite)


def page_line(folder: str | Path, overwrite: bool) -> str:
    """What `detections` and `compare` print of the page they write beside their tables: its path, or why it was
    left alone (a report.html this command did not write stays unless --overwrite)."""
    from dhanalysis.errors import DHError

    try:
        return str(write_page(folder, overwrite=overwrite))
    except DHError as exc:
        return f"not written: {exc}"
