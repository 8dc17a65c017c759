"""The sliding-window analysis of one model (paper §3.1, Fig. 2): every head's score and regressed IoU for ~14,000
windows around each ground-truth box, kept as the sufficient statistics of ``sliding_window_stats.csv``.

`compute_sliding_window` takes a loaded model (`runner.ModelRun`) and plain values; it claims the model folder's
sliding-window files, runs `SlidingWindowTask` (the per-image work, scoring boxes with `scoring`) in resumable chunks
and writes the tables, then the summary.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from dhanalysis.metrics.groups import size_index
from dhanalysis.metrics.measures import (DEFAULT_POSITIVE_IOU, MEASURES_FORMAT, check_measure_format, object_frame,
                                          object_row_tensor, object_values, positive_bin)
from dhanalysis.probes.proposals import (DEFAULT_GRID, DEFAULT_PROPOSALS_PER_GT, check_grid_kind, grid_info,
                                           sliding_window_grid, sliding_window_proposals)
from dhanalysis.probes.harness import (ImageContext, ModelRun, RunOptions, TaskState, Written, iter_rows,
                                        run_analysis, stored_key, write_summary)
from dhanalysis.probes.scoring import (PRECISIONS, AdaptiveBatch, FastScorer, head_tasks, sample_per_box,
                                         score_boxes)
from dhanalysis.stats.moments import NUM_BINS, add_moments, cell_index, iou_bin, new_sums, stats_frame
from dhanalysis.errors import DHError
from dhanalysis.folders import differences, write_table
from dhanalysis.results import RESULTS
from dhanalysis.boxes import matched_iou
from dhanalysis.vocab import (PREDEFINED, RAW_SAMPLE_CSV, SIZE_GROUPS, SLIDING_WINDOW_OBJECTS_CSV,
                              SLIDING_WINDOW_STATS_CSV)

DEFAULT_BATCH_SIZE = 2048  # boxes per RoIAlign + head forward; halved on out-of-memory
SCORING = ("fast", "reference")
OUTPUTS = RESULTS["sliding-window"]
SAMPLE_ONLY = ("raw_sample", "seed")  # key entries that change raw_sample.csv only, not the statistics
RAW_COLUMNS = ("model", "head", "image_id", "box", "category_id", "size", "iou", "score", "reg_iou")


class SlidingWindowTask:
    """§3.1: score ~14k windows per ground-truth box and keep the sums of `stats.MOMENTS` per head and cell.

    ``raw_sample`` > 0 also keeps that many random windows per box as raw rows (seeded by ``seed`` and the image
    id, so shards and resumed runs draw the same rows). ``fast`` (default) scores with `FastScorer` in
    ``precision``; ``fast=False`` with the straightforward `score_boxes` (fp32 only), the reference of the tests.
    ``grid_kind`` picks the window grid (``"spiral"``, the default, or ``"sliding"``; see `proposals`).
    Per object and head with a classifier it also keeps one object row (`measures.object_values`: its moments, and
    the rank measures over its windows with IoU ≥ ``positive_iou``); ``object_measures=False`` leaves them out (the
    benchmark's baseline).
    """

    name = "sliding_window"
    unit = "proposals"

    def __init__(self, model, num_classes: int, batch_size: int, proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT,
                 raw_sample: int = 0, seed: int = 0, fast: bool = True, precision: str = "fp32",
                 grid_kind: str = DEFAULT_GRID, positive_iou: float = DEFAULT_POSITIVE_IOU,
                 object_measures: bool = True):
        if not fast and precision != "fp32":
            raise DHError(f"the reference scoring path (fast=False) runs in fp32 only, got precision {precision!r}; "
                          "score with the fast path for bf16")
        self.model = model
        self.heads = head_tasks(model)
        self.num_classes = num_classes
        self.device = next(model.parameters()).device
        self.grid_kind = grid_kind
        self.grid = sliding_window_grid(proposals_per_gt, self.device, grid_kind).float()
        self.batcher = AdaptiveBatch(batch_size)
        self.raw_sample, self.seed = raw_sample, seed
        self.scorer = FastScorer(model, precision) if fast else None
        self.first_positive = positive_bin(positive_iou)
        self.object_measures = object_measures

    def new_state(self) -> TaskState:
        sums = new_sums(len(self.heads), self.num_classes, self.device)
        return TaskState(sums={"stats": sums}, counts={"windows": 0}, rows={"raw_sample": [], "objects": []})

    def process(self, ctx: ImageContext, state: TaskState) -> int:
        windows, owner = sliding_window_proposals(ctx.boxes, ctx.image_size, grid=self.grid)
        if len(windows) == 0:  # every box collapsed to nothing at the image border
            return 0
        gt = ctx.boxes[owner]
        labels = ctx.labels[owner]
        x = matched_iou(windows, gt)
        if self.scorer is not None:
            scored = self.scorer.score(ctx.features, ctx.image_size, windows, labels, gt, self.batcher)
        else:
            scored = score_boxes(self.model, ctx.features, ctx.image_size, windows, labels, gt, self.batcher)
        size = size_index(ctx.areas)[owner]
        cell = cell_index(labels, size, x)
        for h, head in enumerate(self.heads):
            parts = scored.get(head, {})
            add_moments(state.sums["stats"][h], cell, x, parts.get("score"), parts.get("reg_iou"))
        state.count("windows", len(windows))
        if self.object_measures:
            self._object_rows(ctx, owner, labels, x, scored, state)
        if self.raw_sample > 0:
            state.rows["raw_sample"].append(self._raw_rows(ctx, owner, labels, size, x, scored))
        return len(windows)

    def _object_rows(self, ctx: ImageContext, owner: torch.Tensor, labels: torch.Tensor, x: torch.Tensor,
                     scored: dict, state: TaskState) -> None:
        """One object row per (box, head with a classifier): its windows' moments, rank measures and per-bin sums."""
        b = iou_bin(x)
        positive = b >= self.first_positive
        boxes = len(ctx.boxes)
        size = size_index(ctx.areas)
        for h, head in enumerate(self.heads):
            score = scored.get(head, {}).get("score")
            if score is None:
                continue
            values = object_values(owner, x, score, positive, boxes, b)
            state.rows["objects"].append(object_row_tensor(h, 0, ctx.image_id, ctx.box_index, ctx.labels, size,
                                                           values))

    def _raw_rows(self, ctx: ImageContext, owner: torch.Tensor, labels: torch.Tensor, size: torch.Tensor,
                  x: torch.Tensor, scored: dict) -> torch.Tensor:
        """``(k·H, 8)`` float64 rows: head index, image id, box, label, size index, iou, score, reg_iou (NaN: none)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + ctx.image_id) % (2**63))
        pick = sample_per_box(owner, self.raw_sample, g)
        rows = []
        nan = torch.full((len(pick),), math.nan, dtype=torch.float64, device=x.device)
        for h, head in enumerate(self.heads):
            parts = scored.get(head, {})
            cols = [torch.full_like(nan, h), torch.full_like(nan, ctx.image_id), ctx.box_index[owner[pick]].double(),
                    labels[pick].double(), size[pick].double(), x[pick].double(),
                    parts["score"][pick].double() if "score" in parts else nan,
                    parts["reg_iou"][pick].double() if "reg_iou" in parts else nan]
            rows.append(torch.stack(cols, dim=1))
        return torch.cat(rows).cpu()

    def frame(self, state: TaskState, model_name: str, category_ids: list[int],
              category_names: list[str]) -> pd.DataFrame:
        """The statistics table of a merged state (see `stats.STATS_COLUMNS`)."""
        return stats_frame(state.sums["stats"], list(self.heads), model_name, category_ids, category_names)

    def raw_frame(self, rows: torch.Tensor, model_name: str, category_ids: list[int]) -> pd.DataFrame:
        """Tidy raw rows (`RAW_COLUMNS`) from `_raw_rows` tensors."""
        a = rows.numpy()
        heads = np.asarray(list(self.heads), dtype=object)
        return pd.DataFrame({
            "model": model_name,
            "head": heads[a[:, 0].astype(np.int64)],
            "image_id": a[:, 1].astype(np.int64),
            "box": a[:, 2].astype(np.int64),
            "category_id": np.asarray(category_ids, dtype=np.int64)[a[:, 3].astype(np.int64) - 1],
            "size": np.asarray(SIZE_GROUPS, dtype=object)[a[:, 4].astype(np.int64)],
            "iou": a[:, 5], "score": a[:, 6], "reg_iou": a[:, 7],
        }, columns=list(RAW_COLUMNS))


def objects_table(chunk_dir, task, model_name: str, category_ids: list[int],
                  category_names: list[str]) -> pd.DataFrame:
    """The object rows of every finished chunk (`measures.OBJECT_COLUMNS`), streamed one chunk at a time."""
    parts = [object_frame(rows.numpy(), list(task.heads), [PREDEFINED], model_name, category_ids, category_names)
             for rows in iter_rows(chunk_dir, task.name, "objects")]
    empty = object_frame(np.zeros((0, 0)), list(task.heads), [PREDEFINED], model_name, category_ids, category_names)
    return pd.concat(parts, ignore_index=True) if parts else empty


def bin_counts(stats: pd.DataFrame) -> list[int]:
    """Windows per IoU bin (of the first head: every head scores the same windows)."""
    if stats.empty:
        return [0] * NUM_BINS
    first = stats[stats["head"] == stats["head"].iloc[0]]
    counts = first.groupby("bin")["n"].sum()
    return [int(counts.get(b, 0)) for b in range(NUM_BINS)]


def check_window_options(raw_sample: int = 0, precision: str = "fp32", scoring: str = "fast",
                         grid: str = DEFAULT_GRID, positive_iou: float = DEFAULT_POSITIVE_IOU) -> None:
    """A one-line `DHError` for values the analysis cannot run with, before any model is loaded."""
    check_grid_kind(grid)
    positive_bin(positive_iou)
    if raw_sample < 0:
        raise DHError(f"the raw sample must be 0 or more windows per box, got {raw_sample}")
    if precision not in PRECISIONS:
        raise DHError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if scoring not in SCORING:
        raise DHError(f"unknown scoring path {scoring!r}; choose one of: {', '.join(SCORING)}")
    if scoring == "reference" and precision != "fp32":
        raise DHError("the reference scoring path runs in fp32 only; use precision fp32 or the fast scoring path")


def sliding_window_key(run: ModelRun, proposals_per_gt: int, raw_sample: int = 0, seed: int = 0,
                       precision: str = "fp32", grid: str = DEFAULT_GRID,
                       positive_iou: float = DEFAULT_POSITIVE_IOU) -> dict:
    """What a sliding-window result depends on; ``raw_sample`` and ``seed`` only change raw_sample.csv.

    ``positive_iou`` is always there: a result without it predates the object rows, and ``measures_format``
    (`measures.MEASURES_FORMAT`) says which columns its object rows have (`check_measure_format`).

    ``precision`` enters only when it is not fp32 and ``grid`` only when it is not spiral, so default results keep
    the identity they had before the options existed; the scoring path (fast or reference) changes nothing beyond
    float32 rounding and is a run option.
    """
    key = {"analysis": OUTPUTS.analysis, "config": run.config, **run.data_key, "proposals_per_gt": proposals_per_gt,
           "raw_sample": raw_sample, "seed": seed, "positive_iou": float(positive_iou),
           "measures_format": MEASURES_FORMAT}
    if precision != "fp32":
        key["precision"] = precision
    if grid != DEFAULT_GRID:
        key["grid"] = grid
    return key


def finished_sliding_window(run: ModelRun, proposals_per_gt: int, precision: str = "fp32",
                            grid: str = DEFAULT_GRID, positive_iou: float = DEFAULT_POSITIVE_IOU) -> bool:
    """True when ``run.folder`` holds a finished sliding-window result of the same model, data, density, precision,
    grid and positive threshold (whatever its raw sample), which PCC reuses instead of scoring the windows again."""
    if not (run.folder / SLIDING_WINDOW_STATS_CSV).is_file():
        return False
    try:
        stored = stored_key(run.folder / OUTPUTS.summary)
    except DHError:
        return False
    wanted = sliding_window_key(run, proposals_per_gt, precision=precision, grid=grid, positive_iou=positive_iou)
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
    positive_iou: float = DEFAULT_POSITIVE_IOU,
    options: RunOptions = RunOptions(),
    overwrite: bool = False,
) -> Written | None:
    """Run (or resume) the sliding-window analysis of one model and write its files; rank 0 returns them.

    ``proposals_per_gt`` windows per box on the ``grid`` (`proposals.GRID_KINDS`); ``raw_sample`` random windows
    per box are also kept as raw rows (seeded by ``seed``); ``positive_iou`` sets the positives of the object rows
    (`measures`); ``precision`` of the heads' matmuls (fp32, bf16) on the
    ``scoring`` path (fast: gather RoIAlign + matmul heads; reference: the model's own probe). Results of another
    key in the folder are refused unless ``overwrite``, which also starts this analysis again.
    """
    check_window_options(raw_sample, precision, scoring, grid, positive_iou)
    started = time.perf_counter()
    if not overwrite:
        check_measure_format(stored_key(run.folder / OUTPUTS.summary), run.folder, OUTPUTS.what)
    key = sliding_window_key(run, proposals_per_gt, raw_sample, seed, precision, grid, positive_iou)
    task = SlidingWindowTask(run.model, run.dataset.num_classes, batch_size, proposals_per_gt, raw_sample, seed,
                             fast=scoring == "fast", precision=precision, grid_kind=grid, positive_iou=positive_iou)
    merged = run_analysis(run, OUTPUTS, [task], key, options, overwrite)
    if merged is None:
        return None
    state = merged.states.get(task.name) or task.new_state()
    stats, written = _write_window_tables(run, task, state, merged.chunk_dir)
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
        positive_iou=positive_iou,
    )
    return Written(stats, summary, [*written, run.folder / OUTPUTS.summary])


def _write_window_tables(run: ModelRun, task: SlidingWindowTask, state: TaskState,
                         chunk_dir) -> tuple[pd.DataFrame, list]:
    """Write the statistics table of the merged ``state``, the object rows and (when the task keeps one) the raw
    sample of the chunks in ``chunk_dir`` to the model folder; returns the statistics table, which the summary and
    PCC read, and the files written."""
    dataset = run.dataset
    cat_ids = [dataset.label_to_cat_id[k] for k in range(1, dataset.num_classes + 1)]
    stats = task.frame(state, run.name, cat_ids, list(dataset.category_names))
    written = write_table(stats, run.folder / SLIDING_WINDOW_STATS_CSV)
    written += write_table(objects_table(chunk_dir, task, run.name, cat_ids, list(dataset.category_names)),
                           run.folder / SLIDING_WINDOW_OBJECTS_CSV)
    if task.raw_sample > 0:
        written += write_table(raw_sample_table(chunk_dir, task, run.name, cat_ids), run.folder / RAW_SAMPLE_CSV)
    return stats, written


def raw_sample_table(chunk_dir, task: SlidingWindowTask, model_name: str, category_ids: list[int]) -> pd.DataFrame:
    """The raw sample rows of every finished chunk (`RAW_COLUMNS`); the columns alone when no chunk has any."""
    parts = [task.raw_frame(rows, model_name, category_ids) for rows in iter_rows(chunk_dir, task.name, "raw_sample")]
    empty = torch.zeros(0, 8, dtype=torch.float64)
    return pd.concat(parts, ignore_index=True) if parts else task.raw_frame(empty, model_name, category_ids)
