"""The analyses of §3: sliding-window proposals, streaming statistics, PCC, spatial correlation.

Modules, from the boxes up:

- `proposals`: the sliding-window grids (spiral, the default, or sliding) around each ground-truth box (§3.1);
- `scoring`: every head's score of the true class and regressed IoU for boxes we choose; the sliding-window task;
- `stats`: the sufficient-statistics table and what follows from it (mean ± std per bin, PCC, merging);
- `groups`: size groups (COCO areas) and difficulty groups (terciles of per-class AP, App. A.1);
- `sliding_window`: the sliding-window analysis of one model, from windows to ``sliding_window_stats.csv``;
- `pcc`: PCC definitions for predefined, RPN and detected boxes (§3.2, Fig. 3), the ``pcc.csv`` table, the analysis;
- `measures`: the score-IoU alignment measures every box set gets (pooled and positives-only PCC, rank correlation
  within each object, the IoU lost at NMS, the pooled PCC's decomposition), with bootstrap intervals over images;
- `spatial`: spatial correlation of head outputs and fc6 weights (§3.4, Fig. 4), the analysis;
- `detections`, `alignment`, `calibration`, `lrp`, `tide`, `coco_analyze`: any detector's COCO results file (no
  model): COCOeval's matches, score-IoU alignment, oracle AP, calibration errors (D-ECE, MCE, LaECE), oLRP, TIDE's
  and COCO analyze()'s error breakdowns; `formats`: reading YOLO txt and Pascal VOC files into COCO structures, and
  mapping image and category ids; `replicates` and `compare`: every headline metric re-weighted per image-bootstrap
  replicate from one matching, so a detector gets intervals and two detectors a paired comparison with Holm;
- `runner`: loading models and claiming their results folders, streaming over a dataset in resumable chunks,
  sharded over torchrun ranks.

From Python, an analysis is ``for run in load_models([ckpt]): compute_pcc(run, ...)``: plain values, no flags.

Names are imported lazily, so reading result tables (`stats`, `groups`, `pcc.pcc_table`) does not import torch.
"""

from __future__ import annotations

from dhanalysis.lazy import lazy_getattr

_EXPORTS = {
    "sliding_window_grid": "proposals",
    "sliding_window_proposals": "proposals",
    "grid_shape": "proposals",
    "grid_info": "proposals",
    "GRID_KINDS": "proposals",
    "head_tasks": "scoring",
    "score_boxes": "scoring",
    "AdaptiveBatch": "scoring",
    "SlidingWindowTask": "sliding_window",
    "STATS_COLUMNS": "stats",
    "stats_frame": "stats",
    "merge_stats": "stats",
    "bin_summary": "stats",
    "pcc_from_stats": "stats",
    "pcc_from_moments": "stats",
    "SIZE_GROUPS": "groups",
    "DIFFICULTY_GROUPS": "groups",
    "size_index": "groups",
    "difficulty_from_ap": "groups",
    "load_difficulty": "groups",
    "assign_difficulty": "groups",
    "PCC_COLUMNS": "pcc",
    "ProposalPCCTask": "pcc",
    "RPN_BACKGROUND": "pcc",
    "detection_mode": "pcc",
    "pcc_table": "pcc",
    "cell_cosine": "spatial",
    "fc_cell_outputs": "spatial",
    "fc_weight_correlation": "spatial",
    "SpatialTask": "spatial",
    "spatial_frame": "spatial",
    "compute_pcc": "pcc",
    "compute_spatial_corr": "spatial",
    "compute_sliding_window": "sliding_window",
    "compute_detections": "detections",
    "read_inputs": "detections",
    "tide_match": "tide",
    "tide_breakdown": "tide",
    "analyze_breakdown": "coco_analyze",
    "alignment_table": "alignment",
    "RunOptions": "runner",
    "ModelRun": "runner",
    "load_models": "runner",
    "finished_runs": "runner",
    "analyse": "runner",
    "merge_chunks": "runner",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
