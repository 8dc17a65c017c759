"""Probes of a model, the analyses of §3: sliding-window proposals, PCC, spatial correlation, qualitative cases.

Modules, from the boxes up:

- `proposals`: the sliding-window grids (spiral, the default, or sliding) around each ground-truth box (§3.1);
- `scoring`, `fast_heads`: every head's score of the true class and regressed IoU for boxes we choose;
- `sliding_window`: the sliding-window analysis of one model, from windows to ``sliding_window_stats.csv``;
- `pcc`: PCC definitions for predefined, RPN and detected boxes (§3.2, Fig. 3), the ``pcc.csv`` table, the analysis;
- `spatial`: spatial correlation of head outputs and fc6 weights (§3.4, Fig. 4), the analysis;
- `qualitative`, `architecture`: where the heads disagree (Figs. A.4-A.5), the conv-head's blocks (Fig. 5);
- `figure_tables`: the tables the figures draw, derived from a results tree;
- `harness`: loading models and claiming their results folders, streaming over a dataset in resumable chunks,
  sharded over torchrun ranks.

The statistics they write are `dhanalysis.stats`'; the alignment measures `dhanalysis.metrics.measures`'. From
Python, an analysis is ``for run in load_models([ckpt]): compute_pcc(run, ...)``: plain values, no flags. Names are
imported lazily, so reading result tables (`pcc.pcc_table`) does not import torch.
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
    "RunOptions": "harness",
    "ModelRun": "harness",
    "load_models": "harness",
    "finished_runs": "harness",
    "analyse": "harness",
    "merge_chunks": "harness",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
