"""Statistics, torch-free: what every estimate and interval of the package rests on.

- `moments`: streaming sufficient statistics per IoU bin (count, sums, cross sums) and what follows from them (mean ±
  std per bin, PCC, merging shards), so that any number of boxes is summarised in a few rows;
- `bootstrap`: resampling images (one draw shared by every model and seed), percentile intervals, the crossed
  seed × image t interval and Holm's rule.

Names are imported lazily, so reading a table does not pay for scipy.
"""

from __future__ import annotations

from dhanalysis.lazy import lazy_getattr

_EXPORTS = {
    "STATS_COLUMNS": "moments",
    "stats_frame": "moments",
    "merge_stats": "moments",
    "bin_summary": "moments",
    "pcc_from_stats": "moments",
    "pcc_from_moments": "moments",
    "interval": "bootstrap",
    "replicate_counts": "bootstrap",
    "holm": "bootstrap",
    "seed_image_t": "bootstrap",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
