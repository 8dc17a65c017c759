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

from dhanalysis.flags import positive_int
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
    parser.add_argument("--emit-torchrun", type=positive_int, metavar="NPROC",
                        help="write commands.sh, NPROC processes per run, instead of running")
    parser.add_argument("--max-images", type=positive_int, help="evaluate on the first N validation images only")
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dhanalysis.engine.sweep import grid_runs, run_sweep, set_flags, torchrun_commands

    runs = grid_runs(args.grid)
    if args.list:
        for r in runs:
            print(f"{r.name:24s} {' '.join(set_flags(r.overrides)) or '(evaluation only)'}")
        return 0
    source = preflight(args, runs)
    out = Path(args.out)
    if args.emit_torchrun is not None:
        out.mkdir(parents=True, exist_ok=True)
        selected = [r for r in runs if not args.only or r.name in args.only]
        lines = torchrun_commands(selected, source, out, args.emit_torchrun, args.overrides)
        (out / "commands.sh").write_text("#!/usr/bin/env bash\nset -e\n" + "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} commands to {out / 'commands.sh'}")
        return 0
    results = run_sweep(args.grid, source, out, args.overrides, args.device, args.only or None, args.max_images)
    print(f"wrote {out / SWEEP_CSV} and {out / SWEEP_RESULTS_CSV} ({len(results)} rows)")
    return 0


def preflight(args: argparse.Namespace, runs: list) -> str:
    """Check every flag before the first run starts, since a sweep is hours of training and a flag that fails at
    run 20 (a bad --set value, an --only name of another grid) costs the first 19; returns the runs' source (the
    --config of a trained grid, table3's --ckpt). Nothing is written here."""
    from pathlib import Path

    from dhanalysis.config import load_config
    from dhanalysis.engine.distributed import resolve_device
    from dhanalysis.errors import DHError
    from dhanalysis.folders import check_writable_folder

    if not args.out:
        raise DHError("give --out FOLDER for the sweep's runs")
    check_writable_folder(args.out)
    table3 = args.grid == "table3"
    source = args.ckpt if table3 else args.config
    if not source:
        raise DHError("table3 needs --ckpt (a trained Double-Head-Ext)" if table3
                      else f"grid {args.grid} needs --config (the base config of its runs)")
    if table3 and args.config:
        raise DHError("--config is read by the trained grids (table1, table2, fig8); table3 evaluates --ckpt only, "
                      "so drop --config")
    if not table3 and args.ckpt:
        raise DHError(f"--ckpt is read by --grid table3 only; grid {args.grid} trains its runs from --config, so drop "
                      "--ckpt")
    names = [r.name for r in runs]
    for name in args.only:
        if name not in names:
            raise DHError(f"--only {name} names no run of grid {args.grid}; list them with `dhanalysis sweep --grid "
                          f"{args.grid} --list`")
    if table3 and args.overrides:
        raise DHError("--set changes the configs of trained runs; table3 trains nothing, so drop --set")
    if not table3:
        for r in runs:  # each run's whole config, as run_sweep and the emitted commands will build it
            if not args.only or r.name in args.only:
                load_config(source, args.overrides, values={**r.overrides, "name": r.name})
    if args.emit_torchrun is not None:  # the emitted commands run elsewhere: a --ckpt may not be here yet
        for flag, value in (("--max-images", args.max_images), ("--device", args.device)):
            if value is not None:
                raise DHError(f"{flag} is not passed to the commands --emit-torchrun writes (they evaluate every "
                              f"image, one GPU per process); drop {flag}")
        return source
    if table3 and not Path(source).is_file():
        raise DHError(f"--ckpt {source} does not exist; give a trained Double-Head-Ext's model_final.pth")
    resolve_device(args.device)
    return source
