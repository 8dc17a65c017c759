"""The paper's ablations as sweeps: Table 1 (variants × loss weights), Table 2 (conv-head depth, non-local),
Fig. 8 (the λ_fc × λ_conv grid) and Table 3 (fusion rules, evaluation only).

A sweep is a list of named runs, each a set of config values (``{dotted.key: value}``) on a base config. Every run
gets its own folder (``OUT/<run>/``: the training outputs and ``eval.csv``); a run whose ``eval.csv`` exists is
skipped, so an interrupted sweep resumes. ``OUT/sweep.csv`` indexes the runs and ``OUT/results.csv`` joins the index
with every run's ``eval.csv``: the one table the figures and tables read. Runs execute one after another here, or are
written out as one ``torchrun`` command per run for a cluster scheduler, their values formatted back into ``--set``
strings there only.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dhanalysis.config import format_override
from dhanalysis.errors import DHError
from dhanalysis.folders import write_table
from dhanalysis.vocab import EVAL_CSV, FINAL_CHECKPOINT, FUSION_MODES, SWEEP_CSV, SWEEP_RESULTS_CSV

LAMBDA_FC = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LAMBDA_CONV = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class Run:
    name: str
    overrides: dict[str, Any]  # {dotted.key: value}, applied over the user's --set strings (the run's win)
    meta: dict
    train: bool = True  # False: evaluate the base checkpoint only (Table 3)
    modes: tuple[str, ...] = ()  # () = every mode the model supports


def _weights(w_fc: float, w_conv: float) -> dict[str, Any]:
    return {"model.loss.w_fc": w_fc, "model.loss.w_conv": w_conv}


def _lambdas(lambda_fc: float = 1.0, lambda_conv: float = 1.0) -> dict[str, Any]:
    return {"model.loss.lambda_fc": lambda_fc, "model.loss.lambda_conv": lambda_conv}


def _conv_head(non_local: bool, num_blocks: int | None = None) -> dict[str, Any]:
    blocks = {"model.head.num_blocks": num_blocks} if num_blocks is not None else {}
    return {**blocks, "model.head.non_local": non_local}


def set_flags(values: dict[str, Any]) -> list[str]:
    """A run's values as ``--set`` strings (`dhanalysis.config.format_override`): for shell lines and listings."""
    return [format_override(key, value) for key, value in values.items()]


# Every run pins what its table or figure holds fixed, so the base config (--config) contributes only what the paper
# shares across all of them (backbone, schedule, data, K for Table 1 and Fig. 8).
OMEGA_DOUBLE = (2.0, 2.5)  # ω_fc, ω_conv of Table 1's bottom group, Table 2, Fig. 8 and Table 3 (§5.2)


def table1_runs() -> list[Run]:
    """Table 1: single heads with weight 1.0; double heads with 1.0 (middle group) and ω = (2.0, 2.5) (bottom).

    λ = 1 (no unfocused tasks) and no non-local blocks (§3: the conv-head "has five residual blocks"; Table 1's
    Double-Head at ω (2.0, 2.5) is Table 2's K = 5 without non-local blocks, 39.5).
    """
    runs = []
    for variant in ("single-fc", "single-conv"):
        runs.append(Run(f"{variant}-w1", {"model.variant": variant, **_weights(1.0, 1.0), **_lambdas(),
                                          **_conv_head(False)},
                        {"variant": variant, "w_fc": 1.0, "w_conv": 1.0, "group": "single"}))
    for (w_fc, w_conv), group in (((1.0, 1.0), "double, weight 1.0"), (OMEGA_DOUBLE, "double, ω_fc=2.0, ω_conv=2.5")):
        for variant in ("double-fc", "double-conv", "double-head-reverse", "double-head"):
            tag = "w1" if w_fc == 1.0 else "w2"
            runs.append(Run(f"{variant}-{tag}", {"model.variant": variant, **_weights(w_fc, w_conv), **_lambdas(),
                                                 **_conv_head(False)},
                            {"variant": variant, "w_fc": w_fc, "w_conv": w_conv, "group": group}))
    return runs


def table2_runs() -> list[Run]:
    """Table 2: Double-Head (ω 2.0 / 2.5, λ = 1) with K = 1..7 residual blocks, and K = 3, 5, 7 with non-local
    blocks; K = 0 is the FPN baseline, Single-FC with weight 1.0 (Table 1's first row, 36.8)."""
    runs = [Run("K0", {"model.variant": "single-fc", **_weights(1.0, 1.0), **_lambdas(), **_conv_head(False)},
                {"K": 0, "non_local": False})]
    for k in range(1, 8):
        runs.append(Run(f"K{k}", {"model.variant": "double-head", **_weights(*OMEGA_DOUBLE), **_lambdas(),
                                  **_conv_head(False, k)}, {"K": k, "non_local": False}))
    for k in (3, 5, 7):
        runs.append(Run(f"K{k}-nl", {"model.variant": "double-head", **_weights(*OMEGA_DOUBLE), **_lambdas(),
                                     **_conv_head(True, k)}, {"K": k, "non_local": True}))
    return runs


