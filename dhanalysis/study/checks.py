"""The quality checks of a study: did its detectors learn? Measured per replicate from the tables it wrote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dhanalysis.vocab import DEFAULT_MODES, SLIDING_WINDOW_STATS_CSV, SWEEP_RESULTS_CSV


def default_mode_ap(results: Path) -> pd.DataFrame:
    """Table 1's runs in their variant's default mode (`vocab.DEFAULT_MODES`), from the replicate's ``results.csv``."""
    path = results / "sweeps" / "table1" / SWEEP_RESULTS_CSV
    if not path.is_file():
        return pd.DataFrame()
    table = pd.read_csv(path)
    return table[[m == DEFAULT_MODES[v] for m, v in zip(table["mode"], table["variant"])]]


def gt_class_scores(results: Path) -> dict:
    """Per analysed model and head: the mean ground-truth-class score of windows with IoU ≥ 0.9 and IoU < 0.3."""
    from dhanalysis.analysis.stats import bin_summary

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
        sfc = own[own["run"] == "single-fc-w1"]
        if len(sfc):
            checks["single_fc"] = {"AP": round(float(sfc["AP"].iloc[0]), 4),
                                   "AP50": round(float(sfc["AP50"].iloc[0]), 4)}
    checks["gt_class_score"] = gt_class_scores(results)
    return checks
