"""The reproduction at demo size, on CPU: detectors that learn, the paper's analyses on them, the claims it can check.

  dhanalysis demo            # about a quarter of an hour on two cores
  dhanalysis demo --quick    # tiny data and models, for tests and a first look (a minute)

The same study as `dhanalysis reproduce` (`dhanalysis.study`'s DEMO and QUICK plans), smaller: make data/synth-demo;
pretrain a ResNet-18 on its box crops (the local stand-in for ImageNet weights); train a Single-FC end to end as the
shared trunk; train Single-FC, Single-Conv, Double-FC, Double-Conv (weight 1.0), Double-Head (ω 2.0 / 2.5) and two
runs of Fig. 8's λ grid, Double-Head-Ext (λ_fc, λ_conv) = (0.7, 0.8) and (1, 1), together on the frozen trunk;
evaluate every inference mode on the test split; run the sliding-window, PCC and spatial-correlation analyses;
render every figure and table; check the paper's claims with bootstrap intervals and print them. Every step
resumes: rerun the same command after an interruption.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny data and models, for tests and a first look")
    parser.add_argument("--workdir", default=".", help="where data/, checkpoints/, results/ and figures/ go")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    from dhanalysis.cli.reproduce import check_workdir, print_summary
    from dhanalysis.engine.distributed import resolve_device
    from dhanalysis.study import DEMO, QUICK, run_study

    check_workdir(args.workdir)  # every flag checked before the first step
    resolve_device(args.device)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    plan, tag = (QUICK, "demo-quick") if args.quick else (DEMO, "demo")
    outcome = run_study(plan, Path(args.workdir), tag, args.device)
    print_summary(outcome)
    first = next(iter(outcome.checks.get("replicates", {}).values()), {})
    print_fig2_check(first)
    return 0


def print_fig2_check(checks: dict) -> None:
    """Has the Single-FC classifier learned? Its mean ground-truth-class score on windows that cover the object
    (IoU ≥ 0.9) against windows that mostly miss it (IoU < 0.3), as Fig. 2's top row shows them."""
    scores = checks.get("gt_class_score", {}).get("single-fc/fc")
    if not scores or scores.get("iou>=0.9") is None or scores.get("iou<0.3") is None:
        print("\nFig. 2 check: no sliding-window scores of the Single-FC fc-head")
        return
    hi, lo = scores["iou>=0.9"], scores["iou<0.3"]
    ratio = hi / lo if lo > 0 else float("inf")
    print(f"\nFig. 2 check: Single-FC fc-head mean score {hi:.3f} at IoU >= 0.9 vs {lo:.3f} at IoU < 0.3 "
          f"({ratio:.1f}x)")
