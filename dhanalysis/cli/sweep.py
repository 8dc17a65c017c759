"""The paper's ablation sweeps: table1 (variants × loss weights), table2 (conv-head depth and non-local blocks),
fig8 (the λ_fc × λ_conv grid, every run evaluated in every mode) and table3 (fusion rules of one trained
Double-Head-Ext model; evaluation only).

  dhanalysis sweep --grid fig8 --config configs/synth/double-head-ext.yaml --out results/sweeps/fig8
  dhanalysis sweep --grid table3 --ckpt checkpoints/synth-double-head-ext/model_final.pth --out results/sweeps/table3
  dhanalysis sweep --grid table1 --config configs/coco/r50/double-head.yaml --out sweeps/t1 --emit-torchrun 8

One folder per run; finished runs (those with eval.csv) are skipped. OUT/results.csv joins the runs' settings with
their eval.csv rows; `dhanalysis figures` reads it. --emit-torchrun N writes OUT/commands.sh, one torchrun line per
run, instead of running anything.
"""

from __future__ import annotations

import argparse

from dhanalysis.vocab import SWEEP_CSV, SWEEP_RESULTS_CSV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", required=True, help="table1 | table2 | fig8 | table3")
    parser.add_argument("--config", help="base config of the trained runs (table1, table2, fig8)")
    parser.add_argument("--ckpt", help="trained Double-Head-Ext checkpoint (table3)")
    parser.add_argument("--out", help="sweep folder, one sub-folder per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of every run, e.g. --set train.iterations=200")
    parser.add_argument("--only", action="append", default=[], help="run only these run names (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    parser.add_argument("--emit-torchrun", type=int, metavar="NPROC", help="write commands.sh instead of running")
    parser.add_argument("--max-images", type=int, help="evaluate on the first N validation images only")
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dhanalysis.engine.sweep import grid_runs, run_sweep, torchrun_commands
    from dhanalysis.errors import DHError

    runs = grid_runs(args.grid)
    if args.list:
        for r in runs:
            print(f"{r.name:24s} {' '.join(r.overrides) or '(evaluation only)'}")
        return 0
    if not args.out:
        raise DHError("give --out FOLDER for the sweep's runs")
    source = args.ckpt if args.grid == "table3" else args.config
    if not source:
        raise DHError("table3 needs --ckpt (a trained Double-Head-Ext)" if args.grid == "table3"
                      else f"grid {args.grid} needs --config (the base config of its runs)")
    out = Path(args.out)
    if args.emit_torchrun:
        out.mkdir(parents=True, exist_ok=True)
        lines = torchrun_commands(runs, source, out, args.emit_torchrun, args.overrides)
        (out / "commands.sh").write_text("#!/usr/bin/env bash\nset -e\n" + "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} commands to {out / 'commands.sh'}")
        return 0
    results = run_sweep(args.grid, source, out, args.overrides, args.device, args.only or None, args.max_images)
    print(f"wrote {out / SWEEP_CSV} and {out / SWEEP_RESULTS_CSV} ({len(results)} rows)")
    return 0
