"""The sliding-window analysis of one model (paper §3.1, Fig. 2): every head's score and regressed IoU for ~14,000
windows around each ground-truth box, kept as the sufficient statistics of ``sliding_window_stats.csv``.

`compute_sliding_window` takes a loaded model (`runner.ModelRun`) and plain values; it claims the model folder's
sliding-window files, runs `scoring.SlidingWindowTask` in resumable chunks and writes the tables, then the summary.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from dhanalysis.analysis.proposals import DEFAULT_GRID, DEFAULT_PROPOSALS_PER_GT, check_grid_kind, grid_info
from dhanalysis.analysis.runner import (ModelRun, RunOptions, Written, iter_rows, run_analysis, stored_key,
                                        write_summary)
from dhanalysis.analysis.scoring import PRECISIONS, SlidingWindowTask, bin_counts
from dhanalysis.analysis.stats import NUM_BINS
from dhanalysis.errors import DHError
from dhanalysis.folders import differences, write_table
from dhanalysis.results import RESULTS
from dhanalysis.vocab import RAW_SAMPLE_CSV, SLIDING_WINDOW_STATS_CSV

DEFAULT_BATCH_SIZE = 2048  # boxes per RoIAlign + head forward; halved on out-of-memory
SCORING = ("fast", "reference")
OUTPUTS = RESULTS["sliding-window"]
SAMPLE_ONLY = ("raw_sample", "seed")  # key entries that change raw_sample.csv only, not the statistics


def check_window_options(raw_sample: int = 0, precision: str = "fp32", scoring: str = "fast",
                         grid: str = DEFAULT_GRID) -> None:
    """A one-line `DHError` for values the analysis cannot run with, before any model is loaded."""
    check_grid_kind(grid)
    if raw_sample < 0:
        raise DHError(f"the raw sample must be 0 or more windows per box, got {raw_sample}")
    if precision not in PRECISIONS:
        raise DHError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if scoring not in SCORING:
        raise DHError(f"unknown scoring path {scoring!r}; choose one of: {', '.join(SCORING)}")
    if scoring == "reference" and precision != "fp32":
        raise DHError("the reference scoring path runs in fp32 only; use precision fp32 or the fast scoring path")


def sliding_window_key(run: ModelRun, proposals_per_gt: int, raw_sample: int = 0, seed: int = 0,
                       precision: str = "fp32", grid: str = DEFAULT_GRID) -> dict:
    """What a sliding-window result depends on; ``raw_sample`` and ``seed`` only change raw_sample.csv.

    ``precision`` enters only when it is not fp32 and ``grid`` only when it is not spiral, so default results keep
    the identity they had before the options existed; the scoring path (fast or reference) changes nothing beyond
    float32 rounding and is a run option.
    """
    key = {"analysis": OUTPUTS.analysis, "config": run.config, **run.data_key, "proposals_per_gt": proposals_per_gt,
           "raw_sample": raw_sample, "seed": seed}
    if precision != "fp32":
        key["precision"] = precision
    if grid != DEFAULT_GRID:
        key["grid"] = grid
    return key


def finished_sliding_window(run: ModelRun, proposals_per_gt: int, precision: str = "fp32",
                            grid: str = DEFAULT_GRID) -> bool:
    """True when ``run.folder`` holds a finished sliding-window result of the same model, data, density, precision
    and grid (whatever its raw sample), which PCC reuses instead of scoring the windows again."""
    if not (run.folder / SLIDING_WINDOW_STATS_CSV).is_file():
        return False
    try:
        stored = stored_key(run.folder / OUTPUTS.summary)
    except DHError:
        return False
    wanted = sliding_window_key(run, proposals_per_gt, precision=precision, grid=grid)
    return stored is not None and not differences(stored, wanted, ignore=SAMPLE_ONLY)


def compute_sliding_window(
    run: ModelRun,
    *,
    proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT,
    batch_size: int = DEFAULT_BATCH_SIZE,
    raw_sample: int = 0,
    seed: int = 0,
    precision: str = "fp32",
    scoring: str = "fast",
    grid: str = DEFAULT_GRID,
    options: RunOptions = RunOptions(),
    overwrite: bool = False,
) -> Written | None:
    """Run (or resume) the sliding-window analysis of one model and write its files; rank 0 returns them.

    ``proposals_per_gt`` windows per box on the ``grid`` (`proposals.GRID_KINDS`); ``raw_sample`` random windows
    per box are also kept as raw rows (seeded by ``seed``); ``precision`` of the heads' matmuls (fp32, bf16) on the
    ``scoring`` path (fast: gather RoIAlign + matmul heads; reference: the model's own probe). Results of another
    key in the folder are refused unless ``overwrite``, which also starts this analysis again.
    """
    check_window_options(raw_sample, precision, scoring, grid)
    started = time.perf_counter()
    key = sliding_window_key(run, proposals_per_gt, raw_sample, seed, precision, grid)
    task = SlidingWindowTask(run.model, run.dataset.num_classes, batch_size, proposals_per_gt, raw_sample, seed,
                             fast=scoring == "fast", precision=precision, grid_kind=grid)
    merged = run_analysis(run, OUTPUTS, [task], key, options, overwrite)
    if merged is None:
        return None
    dataset = run.dataset
    cat_ids = [dataset.label_to_cat_id[k] for k in range(1, dataset.num_classes + 1)]
    state = merged.states.get(task.name) or task.new_state()
    stats = task.frame(state, run.name, cat_ids, list(dataset.category_names))
    written = write_table(stats, run.folder / SLIDING_WINDOW_STATS_CSV)
    if raw_sample > 0:
        parts = [task.raw_frame(rows, run.name, cat_ids) for rows in iter_rows(merged.chunk_dir, task.name,
                                                                               "raw_sample")]
        empty = torch.zeros(0, 8, dtype=torch.float64)
        raw = pd.concat(parts, ignore_index=True) if parts else task.raw_frame(empty, run.name, cat_ids)
        written += write_table(raw, run.folder / RAW_SAMPLE_CSV)
    boxes = int(merged.counts.get("boxes", 0))
    windows = int(state.counts.get("windows", 0))
    summary = write_summary(
        run, OUTPUTS, key, merged, started,
        heads=task.heads,
        images_without_boxes=int(merged.counts.get("images_without_boxes", 0)),
        boxes=boxes,
        crowd_boxes_skipped=int(merged.counts.get("crowd_boxes_skipped", 0)),
        proposals=windows,
        proposals_per_box=windows / boxes if boxes else 0.0,
        grid=grid_info(proposals_per_gt, grid),
        bin_edges=[b / NUM_BINS for b in range(NUM_BINS + 1)],
        bin_counts=bin_counts(stats),
        batch_size_final=task.batcher.size,
        scoring=scoring,
        precision=precision,
    )
    return Written(stats, summary, [*written, run.folder / OUTPUTS.summary])
