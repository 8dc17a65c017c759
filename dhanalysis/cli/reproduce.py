"""The CPU-scale reproduction of the paper on the synthetic dataset: trained detectors, every analysis, the claims.

  dhanalysis reproduce                          # the whole study, resumable
  dhanalysis reproduce --ship docs/reproduction # ... then ship its small results there and regenerate README.md's
                                                #     findings section from them
  dhanalysis reproduce --tiny                   # a minutes-long version with tiny models (what the tests run)

The study itself is `dhanalysis.study` (plan, runner, claims, findings, shipping); this command parses flags and
prints. Protocol (every result says which): per trunk, one detector trained end to end — the paper's protocol — whose
backbone, FPN and RPN become the frozen trunk every head variant trains on from scratch, with several seeds;
everything is measured on the held-out test split.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=".", help="where data/, checkpoints/, results/ and figures/ go")
    parser.add_argument("--tiny", action="store_true", help="tiny data and models: the whole pipeline in minutes")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--ship", metavar="DIR", help="afterwards, copy the small results (tables, figures, findings) "
                        "to DIR, e.g. docs/reproduction, and regenerate the findings section of --readme")
    parser.add_argument("--readme", default="README.md", help="the README whose findings section --ship regenerates "
                        "(default: %(default)s; 'none' to leave it)")
    parser.add_argument("--replicates", type=int, help="bootstrap replicates of the findings (default 1000)")


def run(args: argparse.Namespace) -> int:
    from dhanalysis.study import FULL, TINY, run_study, ship

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    plan = TINY if args.tiny else FULL
    tag = "reproduction-tiny" if args.tiny else "reproduction"
    outcome = run_study(plan, Path(args.workdir), tag, args.device, args.replicates)
    print_summary(outcome)
    if args.ship:
        readme = None if args.readme == "none" else Path(args.readme)
        ship(outcome, Path(args.ship), readme if readme is not None and readme.is_file() else None)
    return 0


def print_summary(outcome) -> None:
    """Where everything went, the quality checks and the findings, as lines."""
    checks, frame = outcome.checks, outcome.findings
    print(f"\nstudy finished ({outcome.seconds / 60:.1f} min in this call)")
    print(f"  results: {outcome.results}\n  figures: {outcome.figures}\n  findings: {outcome.results / 'findings.md'}")
    for name, v in checks.get("trunks", {}).items():
        print(f"  trunk {name} (end to end): AP {v['AP']:.3f}, AP50 {v['AP50']:.3f}")
    for rep, v in checks.get("replicates", {}).items():
        if "single_fc" in v:
            print(f"  {rep}: Single-FC AP {v['single_fc']['AP']:.3f}, AP50 {v['single_fc']['AP50']:.3f}")
        for run, ap50 in v.get("default_mode_AP50", {}).items():
            print(f"    {run:24s} AP50 {ap50:.3f}")
        for key, s in v.get("gt_class_score", {}).items():
            hi, lo = s["iou>=0.9"], s["iou<0.3"]
            print(f"    {key:24s} mean score: IoU >= 0.9 {hi if hi is None else round(hi, 3)}, IoU < 0.3 "
                  f"{lo if lo is None else round(lo, 3)}")
    from dhanalysis.study.checks import target_rows

    print("\nquality targets (worst replicate):")
    for r in target_rows(checks):
        worst = "not measured" if r["worst"] is None else f"{r['worst']:.3f} ({r['where']})"
        print(f"  {r['what']} {r['op']} {r['bound']:g}: {worst}" + ("" if r["met"] is None else
                                                                   " met" if r["met"] else " NOT MET"))
    print("\nfindings (verdict / Holm):")
    for r in frame[frame["role"] != "component"].itertuples():
        ours = f"{r.ours:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if r.ci_low == r.ci_low else f"{r.ours}"
        print(f"  {r.claim:44s} {r.trunk:12s} {ours:34s} {r.verdict} / {r.verdict_holm}")