def fig8_runs(lambda_fc: tuple[float, ...] = LAMBDA_FC, lambda_conv: tuple[float, ...] = LAMBDA_CONV) -> list[Run]:
    """Fig. 8: one Double-Head-Ext model per (λ_fc, λ_conv), ω (2.0, 2.5) "in all experiments" and the conv-head of
    the rest of the paper (K of the base config with non-local blocks, §5.2); each is evaluated in every mode it
    supports."""
    return [
        Run(f"lfc{lf:g}-lconv{lc:g}", {"model.variant": "double-head-ext", **_weights(*OMEGA_DOUBLE),
                                       **_lambdas(lf, lc), **_conv_head(True)}, {"lambda_fc": lf, "lambda_conv": lc})
        for lc in lambda_conv for lf in lambda_fc
    ]


def table3_runs() -> list[Run]:
    """Table 3: one trained Double-Head-Ext model, its fusion rules compared (no training)."""
    return [Run("fusion", {}, {}, train=False, modes=FUSION_MODES)]


GRIDS = {"table1": table1_runs, "table2": table2_runs, "fig8": fig8_runs, "table3": table3_runs}


def grid_runs(name: str) -> list[Run]:
    if name not in GRIDS:
        raise DHError(f"unknown grid '{name}'; choose one of: {', '.join(GRIDS)}")
    return GRIDS[name]()


def torchrun_commands(runs: list[Run], config: str, out: Path, nproc: int, extra: list[str]) -> list[str]:
    """One shell line per run: train with torchrun, then evaluate, for a cluster scheduler. ``extra`` (the user's
    ``--set`` strings) come first and the run's values, formatted back into ``--set`` strings, after them: the same
    precedence as `run_sweep`."""
    lines = []
    for run in runs:
        sets = " ".join(f"--set {shlex.quote(o)}" for o in (*extra, *set_flags(run.overrides)))
        folder = shlex.quote(str(out / run.name))
        if run.train:
            train = (f"torchrun --nproc_per_node {nproc} -m dhanalysis train --config {shlex.quote(config)} "
                     f"--out {folder} --resume {sets}")
            ckpt = f"{folder}/{FINAL_CHECKPOINT}"
        else:
            train, ckpt = "true", shlex.quote(config)
        modes = f" --modes {','.join(run.modes)}" if run.modes else ""
        lines.append(f"{train} && torchrun --nproc_per_node {nproc} -m dhanalysis eval --ckpt {ckpt} "
                     f"--out {folder} --name {run.name}{modes}")
    return lines


def write_index(runs: list[Run], grid: str, out: Path) -> pd.DataFrame:
    """``sweep.csv`` (one row per run) and ``results.csv`` (the index joined with each finished run's eval.csv)."""
    index = pd.DataFrame([{"grid": grid, "run": r.name, **r.meta, "folder": str(out / r.name)} for r in runs])
    write_table(index, Path(out) / SWEEP_CSV, parquet=False)
    evals = []
    for r in runs:
        path = out / r.name / EVAL_CSV
        if path.exists():
            evals.append(pd.read_csv(path).assign(run=r.name))
    if not evals:
        return pd.DataFrame()
    results = index.merge(pd.concat(evals, ignore_index=True), on="run")
    write_table(results, Path(out) / SWEEP_RESULTS_CSV, parquet=False)
    return results


def run_sweep(
    grid: str,
    config: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    device: str | None = None,
    only: list[str] | None = None,
    max_images: int | None = None,
    runs: list[Run] | None = None,
    checkpoints: str | Path | None = None,
    eval_progress: bool = True,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Train and evaluate every run of ``grid`` in sequence, skipping finished ones; returns ``results.csv``.

    ``runs`` replaces the grid's runs (e.g. a subset of Fig. 8's λ grid), ``only`` keeps the named ones. Each run
    trains into ``checkpoints/<run>`` (default: ``out/<run>``, beside its evaluation) and is evaluated into
    ``out/<run>``; ``log`` hears one line per run.
    """
    from dhanalysis.config import load_config
    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.engine.distributed import resolve_device
    from dhanalysis.engine.evaluate import evaluate
    from dhanalysis.engine.train import train
    from dhanalysis.model.checkpoint import load_checkpoint

    out = Path(out)
    trained = Path(checkpoints) if checkpoints is not None else out
    runs = [r for r in (grid_runs(grid) if runs is None else runs) if not only or r.name in only]
    if not runs:
        raise DHError(f"no runs of grid '{grid}' are named {', '.join(only or [])}")
    dev = resolve_device(device)
    for i, run in enumerate(runs, 1):
        folder = out / run.name
        if (folder / EVAL_CSV).exists() and (not run.train or (trained / run.name / FINAL_CHECKPOINT).exists()):
            log(f"{grid} {run.name} ({i}/{len(runs)}): done, skipped")
            continue
        log(f"{grid} {run.name} ({i}/{len(runs)}): {' '.join(set_flags(run.overrides)) or 'evaluation only'}")
        if run.train:  # the user's --set strings first, the run's values over them
            cfg = load_config(config, overrides, values={**run.overrides, "name": run.name})
            ckpt = train(cfg, trained / run.name, resume=True, device=str(dev))
        else:
            ckpt = Path(config)
        if (folder / EVAL_CSV).exists():
            continue
        model = load_checkpoint(ckpt, map_location=dev)
        data = model.config.data
        dataset = CocoDataset(data.root, data.val_split)
        evaluate(model, dataset, list(run.modes) or None, dev, max_images=max_images, out=folder, name=run.name,
                 progress=eval_progress)
    return write_index(runs, grid, out)
