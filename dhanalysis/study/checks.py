"""The quality checks of a study: did its detectors learn? Measured per replicate from the tables it wrote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dhanalysis.study.plan import SINGLE_FC_RUN
from dhanalysis.vocab import DEFAULT_MODES, SLIDING_WINDOW_STATS_CSV, SWEEP_RESULTS_CSV

# What "the detectors learned" means, on the study's split: a claim about how a head scores or regresses says little
# about a detector that never learned to detect. (name, description, comparison, bound); each is read at its worst
# replicate, run or head (`target_rows`).
TARGETS = (("single_fc_AP", "Single-FC box AP", ">=", 0.50),
           ("default_mode_AP50", "every Table 1 variant's default-mode AP50", ">=", 0.60),
           ("score_iou_hi", "mean ground-truth-class score on windows with IoU ≥ 0.9", ">=", 0.5),
           ("score_iou_lo", "mean ground-truth-class score on windows with IoU < 0.3", "<=", 0.2))


def default_mode_ap(results: Path) -> pd.DataFrame:
    """Table 1's runs in their variant's default mode (`vocab.DEFAULT_MODES`), from the replicate's ``results.csv``."""
    path = results / "sweeps" / "table1" / SWEEP_RESULTS_CSV
    if not path.is_file():
        return pd.DataFrame()
    table = pd.read_csv(path)
    return table[[m == DEFAULT_MODES[v] for m, v in zip(table["mode"], table["variant"])]]


def gt_class_scores(results: Path) -> dict:
    """Per analysed model and head: the mean ground-truth-class score of windows with IoU ≥ 0.9 and IoU < 0.3."""
    from dhanalysis.stats.moments import bin_summary

    scores = {}
    for stats in sorted(results.glob(f"*/{SLIDING_WINDOW_STATS_CSV}")):
        s = bin_summary(pd.read_csv(stats), ["model", "head"])
        for (_, head), part in s.groupby(["model", "head"]):
            part = part.dropna(subset=["score_mean"])
            if part.empty:
                continue
            w = part["n"]

            def mean(mask):
                return float((part.loc[mask, "score_mean"] * w[mask]).sum() / w[mask].sum()) if w[mask].sum() else None

            scores[f"{stats.parent.name}/{head}"] = {"iou>=0.9": mean(part["iou_lo"] >= 0.9 - 1e-9),
                                                     "iou<0.3": mean(part["iou_hi"] <= 0.3 + 1e-9)}
    return scores


def replicate_checks(results: Path) -> dict:
    checks: dict = {}
    own = default_mode_ap(results)
    if len(own):
        checks["default_mode_AP50"] = {r.run: round(float(r.AP50), 4) for r in own.itertuples()}
        sfc = own[own["run"] == SINGLE_FC_RUN]
        if len(sfc):
            checks["single_fc"] = {"AP": round(float(sfc["AP"].iloc[0]), 4),
                                   "AP50": round(float(sfc["AP50"].iloc[0]), 4)}
    checks["gt_class_score"] = gt_class_scores(results)
    return checks


def target_rows(checks: dict) -> list[dict]:
    """Each of `TARGETS` at its worst over every replicate (and run, or analysed model and head): ``{name, what, op,
    bound, worst, where, met}``; ``worst`` is None where nothing was measured."""
    values: dict[str, list[tuple[float, str]]] = {name: [] for name, *_ in TARGETS}
    for rep, v in checks.get("replicates", {}).items():
        if "single_fc" in v:
            values["single_fc_AP"].append((v["single_fc"]["AP"], rep))
        values["default_mode_AP50"] += [(ap50, f"{rep} {run}") for run, ap50 in v.get("default_mode_AP50", {}).items()]
        for key, s in v.get("gt_class_score", {}).items():
            if s.get("iou>=0.9") is not None:
                values["score_iou_hi"].append((s["iou>=0.9"], f"{rep} {key}"))
            if s.get("iou<0.3") is not None:
                values["score_iou_lo"].append((s["iou<0.3"], f"{rep} {key}"))
    rows = []
    for name, what, op, bound in TARGETS:
        row = {"name": name, "what": what, "op": op, "bound": bound, "worst": None, "where": "", "met": None}
        if values[name]:
            worst, where = (min if op == ">=" else max)(values[name])
            row.update(worst=float(worst), where=where, met=bool(worst >= bound if op == ">=" else worst <= bound))
        rows.append(row)
    return rows
