"""The CPU-scale reproduction of the paper on the synthetic dataset: trained detectors, every analysis, the claims.

  dhanalysis reproduce                          # the whole study, resumable
  dhanalysis reproduce --ship docs/reproduction # ... then ship its small results there and regenerate README.md's
                                                #     findings section from them
  dhanalysis reproduce --tiny                   # a minutes-long version with tiny models (what the tests run)
  dhanalysis reproduce --regime                 # the regime pilot on val: each compared head at its schedule and at
                                                #     longer ones, Single-FC at several fc widths against Single-Conv
                                                #     (--ship DIR copies its tables to DIR/regime/)
  dhanalysis reproduce --regime variants        # ... the other Table 1 variants at longer schedules
  dhanalysis reproduce --regime all             # ... every compared run at the longest ones, a schedule's runs
                                                #     trained together (--regime's help lists the schedules)

The study itself is `dhanalysis.study` (plan, runner, claims, findings, shipping); this command parses flags and
prints. Protocol (every result says which): per trunk, one detector trained end to end — the paper's protocol — whose
backbone, FPN and RPN become the frozen trunk every head variant trains on from scratch, with several seeds;
everything is measured on the held-out test split.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dhanalysis.flags import at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=".", help="where data/, checkpoints/, results/ and figures/ go")
    parser.add_argument("--tiny", action="store_true", help="tiny data and models: the whole pipeline in minutes")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--ship", metavar="DIR", help="afterwards, copy the small results (tables, figures, findings) "
                        "to DIR, e.g. docs/reproduction, and regenerate the findings section of --readme")
    parser.add_argument("--readme", help="with --ship, the README whose findings section it regenerates (default: "
                        "README.md; 'none' to leave it)")
    from dhanalysis.study.regime import REGIMES

    pilots = "; ".join(f"'{name}'{' (default)' * (i == 0)}: {plan.describe()}" for i, (name, plan)
                       in enumerate(REGIMES.items()))
    parser.add_argument("--regime", nargs="?", const=next(iter(REGIMES)), choices=tuple(REGIMES),
                        help=f"only the regime pilot, after the study's trunk; a schedule's runs train together. "
                        f"{pilots}. Writes results/<study>/regime/regime*.csv (regime-val<N>/ on N val images)")
    parser.add_argument("--replicates", type=at_least(2), help="bootstrap replicates of the findings, at least 2 (an "
                        "interval needs two; default: the study's, 4000, or 50 with --tiny)")


def run(args: argparse.Namespace) -> int:
    from dhanalysis.study import FULL, TINY, run_study
    from dhanalysis.study.ship import ship

    readme = preflight(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    plan = TINY if args.tiny else FULL
    tag = "reproduction-tiny" if args.tiny else "reproduction"
    if args.regime:
        return run_regime_pilot(plan, Path(args.workdir), tag, args)
    outcome = run_study(plan, Path(args.workdir), tag, args.device, args.replicates)
    print_summary(outcome)
    if args.ship:
        ship(outcome, Path(args.ship), readme)
    return 0


def run_regime_pilot(plan, workdir: Path, tag: str, args: argparse.Namespace) -> int:
    """`study.regime.run_regime` in the study's work folder (it shares the study's data and trunk), then its
    tables."""
    import pandas as pd

    from dhanalysis.engine.distributed import resolve_device
    from dhanalysis.study.regime import REGIMES, TINY_REGIME, run_regime
    from dhanalysis.study.layout import Layout

    layout = Layout(workdir, tag, plan.data_dir)
    regime = TINY_REGIME if args.tiny else REGIMES[args.regime]
    frame = run_regime(plan, layout, regime, str(resolve_device(args.device)))
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(frame.to_string(index=False))
    print(f"wrote {regime.results(layout)}")
    if args.ship:
        print(f"shipped {', '.join(str(p) for p in ship_regime(regime.results(layout), Path(args.ship)))}")
    return 0


def ship_regime(results: Path, ship: Path) -> list[Path]:
    """The regime's three tables copied, as written, to ``ship/<results' folder name>/`` (``regime/`` on the study's
    val split, ``regime-val<N>/`` on the extended one); where ``ship`` holds a shipped study, its index page is
    written again from its tables, the regime's included."""
    import shutil

    from dhanalysis.folders import atomic_write_text
    from dhanalysis.study.regime import CONVERGENCE_CSV, GAPS_CSV, REGIME_CSV
    from dhanalysis.study.ship import SHIPPED_TITLE, shipped_readme

    (ship / results.name).mkdir(parents=True, exist_ok=True)
    copied = [Path(shutil.copyfile(results / name, ship / results.name / name))
              for name in (REGIME_CSV, CONVERGENCE_CSV, GAPS_CSV)]
    page = ship / "README.md"
    if page.is_file() and page.read_text().startswith(SHIPPED_TITLE):  # only the page `ship` wrote
        atomic_write_text(page, shipped_readme(ship))
        copied.append(page)
    return copied


def check_workdir(workdir: str) -> None:
    """--workdir may be missing (it is made) but must be a folder this user can make or write: otherwise found out
    only when data/ is first written."""
    from dhanalysis.folders import check_writable_folder

    check_writable_folder(workdir, "--workdir")


def preflight(args: argparse.Namespace) -> Path | None:
    """Check every flag before the study starts, since it runs for hours and --ship acts only at its end: a README
    that cannot take the findings would fail after all of it. Returns the README --ship regenerates (None: none).
    Nothing is written here."""
    from dhanalysis.engine.distributed import resolve_device
    from dhanalysis.errors import DHError
    from dhanalysis.folders import check_writable_folder
    from dhanalysis.study.ship import README_END, README_START

    check_workdir(args.workdir)
    if args.regime and args.readme is not None:
        raise DHError("--regime ships the regime tables only and regenerates no README; drop --readme")
    if args.readme is not None and not args.ship:
        raise DHError("--readme names the README that --ship regenerates; give --ship DIR too, or drop --readme")
    readme = None
    if args.ship:
        check_writable_folder(args.ship, "--ship")
        if args.readme != "none" and not args.regime:
            readme = Path(args.readme or "README.md")
            if not readme.is_file():
                raise DHError(f"--readme {readme} does not exist, and --ship regenerates its findings section; give "
                              "--readme PATH of the README to update, or --readme none to leave every README alone")
            text = readme.read_text(errors="replace")
            missing = next((m for m in (README_START, README_END) if m not in text), None)
            if missing is not None:
                raise DHError(f"--readme {readme} has no findings section for --ship to regenerate (no line "
                              f"{missing}); add the lines {README_START} and {README_END} where the findings go, "
                              "or pass --readme none")
    resolve_device(args.device)
    return readme


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
