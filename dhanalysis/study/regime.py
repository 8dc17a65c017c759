"""The study's regime, chosen and measured on ``val`` (never the split the claims are measured on).

The paper compares heads in a regime where the fc-head is the better recogniser (Single-FC 36.8 AP against
Single-Conv 35.9) and fc6 reduces its input 12× (12544 → 1024). A fc-vs-conv verdict measured where the conv-head
recognises better instead is confounded with recognition strength, and a schedule that has not converged compares
heads at different points of their learning. This module measures both, on the frozen trunk the heads share:

- **convergence**: each compared variant trained at the plan's schedule and at longer ones; a schedule is converged
  for a variant when its AP is within `CONVERGED_WITHIN` points of the longest schedule's;
- **recognition strength by fc width**: Single-FC at several fc6 widths (the reduction 3136 → width) against
  Single-Conv, so the Single-FC − Single-Conv AP gap is a function of the width; the §3.2 differences measured
  against that gap are the study's dose-response.

All runs of one schedule train together on the trunk (one RoI sampling and pooling per iteration for every head:
`engine.train.train_together`), one seed, evaluated on ``val``. Outputs: ``regime.csv`` (one row per run and
schedule), ``regime_convergence.csv`` and ``regime_gaps.csv``, derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from dhanalysis.study.plan import StudyPlan

CONVERGED_WITHIN = 0.3  # AP points: a schedule within this of the longest one's AP has converged
REGIME_CSV, CONVERGENCE_CSV, GAPS_CSV = "regime.csv", "regime_convergence.csv", "regime_gaps.csv"


@dataclass(frozen=True)
class RegimePlan:
    """What the regime pilot trains: Single-FC at each of ``fc_dims`` and Single-Conv, at each of ``schedules``
    (head iterations; learning-rate steps at the same fractions as the plan's), with one ``seed``, on ``trunk``."""

    fc_dims: tuple[int, ...] = (64, 128, 256)
    schedules: tuple[int, ...] = (1200, 1600, 2400)
    seed: int = 0
    trunk: str = "single-fc"
    split: str = "val"


REGIME = RegimePlan()
TINY_REGIME = RegimePlan(fc_dims=(16, 32), schedules=(3, 4))


def schedule_values(plan: StudyPlan, iterations: int) -> dict:
    """The plan's head schedule stretched to ``iterations``: the LR steps keep their fractions of the schedule and
    checkpoints keep their count."""
    base = int(plan.heads["train.iterations"])
    steps = [max(1, min(iterations - 1, round(s * iterations / base))) for s in plan.heads.get("train.steps", [])]
    period = max(1, round(int(plan.heads.get("train.checkpoint_period", base)) * iterations / base))
    return {**plan.heads, "train.iterations": iterations, "train.steps": sorted(set(steps)),
            "train.checkpoint_period": period}


def regime_runs(regime: RegimePlan) -> list[tuple[str, dict]]:
    """(run name, overrides) of every run one schedule trains: Single-FC per fc width, then Single-Conv."""
    single = {"model.loss.w_fc": 1.0, "model.loss.w_conv": 1.0, "model.loss.lambda_fc": 1.0,
              "model.loss.lambda_conv": 1.0, "model.head.non_local": False}
    runs = [(f"single-fc-d{d}", {**single, "model.variant": "single-fc", "model.head.fc_dim": d})
            for d in regime.fc_dims]
    return [*runs, ("single-conv", {**single, "model.variant": "single-conv"})]


def run_regime(plan: StudyPlan, layout, regime: RegimePlan = REGIME, device: str = "cpu") -> pd.DataFrame:
    """Train and evaluate every regime run (resuming finished ones), write the three tables under
    ``layout.results / "regime"`` and return ``regime.csv``'s frame."""
    from dhanalysis.config import load_config, preset_path
    from dhanalysis.engine.train import FINAL, train_together
    from dhanalysis.errors import DHError
    from dhanalysis.folders import write_table
    from dhanalysis.study.runner import Steps, common_values, evaluate_runs, prepare_data, train_trunk

    trunk = next((t for t in plan.trunks if t.name == regime.trunk), None)
    if trunk is None:
        raise DHError(f"the plan has no trunk '{regime.trunk}'; its trunks: {', '.join(t.name for t in plan.trunks)}")
    step = Steps(4)
    prepare_data(plan, layout, step)  # each step skips what is already there: the study's data and trunk are reused
    trunk_ckpt = train_trunk(plan, layout, trunk, device, step)
    on_split = replace(plan, split=regime.split)
    runs = regime_runs(regime)
    rows = []
    for iterations in regime.schedules:
        ckpts = layout.checkpoints / "regime" / f"it{iterations}"
        results = layout.results / "regime" / f"it{iterations}"
        values = {**schedule_values(plan, iterations), **common_values(plan, layout), "model.backbone.weights": None,
                  "train.init_from": str(trunk_ckpt), "train.freeze": ["backbone", "rpn"], "train.seed": regime.seed}
        todo = [(name, o) for name, o in runs if not (ckpts / name / FINAL).exists()]
        if todo:
            cfgs = [load_config(preset_path("synth/double-head-ext.yaml"), values={**values, **o, "name": name})
                    for name, o in todo]
            train_together(cfgs, [ckpts / name for name, _ in todo], resume=True, device=device)
        evaluate_runs(on_split, layout, [(ckpts / name / FINAL, results / name, name, None) for name, _ in runs],
                      device)
        for name, o in runs:
            ev = pd.read_csv(results / name / "eval.csv").iloc[0]
            rows.append({"trunk": trunk.name, "run": name, "variant": o["model.variant"],
                         "fc_dim": o.get("model.head.fc_dim"), "iterations": iterations,  # none: no fc-head
                         "split": regime.split, "seed": regime.seed, "AP": float(ev["AP"]),
                         "AP50": float(ev["AP50"])})
    frame = pd.DataFrame(rows).astype({"fc_dim": "Int64"})
    out = layout.results / "regime"
    convergence, gaps = regime_tables(frame)
    write_table(frame, out / Path(REGIME_CSV).stem, parquet=False)
    write_table(convergence, out / Path(CONVERGENCE_CSV).stem, parquet=False)
    write_table(gaps, out / Path(GAPS_CSV).stem, parquet=False)
    return frame


def regime_tables(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(convergence, gaps) from ``regime.csv``'s rows.

    convergence: per run and schedule, its AP against the longest schedule's, in AP points, and whether it is within
    `CONVERGED_WITHIN` (empty for the longest schedule itself, which nothing longer measures). gaps: per fc width and schedule, Single-FC − Single-Conv AP (and AP50) in points — positive is
    the paper's order (the fc-head the better recogniser).
    """
    longest = frame["iterations"].max()
    final = frame[frame["iterations"] == longest].set_index("run")["AP"]
    conv = frame.assign(AP_longest=frame["run"].map(final), longest=longest)
    conv["delta_points"] = 100 * (conv["AP_longest"] - conv["AP"])
    # the longest schedule has nothing longer to be measured against: its convergence is unknown, not "yes"
    conv["converged"] = (conv["delta_points"].abs() <= CONVERGED_WITHIN).astype(object).where(
        conv["iterations"] < longest, None)
    convergence = conv[["trunk", "run", "variant", "fc_dim", "iterations", "AP", "longest", "AP_longest",
                        "delta_points", "converged"]]
    single_conv = frame[frame["variant"] == "single-conv"].set_index("iterations")
    fc = frame[frame["variant"] == "single-fc"]
    gaps = fc.assign(conv_AP=fc["iterations"].map(single_conv["AP"]),
                     conv_AP50=fc["iterations"].map(single_conv["AP50"]))
    gaps["gap_AP_points"] = 100 * (gaps["AP"] - gaps["conv_AP"])
    gaps["gap_AP50_points"] = 100 * (gaps["AP50"] - gaps["conv_AP50"])
    gaps["paper_order"] = gaps["gap_AP_points"] >= 0
    return convergence, gaps[["trunk", "fc_dim", "iterations", "AP", "conv_AP", "gap_AP_points", "AP50", "conv_AP50",
                              "gap_AP50_points", "paper_order"]].reset_index(drop=True)
