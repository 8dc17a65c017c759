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
(head, set, size), so shards and chunks merge by addition (`stats.merge_stats`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dhanalysis.analysis.groups import assign_difficulty, size_index
from dhanalysis.analysis.stats import PCC_MOMENTS, pcc_from_moments, pcc_from_stats
from dhanalysis.results import RESULTS
from dhanalysis.vocab import (DETECTIONS, DIFFICULTY_GROUPS, HEAD_TYPES, MODEL_PROPOSAL_SETS, PREDEFINED, PROPOSAL_SETS,
                              RPN_PROPOSALS, SIZE_GROUPS, find_mode)

if TYPE_CHECKING:  # the model side imports torch where it is used: pcc_table works on tables alone
    import torch

    from dhanalysis.analysis.runner import ImageContext, TaskState

RPN_BACKGROUND = ("keep", "drop")  # what the rpn set does with proposals that overlap no ground truth
DEFAULT_RPN_BACKGROUND = "keep"
GROUPINGS = ("all", "size", "difficulty")
PCC_STATS_COLUMNS = ("model", "head", "proposal_set", "mode", "size") + PCC_MOMENTS
PCC_COLUMNS = ("model", "head", "proposal_set", "grouping", "group", "mode", "n", "pcc")


def detection_mode(model, head: str) -> str | None:
    """The inference mode whose detections show ``head``'s classifier (None when the head has no classifier)."""
    from dhanalysis.analysis.scoring import head_tasks

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


def _moments(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    import torch

    x, s = x.double(), s.double()
    return torch.stack([torch.ones_like(x), x, x * x, s, s * s, x * s], dim=1)


def check_rpn_background(rpn_background: str) -> str:
    """``rpn_background`` when it is ``"keep"`` or ``"drop"``; else a one-line `DHError`."""
    if rpn_background not in RPN_BACKGROUND:
        from dhanalysis.errors import DHError

        raise DHError(f"unknown handling of RPN background {rpn_background!r}; choose one of: "
                      f"{', '.join(RPN_BACKGROUND)}")
    return rpn_background


class ProposalPCCTask:
    """Streaming PCC sums of RPN proposals and final detections per head with a classifier (§3.2, Fig. 3 right).

    ``rpn_background``: ``"keep"`` (default) puts RPN proposals that overlap no ground truth in the rpn set with
    x = 0; ``"drop"`` leaves them out (counted in ``rpn_background_dropped``).
    """

    name = "pcc"
    unit = "proposals"

    def __init__(self, model, batch_size: int, rpn_background: str = DEFAULT_RPN_BACKGROUND):
        from dhanalysis.analysis.scoring import AdaptiveBatch, head_tasks

        self.rpn_background = check_rpn_background(rpn_background)
        self.model = model
        self.device = next(model.parameters()).device
        self.heads = [h for h, t in head_tasks(model).items() if t["cls"]]
        self.modes = {h: detection_mode(model, h) for h in self.heads}
        self.batcher = AdaptiveBatch(batch_size)

    def new_state(self) -> TaskState:
        import torch

        from dhanalysis.analysis.runner import TaskState

        sums = torch.zeros(len(self.heads), len(MODEL_PROPOSAL_SETS) * len(SIZE_GROUPS), len(PCC_MOMENTS),
                           dtype=torch.float64, device=self.device)
        return TaskState(sums={"pcc": sums}, counts={"rpn_proposals": 0, "rpn_background_dropped": 0, "detections": 0})

    def _add(self, state: TaskState, head: str, which: str, size: torch.Tensor, x: torch.Tensor,
             s: torch.Tensor) -> None:
        cell = MODEL_PROPOSAL_SETS.index(which) * len(SIZE_GROUPS) + size
        state.sums["pcc"][self.heads.index(head)].index_add_(0, cell, _moments(x, s))

    def process(self, ctx: ImageContext, state: TaskState) -> int:
        from dhanalysis.analysis.scoring import score_boxes
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
                self._add(state, head, RPN_PROPOSALS, size, iou, scored[head]["score"])
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
            self._add(state, head, DETECTIONS, size_d, iou_d, d["scores"])
            state.count("detections", len(d["boxes"]))
        return len(proposals)

    def frame(self, state: TaskState, model_name: str) -> pd.DataFrame:
        """The streaming-sum table (`PCC_STATS_COLUMNS`), one row per (head, set, size) with boxes."""
        sums = state.sums["pcc"].detach().cpu().numpy()
        rows = []
        for hi, head in enumerate(self.heads):
            for si, which in enumerate(MODEL_PROPOSAL_SETS):
                for gi, group in enumerate(SIZE_GROUPS):
                    m = sums[hi, si * len(SIZE_GROUPS) + gi]
                    if m[0] == 0:
                        continue
                    mode = self.modes[head] if which == DETECTIONS else ""
                    rows.append([model_name, head, which, mode, group, int(round(m[0])), *m[1:]])
        frame = pd.DataFrame(rows, columns=list(PCC_STATS_COLUMNS))
        return frame.astype({"n": np.int64})


def _with_group(frame: pd.DataFrame, proposal_set: str, grouping: str, group_col: str | None) -> pd.DataFrame:
    out = frame.rename(columns={group_col: "group"}) if group_col else frame.assign(group="all")
    out = out.assign(proposal_set=proposal_set, grouping=grouping)
    if "mode" not in out.columns:
        out["mode"] = ""
    return out[list(PCC_COLUMNS)]


def _streamed_pcc(pcc_stats: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    g = pcc_stats.groupby(by, sort=True, as_index=False)[list(PCC_MOMENTS)].sum()
    g["pcc"] = pcc_from_moments(g["n"], g["sum_x"], g["sum_x2"], g["sum_s"], g["sum_s2"], g["sum_xs"])
    return g[by + ["n", "pcc"]]


def pcc_table(stats: pd.DataFrame | None = None, pcc_stats: pd.DataFrame | None = None,
              difficulty: dict[int, str] | None = None) -> pd.DataFrame:
    """The ``pcc.csv`` table (`PCC_COLUMNS`): one row per (model, head, proposal set, grouping, group).

    ``stats``: the sliding-window statistics table (predefined set; groups all, size and, with ``difficulty``
    (category_id -> easy/medium/hard), difficulty). ``pcc_stats``: the rpn / detection sums (groups all, size).
    """
    parts = []
    if stats is not None and len(stats):
        parts.append(_with_group(pcc_from_stats(stats, ["model", "head"]), PREDEFINED, "all", None))
        parts.append(_with_group(pcc_from_stats(stats, ["model", "head", "size"]), PREDEFINED, "size", "size"))
        if difficulty is not None:
            ranked = assign_difficulty(stats, difficulty)
            by_difficulty = pcc_from_stats(ranked, ["model", "head", "difficulty"])
            parts.append(_with_group(by_difficulty, PREDEFINED, "difficulty", "difficulty"))
    if pcc_stats is not None and len(pcc_stats):
        base = ["model", "head", "proposal_set", "mode"]
        for grouping, by in (("all", base), ("size", base + ["size"])):
            g = _streamed_pcc(pcc_stats.fillna({"mode": ""}), by)
            g = g.rename(columns={"size": "group"}) if grouping == "size" else g.assign(group="all")
            parts.append(g.assign(grouping=grouping)[list(PCC_COLUMNS)])
    if not parts:
        return pd.DataFrame(columns=list(PCC_COLUMNS))
    table = pd.concat(parts, ignore_index=True)
    order = {"all": ("all",), "size": SIZE_GROUPS, "difficulty": DIFFICULTY_GROUPS}
    table["_set"] = table["proposal_set"].map(PROPOSAL_SETS.index)
    table["_grouping"] = table["grouping"].map(GROUPINGS.index)
    table["_group"] = [order[k].index(g) for k, g in zip(table["grouping"], table["group"])]
    table["_head"] = [HEAD_TYPES.index(h) if h in HEAD_TYPES else len(HEAD_TYPES) for h in table["head"]]
    table = table.sort_values(["model", "_head", "_set", "_grouping", "_group"], kind="stable")
    return table.drop(columns=["_head", "_set", "_grouping", "_group"]).reset_index(drop=True)


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
    options=None,
    overwrite: bool = False,
):
    """The PCC analysis of one loaded model (`runner.ModelRun`): its three proposal sets, written to ``pcc.csv``,
    ``pcc_stats.csv`` and ``pcc_summary.json``; rank 0 returns them (`runner.Written`), other ranks None.

    The predefined set reuses the folder's sliding-window statistics when they were made with the same model, data,
    ``proposals_per_gt``, ``precision`` and ``grid``, else computes them first (the window arguments are those of
    `sliding_window.compute_sliding_window`). ``difficulty`` (category id -> easy/medium/hard, `groups.load_difficulty`
    of the table ``difficulty_from``) adds the difficulty grouping.
    """
    import time

    from dhanalysis.analysis.proposals import DEFAULT_GRID, DEFAULT_PROPOSALS_PER_GT
    from dhanalysis.analysis.runner import RunOptions, Written, claim_outputs, run_tasks, write_summary
    from dhanalysis.analysis.sliding_window import (DEFAULT_BATCH_SIZE, check_window_options, compute_sliding_window,
                                                    finished_sliding_window)
    from dhanalysis.folders import write_table
    from dhanalysis.vocab import PCC_CSV, PCC_STATS_CSV, SLIDING_WINDOW_STATS_CSV

    proposals_per_gt = DEFAULT_PROPOSALS_PER_GT if proposals_per_gt is None else proposals_per_gt
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    grid = grid or DEFAULT_GRID
    options = options or RunOptions()
    check_window_options(raw_sample, precision, scoring, grid)
    check_rpn_background(rpn_background)
    started = time.perf_counter()
    outputs = OUTPUTS
    key = {"analysis": outputs.analysis, "config": run.config, **run.data_key}
    if rpn_background != DEFAULT_RPN_BACKGROUND:  # absent at the default, so earlier results keep their identity
        key["rpn_background"] = rpn_background
    claim_outputs(run, outputs, key, overwrite)

    reused = not overwrite and finished_sliding_window(run, proposals_per_gt, precision, grid)
    if reused:
        stats = pd.read_csv(run.folder / SLIDING_WINDOW_STATS_CSV) if run.rank == 0 else None
    else:
        windows = compute_sliding_window(run, proposals_per_gt=proposals_per_gt, batch_size=batch_size,
                                         raw_sample=raw_sample, seed=seed, precision=precision, scoring=scoring,
                                         grid=grid, options=options, overwrite=overwrite)
        stats = windows.table if windows is not None else None

    task = ProposalPCCTask(run.model, batch_size, rpn_background)
    merged = run_tasks(run, outputs, [task], key, options, overwrite)
    if merged is None:
        return None
    state = merged.states.get(task.name) or task.new_state()
    pcc_stats = task.frame(state, run.name)
    table = pcc_table(stats, pcc_stats, difficulty)
    written = write_table(table, run.folder / PCC_CSV) + write_table(pcc_stats, run.folder / PCC_STATS_CSV)
    summary = write_summary(
        run, outputs, key, merged, started,
        heads_with_classifier=task.heads,
        detection_modes=task.modes,
        sliding_window_reused=reused,
        proposals_per_gt=proposals_per_gt,
        grid=grid,
        rpn_background=rpn_background,
        difficulty_from=difficulty_from,
        rpn_proposals=int(state.counts.get("rpn_proposals", 0)),
        rpn_background_dropped=int(state.counts.get("rpn_background_dropped", 0)),
        detections=int(state.counts.get("detections", 0)),
    )
    return Written(table, summary, [*written, run.folder / outputs.summary])
