"""Pearson correlation between IoU and classification score (paper §3.2, Fig. 3, Fig. A.2).

Three sets of boxes, each giving (x, s) pairs per head that has a classifier:

- ``predefined``: the sliding-window proposals (§3.1). x = the window's IoU with its own ground-truth box, s = the
  head's probability of that box's class. From the statistics table (`stats.pcc_from_stats`), overall, per size
  group and, with a per-class AP table, per difficulty group.
- ``rpn``: the model's own RPN proposals (after its NMS and top-k, as at inference). x = the IoU with the
  best-matching ground-truth box of the image (any class), s = the head's probability of that box's class.
  The paper does not say what happens to proposals that touch no ground truth (IoU 0 with every box), so
  ``rpn_background`` (`RPN_BACKGROUND`) decides. ``"keep"`` (the default) keeps them with x = 0: they are most of
  what a classifier must reject, and dropping them would measure only the localised part of the range; their "best
  match", whose class is read, is the box with the nearest centre. ``"drop"`` leaves them out of the rpn set, so it
  holds only proposals that overlap an object (the detections are unaffected either way).
- ``detections``: the final detections after score threshold and NMS. x = the IoU with the best-matching ground
  truth *of the detected class* (0 when none overlaps), s = the detection score. Each head is read through an
  inference mode in which it classifies: the head's own mode (``fc``, ``conv``) when it also regresses, else
  ``fc-cls+conv-reg`` / ``conv-cls+fc-reg`` (recorded in the ``mode`` column).

Size groups of rpn / detection boxes follow COCOeval: a box that overlaps its matched ground truth takes that
box's group (annotation area); a box that overlaps none takes the group of its own area, in original pixels.
Crowd boxes are ignored, and images without a non-crowd box contribute nothing (there is no class to read).

Like the sliding-window statistics, rpn / detection PCCs are kept as streaming sums n, Σx, Σx², Σs, Σs², Σxs per
(head, set, class, size, IoU bin), so shards and chunks merge by addition (`stats.merge_stats`); the class is the one
whose score is read. Beside the sums, one object row per (ground truth, head, set) (`measures.object_values`) holds
what is measured among the boxes matched to that object; boxes that overlap no object go to one row per (class,
size) with ``box`` -1. Every set gets every alignment measure of `measures` in ``pcc.csv`` (column ``measure``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dhanalysis.metrics.groups import assign_difficulty, size_index
from dhanalysis.metrics.measures import (DEFAULT_POSITIVE_IOU, MEASURE_COLUMNS, MEASURE_REPLICATES, MEASURES,
                                          MEASURES_FORMAT, check_measure_format, measure_table, object_frame,
                                          object_row_tensor, object_values, positive_bin, score_bins)
from dhanalysis.stats.moments import NUM_BINS, PCC_MOMENTS
from dhanalysis.results import RESULTS
from dhanalysis.vocab import (DETECTIONS, DIFFICULTY_GROUPS, HEAD_TYPES, MODEL_PROPOSAL_SETS, PREDEFINED, PROPOSAL_SETS,
                              RPN_PROPOSALS, SIZE_GROUPS, find_mode)

if TYPE_CHECKING:  # the model side imports torch where it is used: pcc_table works on tables alone
    import torch

    from dhanalysis.probes.harness import ImageContext, TaskState

RPN_BACKGROUND = ("keep", "drop")  # what the rpn set does with proposals that overlap no ground truth
DEFAULT_RPN_BACKGROUND = "keep"
GROUPINGS = ("all", "size", "class", "difficulty")
PCC_STATS_COLUMNS = ("model", "head", "proposal_set", "mode", "category_id", "category", "size", "bin") + PCC_MOMENTS
PCC_KEYS = ("model", "head", "proposal_set", "grouping", "group", "mode")
PCC_COLUMNS = (*PCC_KEYS, *MEASURE_COLUMNS)


def detection_mode(model, head: str) -> str | None:
    """The inference mode whose detections show ``head``'s classifier (None when the head has no classifier)."""
    from dhanalysis.probes.scoring import head_tasks

    tasks = head_tasks(model)
    if not tasks.get(head, {}).get("cls"):
        return None
    regressors = [h for h in (head, *HEAD_TYPES) if tasks.get(h, {}).get("reg")]  # its own regressor first
    return find_mode(head, regressors[0]) if regressors else None


