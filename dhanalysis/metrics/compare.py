"""Two detectors compared on the same images: every headline metric of each (`replicates.METRICS`), their
difference with a paired bootstrap interval over images, a p-value and Holm's correction (``dhanalysis compare``).

Two detectors evaluated on the same few hundred images differ partly by which images those were, and the images
that are hard for one are mostly hard for the other: the difference varies less than either number. So the
bootstrap is **paired**: each replicate draws the images once (`bootstrap.replicate_counts`) and both detectors are
measured on that one draw (`replicates.ResampledFile`); the interval of the difference is the spread of the
replicates' differences, which keeps what the two share out of it.

- **Difference**: B − A, the second results file minus the first, in the metric's own units (AP as a fraction).
  ``higher_is_better`` says which sign favours B (ΔAPs of TIDE, D-ECE, oLRP and the NMS gap are errors: lower is
  better).
- **Interval**: the 95% percentile interval of the replicates' differences; each detector's own interval
  (``a_ci_low`` …) is the percentile interval of its replicates on the same draws (`replicates.interval_table`).
- **p-value** of "the difference is 0": the bootstrap's two-sided one over the finite replicates,
  p = min(1, 2 · min((1 + #{Δ* ≤ 0}) / (B + 1), (1 + #{Δ* ≥ 0}) / (B + 1))) — twice the smaller share of replicates
  on either side of 0, with the +1 that keeps it above 0 (so it is below 0.05 about when the percentile interval
  excludes 0). Identical detectors give p = 1. Its smallest value is 2 / (B + 1).
- **Holm**: Holm's step-down over every metric of the table with a p-value (`bootstrap.holm`, family-wise error
  5%): ``holm_reject`` says which differences stay significant after the correction. With m metrics Holm can only
  reject when 2 / (B + 1) <= 0.05 / m, i.e. B >= 40 m − 1 (about 900 replicates for this table's 23 metrics); the
  summary records whether the replicates allowed it (``holm_can_reject``).

A replicate in which a metric is undefined (no ground truth of any small object drawn, say) leaves that replicate
out of the metric's interval and p-value; with fewer than half left, both are NaN and the metric is outside Holm's
family.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dhanalysis.metrics import detections, measures, replicates
from dhanalysis.stats.bootstrap import CONFIDENCE, DEFAULT_REPLICATES, holm, interval, replicate_counts
from dhanalysis.errors import DHError
from dhanalysis.folders import atomic_write_json, claim, read_identity, write_table
from dhanalysis.results import RESULTS
from dhanalysis.vocab import COMPARE_CSV

OUTPUTS = RESULTS["compare"]
COMPARE_FORMAT = 1  # the table's columns and metrics; part of a folder's identity
COMPARE_COLUMNS = ("metric", "family", "higher_is_better", "a", "b", "difference", "ci_low", "ci_high", "p_value",
                   "holm_reject", "n_images", "a_ci_low", "a_ci_high", "b_ci_low", "b_ci_high")
ALPHA = 1 - CONFIDENCE
PROTOCOL = {
    "difference": "b - a (the second results file minus the first)",
    "bootstrap": "paired over the ground truth's images: one draw with replacement per replicate, both detectors "
                 "measured on it, nothing matched again (each image's matches weighted by its draw count)",
    "interval": "95% percentile interval of the replicates' differences (each detector's: of its replicates)",
    "p_value": "two-sided bootstrap p of difference = 0: min(1, 2 min((1 + #{d <= 0}) / (B + 1), "
               "(1 + #{d >= 0}) / (B + 1))) over the finite replicates",
    "holm": "Holm's step-down over every metric with a p-value, family-wise error 0.05",
    "metrics": "COCOeval's AP, AP50, AP75, APs, APm, APl, AR100; TIDE's dAP per error (IoU 0.5); alignment measures "
               "of the score field 'score'; D-ECE at IoU 0.5 (10 equal-width bins); moLRP at tau 0.5",
}


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0" from its replicates (module docstring); NaN when fewer
    than half of them are finite."""
    d = np.asarray(differences, np.float64)
    finite = d[np.isfinite(d)]
    if finite.size < max(2, len(d) // 2):
        return float("nan")
    n = finite.size
    below, above = (1 + np.count_nonzero(finite <= 0)) / (n + 1), (1 + np.count_nonzero(finite >= 0)) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def compare_resampled(a: replicates.ResampledFile, b: replicates.ResampledFile,
                      num_replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> pd.DataFrame:
    """The comparison table (`COMPARE_COLUMNS`, one row per metric of `replicates.METRICS`) of two results files on
    the same images, every replicate's draw shared by both."""
    if not np.array_equal(a.image_ids, b.image_ids):
        raise DHError("the two detectors were matched on different images; compare them on one ground truth")
    counts = replicate_counts(len(a.image_ids), num_replicates, seed)
    reps_a, reps_b = a.replicates(counts), b.replicates(counts)
    own_a = replicates.interval_table(a, reps_a).set_index("metric")
    own_b = replicates.interval_table(b, reps_b).set_index("metric")
    rows = []
    for m in replicates.METRICS:
        diff = reps_b[m.name] - reps_a[m.name]
        lo, hi = interval(diff) if len(diff) else (math.nan, math.nan)
        rows.append({"metric": m.name, "family": m.family, "higher_is_better": m.higher_is_better,
                     "a": a.values[m.name], "b": b.values[m.name], "difference": b.values[m.name] - a.values[m.name],
                     "ci_low": lo, "ci_high": hi, "p_value": bootstrap_p_value(diff), "n_images": len(a.image_ids),
                     "a_ci_low": own_a.at[m.name, "ci_low"], "a_ci_high": own_a.at[m.name, "ci_high"],
                     "b_ci_low": own_b.at[m.name, "ci_low"], "b_ci_high": own_b.at[m.name, "ci_high"]})
    table = pd.DataFrame(rows)
    table["holm_reject"] = holm(table["p_value"].tolist(), ALPHA)
    return table[list(COMPARE_COLUMNS)]


def read_pair(gt: str | Path, results: Sequence[str | Path]) -> list[detections.DetectionInputs]:
    """The ground truth, read once, and each results file checked against it (an image or category id the ground
    truth lacks is refused: a file of another dataset)."""
    truth = detections.read_ground_truth(gt)
    boxes = None
    out = []
    for path in results:
        inputs = detections.DetectionInputs(truth, detections.read_results(path, truth), (), Path(gt), Path(path),
                                            boxes)
        boxes = inputs.gt_boxes
        out.append(inputs)
    return out


def default_names(results: Sequence[str | Path]) -> list[str]:
    """Each file's stem, with its folder where the stems are equal, else "A" and "B"."""
    paths = [Path(p) for p in results]
    for name in (lambda p: p.stem, lambda p: f"{p.parent.name}/{p.stem}"):
        names = [name(p) for p in paths]
        if len(set(names)) == len(names):
            return names
    return ["A", "B"][:len(paths)]


def check_settings(results: Sequence[str | Path], names: Sequence[str] | None, num_replicates: int) -> list[str]:
    """The names to use; a one-line `DHError` for anything but two results files, two distinct names or at least two
    replicates — before any file is read."""
    if len(results) != 2:
        raise DHError(f"compare takes two results files, got {len(results)}")
    if num_replicates < 2:
        raise DHError(f"replicates must be at least 2 for an interval, got {num_replicates}")
    names = list(names) if names is not None else default_names(results)
    if len(names) != 2 or any(not str(n).strip() for n in names) or names[0] == names[1]:
        raise DHError(f"names must be two different non-empty names, got {names}")
    return [str(n) for n in names]


@dataclass
class CompareResults:
    """What `compute_compare` returns: the table (also written when ``out`` was given), the summary, the paths."""

    table: pd.DataFrame
    summary: dict
    paths: list[Path]


def compute_compare(gt: str | Path, results: Sequence[str | Path], out: str | Path | None = None,
                    names: Sequence[str] | None = None, num_replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                    overwrite: bool = False, positive_iou: float = measures.DEFAULT_POSITIVE_IOU,
                    progress: Callable[[str], None] = print) -> CompareResults:
    """Check the settings and inputs, compare the two results files and (with ``out``) write ``compare.csv`` and
    ``compare_summary.json`` last.

    A folder already holding this comparison of the same files and settings is not recomputed: its table is read;
    one holding another comparison is refused unless ``overwrite``, which replaces only the comparison's files.
    """
    names = check_settings(results, names, num_replicates)
    measures.positive_bin(positive_iou)
    pair = read_pair(gt, results)  # every bad input fails here, before the folder is touched
    key = {"analysis": OUTPUTS.analysis, "gt": detections.file_identity(Path(gt)),
           "results": [detections.file_identity(Path(p)) for p in results], "names": names,
           "replicates": int(num_replicates), "seed": int(seed), "positive_iou": float(positive_iou),
           "format": COMPARE_FORMAT}
    folder = Path(out) if out is not None else None
    if folder is not None:
        summary_path = folder / OUTPUTS.summary
        done = claim(folder, key, read_identity(summary_path), [folder / f for f in OUTPUTS.files],
                     overwrite=overwrite, what=OUTPUTS.what)
        if done and summary_path.is_file() and (folder / COMPARE_CSV).is_file():
            return CompareResults(pd.read_csv(folder / COMPARE_CSV), json.loads(summary_path.read_text()), [])
    start = time.perf_counter()
    resampled = []
    for name, inputs in zip(names, pair):
        progress(f"{name}: matching {len(inputs.results)} detections on {len(inputs.gt['images'])} images once "
                 "(COCOeval, TIDE, alignment objects)")
        resampled.append(replicates.resample_file(inputs, positive_iou))
    progress(f"{num_replicates} paired bootstrap replicates over images")
    table = compare_resampled(*resampled, num_replicates=num_replicates, seed=seed)
    family = int(np.isfinite(table["p_value"]).sum())
    smallest = 2 / (num_replicates + 1)
    summary = {
        "run": key, "names": {"a": names[0], "b": names[1]}, "difference": "b - a",
        "images": len(resampled[0].image_ids), "detections": {"a": len(pair[0].results), "b": len(pair[1].results)},
        "replicates": int(num_replicates), "seed": int(seed),
        "holm": {"alpha": ALPHA, "family": family, "rejected": table.loc[table["holm_reject"], "metric"].tolist()},
        "smallest_p": smallest, "holm_can_reject": bool(family and smallest <= ALPHA / family),
        "protocol": PROTOCOL, "seconds": round(time.perf_counter() - start, 2),
    }
    paths: list[Path] = []
    if folder is not None:
        paths += write_table(table, folder / COMPARE_CSV, parquet=False)
        atomic_write_json(folder / OUTPUTS.summary, summary)  # every number finite
        paths.append(folder / OUTPUTS.summary)
    return CompareResults(table, summary, paths)