def match_any(boxes: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-matching ground truth of each box, any class: (IoU ``(R,)``, index ``(R,)``).

    Boxes that overlap no ground truth get IoU 0 and the ground truth with the nearest centre.
    """
    import torch
    from torchvision.ops import box_iou

    from dhanalysis.boxes import box_centres

    iou = box_iou(boxes, gt)
    best_iou, best = iou.max(dim=1)
    nearest = torch.cdist(box_centres(boxes), box_centres(gt)).argmin(dim=1)
    return best_iou, torch.where(best_iou > 0, best, nearest)


def match_same_class(boxes: torch.Tensor, labels: torch.Tensor, gt: torch.Tensor,
                     gt_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best-matching ground truth of the same class: (IoU ``(D,)``, index ``(D,)``; IoU 0 when none overlaps)."""
    from torchvision.ops import box_iou

    iou = box_iou(boxes, gt) * (labels[:, None] == gt_labels[None, :])
    return iou.max(dim=1) if len(gt) else (boxes.new_zeros(len(boxes)), labels.new_zeros(len(boxes)))


def match_size(iou: torch.Tensor, best: torch.Tensor, gt_size: torch.Tensor, boxes: torch.Tensor,
               area_scale: float) -> torch.Tensor:
    """Size index ``(R,)``: the matched box's group when it overlaps, else the box's own area × ``area_scale``."""
    import torch

    from dhanalysis.boxes import box_area

    own = size_index(box_area(boxes).double() * area_scale)
    return torch.where(iou > 0, gt_size[best], own)


def check_rpn_background(rpn_background: str) -> str:
    """``rpn_background`` when it is ``"keep"`` or ``"drop"``; else a one-line `DHError`."""
    if rpn_background not in RPN_BACKGROUND:
        from dhanalysis.errors import DHError

        raise DHError(f"unknown handling of RPN background {rpn_background!r}; choose one of: "
                      f"{', '.join(RPN_BACKGROUND)}")
    return rpn_background


class ProposalPCCTask:
    """Streaming sums and object rows of RPN proposals and final detections per head with a classifier (§3.2, Fig. 3
    right).

    ``rpn_background``: ``"keep"`` (default) puts RPN proposals that overlap no ground truth in the rpn set with
    x = 0; ``"drop"`` leaves them out (counted in ``rpn_background_dropped``). ``positive_iou``: the positives of the
    object rows. ``num_classes``: default the model config's.
    """

    name = "pcc"
    unit = "proposals"

    def __init__(self, model, batch_size: int, rpn_background: str = DEFAULT_RPN_BACKGROUND,
                 num_classes: int | None = None, positive_iou: float = DEFAULT_POSITIVE_IOU):
        from dhanalysis.probes.scoring import AdaptiveBatch, head_tasks

        self.rpn_background = check_rpn_background(rpn_background)
        self.model = model
        self.device = next(model.parameters()).device
        self.heads = [h for h, t in head_tasks(model).items() if t["cls"]]
        self.modes = {h: detection_mode(model, h) for h in self.heads}
        self.batcher = AdaptiveBatch(batch_size)
        self.num_classes = num_classes or model.config.model.num_classes
        self.first_positive = positive_bin(positive_iou)

    def new_state(self) -> TaskState:
        import torch

        from dhanalysis.probes.harness import TaskState

        cells = len(MODEL_PROPOSAL_SETS) * self.num_classes * len(SIZE_GROUPS) * NUM_BINS
        sums = torch.zeros(len(self.heads), cells, len(PCC_MOMENTS), dtype=torch.float64, device=self.device)
        return TaskState(sums={"pcc": sums}, rows={"objects": []},
                         counts={"rpn_proposals": 0, "rpn_background_dropped": 0, "detections": 0})

    def _add(self, state: TaskState, ctx: ImageContext, head: str, which: str, iou: torch.Tensor, best: torch.Tensor,
             labels: torch.Tensor, size: torch.Tensor, s: torch.Tensor) -> None:
        """Add boxes ``(R,)`` to the sums and the object rows: ``best`` their matched ground truth (used where
        ``iou`` > 0), ``labels`` the class whose score ``s`` is, ``size`` their size index."""
        import torch

        from dhanalysis.metrics.measures import moment_sums
        from dhanalysis.stats.moments import iou_bin

        h, k = self.heads.index(head), MODEL_PROPOSAL_SETS.index(which)
        groups = len(SIZE_GROUPS)
        b = iou_bin(iou)
        cell = ((k * self.num_classes + labels - 1) * groups + size) * NUM_BINS + b
        state.sums["pcc"][h] += moment_sums(cell, iou, s, state.sums["pcc"].shape[1])
        # object rows: the matched ground truths, then one background row per (class, size)
        objects = len(ctx.boxes)
        group = torch.where(iou > 0, best, objects + (labels - 1) * groups + size)
        count = objects + self.num_classes * groups
        values = object_values(group, iou, s, b >= self.first_positive, count, b)
        rest = torch.arange(self.num_classes * groups, device=iou.device)
        box = torch.cat([ctx.box_index, torch.full_like(rest, -1)])
        label = torch.cat([ctx.labels, rest // groups + 1])
        own = torch.cat([size_index(ctx.areas).long(), rest % groups])
        keep = values[:, 0] > 0
        state.rows["objects"].append(object_row_tensor(h, k, ctx.image_id, box[keep], label[keep], own[keep],
                                                       values[keep]))

    def process(self, ctx: ImageContext, state: TaskState) -> int:
        from dhanalysis.probes.scoring import score_boxes
        from dhanalysis.model.conventions import from_convention

        if not self.heads:
            return 0
        h, w = ctx.image_size
        area_scale = ctx.original_size[0] * ctx.original_size[1] / float(h * w)
        gt_size = size_index(ctx.areas)
        raw = self.model.rpn(ctx.image_list, ctx.features)[0][0]  # in the model's box convention
        convention = self.model.roi_heads.box_convention
        proposals = from_convention(raw, convention)  # COCO's frame, as the ground truth and `score_boxes`
        if len(proposals) == 0:
            return 0
        iou, best = match_any(proposals, ctx.boxes)
        rpn = proposals
        if self.rpn_background == "drop":
            overlaps = iou > 0
            state.count("rpn_background_dropped", int((~overlaps).sum()))
            rpn, iou, best = proposals[overlaps], iou[overlaps], best[overlaps]
        if len(rpn):
            size = match_size(iou, best, gt_size, rpn, area_scale)
            scored = score_boxes(self.model, ctx.features, ctx.image_size, rpn, ctx.labels[best], ctx.boxes[best],
                                 self.batcher)
            for head in self.heads:
                self._add(state, ctx, head, RPN_PROPOSALS, iou, best, ctx.labels[best], size, scored[head]["score"])
        state.count("rpn_proposals", len(proposals))

        modes = sorted({m for m in self.modes.values() if m})
        dets = self.model.roi_heads.detect(ctx.features, [raw], [ctx.image_size], modes) if modes else {}
        for head in self.heads:
            mode = self.modes[head]
            if mode is None:
                continue
            d = dict(dets[mode][0], boxes=from_convention(dets[mode][0]["boxes"], convention))
            iou_d, best_d = match_same_class(d["boxes"], d["labels"], ctx.boxes, ctx.labels)
            size_d = match_size(iou_d, best_d, gt_size, d["boxes"], area_scale)
            self._add(state, ctx, head, DETECTIONS, iou_d, best_d, d["labels"], size_d, d["scores"])
            state.count("detections", len(d["boxes"]))
        return len(proposals)

    def frame(self, state: TaskState, model_name: str, category_ids: list[int] | None = None,
              category_names: list[str] | None = None) -> pd.DataFrame:
        """The streaming-sum table (`PCC_STATS_COLUMNS`), one row per (head, set, class, size, bin) with boxes.

        ``category_ids[k]`` / ``category_names[k]`` describe class label k + 1 (default: the labels themselves).
        """
        category_ids = list(category_ids or range(1, self.num_classes + 1))
        category_names = list(category_names or (str(c) for c in category_ids))
        sums = state.sums["pcc"].detach().cpu().numpy()
        shape = (len(self.heads), len(MODEL_PROPOSAL_SETS), self.num_classes, len(SIZE_GROUPS), NUM_BINS)
        flat = sums.reshape(-1, len(PCC_MOMENTS))
        head_i, set_i, cat_i, size_i, bin_i = np.unravel_index(np.arange(len(flat)), shape)
        keep = flat[:, 0] > 0
        heads = np.asarray(self.heads, dtype=object)[head_i[keep]]
        sets = np.asarray(MODEL_PROPOSAL_SETS, dtype=object)[set_i[keep]]
        modes = [self.modes[h] or "" if s == DETECTIONS else "" for h, s in zip(heads, sets)]
        frame = pd.DataFrame({
            "model": model_name, "head": heads, "proposal_set": sets, "mode": np.asarray(modes, dtype=object),
            "category_id": np.asarray(category_ids, dtype=np.int64)[cat_i[keep]],
            "category": np.asarray(category_names, dtype=object)[cat_i[keep]],
            "size": np.asarray(SIZE_GROUPS, dtype=object)[size_i[keep]], "bin": bin_i[keep].astype(np.int64)})
        for j, name in enumerate(PCC_MOMENTS):
            frame[name] = flat[keep, j]
        frame["n"] = frame["n"].round().astype(np.int64)
        return frame[list(PCC_STATS_COLUMNS)].reset_index(drop=True)

    def objects(self, chunk_dir, model_name: str, category_ids: list[int],
                category_names: list[str]) -> pd.DataFrame:
        """The object rows of every finished chunk (`measures.OBJECT_COLUMNS` plus ``mode``)."""
        from dhanalysis.probes.harness import iter_rows

        parts = [object_frame(rows.numpy(), self.heads, MODEL_PROPOSAL_SETS, model_name, category_ids, category_names)
                 for rows in iter_rows(chunk_dir, self.name, "objects")]
        empty = object_frame(np.zeros((0, 0)), self.heads, MODEL_PROPOSAL_SETS, model_name, category_ids,
                             category_names)
        frame = pd.concat(parts, ignore_index=True) if parts else empty
        frame.insert(3, "mode", [self.modes[h] or "" if s == DETECTIONS else ""
                                 for h, s in zip(frame["head"], frame["proposal_set"])])
        return frame


def _keyed(table: pd.DataFrame | None, proposal_set: str | None = None) -> pd.DataFrame | None:
    """A bins or objects table with the columns every grouping reads (``proposal_set``, ``mode``)."""
    if table is None or not len(table):
        return None
    out = table.copy()
    if proposal_set is not None:
        out["proposal_set"] = proposal_set
    if "mode" not in out.columns:
        out["mode"] = ""
    out["mode"] = out["mode"].fillna("")
    return out


def pcc_table(stats: pd.DataFrame | None = None, pcc_stats: pd.DataFrame | None = None,
              difficulty: dict[int, str] | None = None, objects: pd.DataFrame | None = None,
              positive_iou: float = DEFAULT_POSITIVE_IOU, replicates: int = MEASURE_REPLICATES,
              seed: int = 0) -> pd.DataFrame:
    """The ``pcc.csv`` table (`PCC_COLUMNS`): one row per (model, head, proposal set, grouping, group, measure).

    ``stats``: the sliding-window statistics table (predefined set; groups all, size, class and, with
    ``difficulty`` (category_id -> easy/medium/hard), difficulty). ``pcc_stats``: the rpn / detection sums (groups
    all, size, class). ``objects``: the object rows of any sets (sliding_window_objects.csv, pcc_objects.csv): they
    add the per-object measures and the bootstrap intervals (``replicates`` draws of the images, ``seed``); without
    them only pooled, positive PCC and the decomposition are there. ``positive_iou`` must be the object rows'.
    """
    bins = [_keyed(score_bins(t), s) for t, s in ((stats, PREDEFINED), (pcc_stats, None)) if t is not None and len(t)]
    bins = pd.concat(bins, ignore_index=True) if bins else None
    objects = _keyed(objects)
    if bins is None and objects is None:
        return pd.DataFrame(columns=list(PCC_COLUMNS))
    base = ["model", "head", "proposal_set", "mode"]
    parts = []
    for grouping, column in (("all", None), ("size", "size"), ("class", "category"), ("difficulty", "difficulty")):
        b, o = bins, objects
        if grouping == "difficulty":
            if difficulty is None:
                continue
            b = assign_difficulty(b[b["proposal_set"] == PREDEFINED], difficulty) if b is not None else None
            o = assign_difficulty(o[o["proposal_set"] == PREDEFINED], difficulty) if o is not None else None
            b = b.dropna(subset=["difficulty"]) if b is not None else None
            o = o.dropna(subset=["difficulty"]) if o is not None else None
        by = base + ([column] if column else [])
        part = measure_table(b, o, by, positive_iou, replicates, seed)
        part = part.rename(columns={column: "group"}) if column else part.assign(group="all")
        parts.append(part.assign(grouping=grouping))
    table = pd.concat(parts, ignore_index=True)[list(PCC_COLUMNS)]
    classes = sorted(set(table.loc[table["grouping"] == "class", "group"]))
    order = {"all": ("all",), "size": SIZE_GROUPS, "class": classes, "difficulty": DIFFICULTY_GROUPS}
    table["_set"] = table["proposal_set"].map(PROPOSAL_SETS.index)
    table["_grouping"] = table["grouping"].map(GROUPINGS.index)
    table["_group"] = [order[k].index(g) for k, g in zip(table["grouping"], table["group"])]
    table["_head"] = [HEAD_TYPES.index(h) if h in HEAD_TYPES else len(HEAD_TYPES) for h in table["head"]]
    table["_measure"] = table["measure"].map(MEASURES.index)
    table = table.sort_values(["model", "_head", "_set", "_grouping", "_group", "_measure"], kind="stable")
    return table.drop(columns=["_head", "_set", "_grouping", "_group", "_measure"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ one model
OUTPUTS = RESULTS["pcc"]


def compute_pcc(
    run,
    *,
    proposals_per_gt: int | None = None,
    batch_size: int | None = None,
    raw_sample: int = 0,
    seed: int = 0,
    precision: str = "fp32",
    scoring: str = "fast",
    grid: str | None = None,
    rpn_background: str = DEFAULT_RPN_BACKGROUND,
    difficulty: dict[int, str] | None = None,
    difficulty_from: str | None = None,
    positive_iou: float = DEFAULT_POSITIVE_IOU,
    replicates: int = MEASURE_REPLICATES,
    options=None,
    overwrite: bool = False,
):
    """The PCC analysis of one loaded model (`runner.ModelRun`): its three proposal sets, written to ``pcc.csv``,
    ``pcc_stats.csv``, ``pcc_objects.csv`` and ``pcc_summary.json``; rank 0 returns them (`runner.Written`), other
    ranks None.

    The predefined set reuses the folder's sliding-window statistics and object rows when they were made with the
    same model, data, ``proposals_per_gt``, ``precision``, ``grid`` and ``positive_iou``, else computes them first
    (the window arguments are those of `sliding_window.compute_sliding_window`). ``difficulty`` (category id ->
    easy/medium/hard, `groups.load_difficulty` of the table ``difficulty_from``) adds the difficulty grouping.
    ``positive_iou`` sets the positives of the measures (`measures`), ``replicates`` the bootstrap draws of their
    intervals (0: none).
    """
    from dhanalysis.probes.proposals import DEFAULT_GRID, DEFAULT_PROPOSALS_PER_GT
    from dhanalysis.probes.harness import RunOptions, Written, run_tasks, write_summary
    from dhanalysis.probes.sliding_window import DEFAULT_BATCH_SIZE

    proposals_per_gt = DEFAULT_PROPOSALS_PER_GT if proposals_per_gt is None else proposals_per_gt
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    grid = grid or DEFAULT_GRID
    options = options or RunOptions()
    check_pcc_options(raw_sample, precision, scoring, grid, positive_iou, rpn_background, replicates)
    started = time.perf_counter()
    key = _claim_pcc_outputs(run, positive_iou, replicates, rpn_background, overwrite)
    stats, reused = _predefined_stats(run, proposals_per_gt=proposals_per_gt, batch_size=batch_size,
                                      raw_sample=raw_sample, seed=seed, precision=precision, scoring=scoring,
                                      grid=grid, positive_iou=positive_iou, options=options, overwrite=overwrite)
    task = ProposalPCCTask(run.model, batch_size, rpn_background, run.dataset.num_classes, positive_iou)
    merged = run_tasks(run, OUTPUTS, [task], key, options, overwrite)
    if merged is None:
        return None
    state = merged.states.get(task.name) or task.new_state()
    table, written = _write_pcc_tables(run, task, state, merged.chunk_dir, stats, difficulty, positive_iou,
                                       replicates)
    counts = {name: int(state.counts.get(name, 0))
              for name in ("rpn_proposals", "rpn_background_dropped", "detections")}
    summary = write_summary(run, OUTPUTS, key, merged, started, heads_with_classifier=task.heads,
                            detection_modes=task.modes, sliding_window_reused=reused,
                            proposals_per_gt=proposals_per_gt, grid=grid, rpn_background=rpn_background,
                            difficulty_from=difficulty_from, positive_iou=positive_iou,
                            bootstrap_replicates=replicates, **counts)
    return Written(table, summary, [*written, run.folder / OUTPUTS.summary])


def check_pcc_options(raw_sample: int, precision: str, scoring: str, grid: str, positive_iou: float,
                      rpn_background: str, replicates: int) -> None:
    """A one-line `DHError` for values the PCC analysis cannot run with, before anything is claimed or computed."""
    from dhanalysis.errors import DHError
    from dhanalysis.probes.sliding_window import check_window_options

    check_window_options(raw_sample, precision, scoring, grid, positive_iou)
    check_rpn_background(rpn_background)
    if replicates < 0:
        raise DHError(f"bootstrap replicates must be 0 or more, got {replicates}")


def _claim_pcc_outputs(run, positive_iou: float, replicates: int, rpn_background: str, overwrite: bool) -> dict:
    """Make the folder's PCC files this analysis's (`harness.claim_outputs`) and return their key: what the result
    depends on. Stored results in an older measures format are refused first unless ``overwrite``."""
    from dhanalysis.probes.harness import claim_outputs, stored_key

    if not overwrite:
        check_measure_format(stored_key(run.folder / OUTPUTS.summary), run.folder, OUTPUTS.what)
    key = {"analysis": OUTPUTS.analysis, "config": run.config, **run.data_key, "positive_iou": float(positive_iou),
           "replicates": int(replicates), "measures_format": MEASURES_FORMAT}
    if rpn_background != DEFAULT_RPN_BACKGROUND:  # absent at the default, so earlier results keep their identity
        key["rpn_background"] = rpn_background
    claim_outputs(run, OUTPUTS, key, overwrite)
    return key


def _predefined_stats(run, *, proposals_per_gt: int, batch_size: int, raw_sample: int, seed: int, precision: str,
                      scoring: str, grid: str, positive_iou: float, options,
                      overwrite: bool) -> tuple[pd.DataFrame | None, bool]:
    """``(the sliding-window statistics table, reused)``: the folder's own when a finished sliding-window result of
    the same windows is there (scoring ~14k windows per box again would be the slow half of the analysis), else
    computed now, which also writes the object rows PCC reads. The table is None on ranks other than 0."""
    from dhanalysis.probes.sliding_window import compute_sliding_window, finished_sliding_window
    from dhanalysis.vocab import SLIDING_WINDOW_STATS_CSV

    reused = not overwrite and finished_sliding_window(run, proposals_per_gt, precision, grid, positive_iou)
    if reused:
        return (pd.read_csv(run.folder / SLIDING_WINDOW_STATS_CSV) if run.rank == 0 else None), reused
    windows = compute_sliding_window(run, proposals_per_gt=proposals_per_gt, batch_size=batch_size,
                                     raw_sample=raw_sample, seed=seed, precision=precision, scoring=scoring,
                                     grid=grid, positive_iou=positive_iou, options=options, overwrite=overwrite)
    return (windows.table if windows is not None else None), reused


def _write_pcc_tables(run, task: ProposalPCCTask, state: TaskState, chunk_dir, stats: pd.DataFrame | None,
                      difficulty: dict[int, str] | None, positive_iou: float,
                      replicates: int) -> tuple[pd.DataFrame, list]:
    """Write ``pcc.csv`` (`pcc_table` of the three sets, the predefined one's object rows read from the folder's
    sliding-window result), ``pcc_stats.csv`` and ``pcc_objects.csv``; returns ``pcc.csv``'s table and the files
    written."""
    from dhanalysis.folders import write_table
    from dhanalysis.vocab import PCC_CSV, PCC_OBJECTS_CSV, PCC_STATS_CSV, SLIDING_WINDOW_OBJECTS_CSV

    dataset = run.dataset
    cat_ids = [dataset.label_to_cat_id[k] for k in range(1, dataset.num_classes + 1)]
    names = list(dataset.category_names)
    pcc_stats = task.frame(state, run.name, cat_ids, names)
    objects = task.objects(chunk_dir, run.name, cat_ids, names)
    window_objects = pd.read_csv(run.folder / SLIDING_WINDOW_OBJECTS_CSV, keep_default_na=False,
                                 na_values=[""]).assign(mode="")
    table = pcc_table(stats, pcc_stats, difficulty, pd.concat([window_objects, objects], ignore_index=True),
                      positive_iou, replicates)
    written = write_table(table, run.folder / PCC_CSV) + write_table(pcc_stats, run.folder / PCC_STATS_CSV)
    written += write_table(objects, run.folder / PCC_OBJECTS_CSV)
    return table, written
