"""Metrics of any detector's results file (no model needed): what COCO's evaluation, TIDE, calibration and LRP say,
and how well the scores rank each object's boxes by fit, each with an image-bootstrap interval.

- `coco_match`: COCOeval's matching, accumulation and summary, vectorised (pycocotools' arrays, element by element):
  the package's one COCO box evaluation, read by `eval`, the study's bootstrap and `detections`;
- `resampled_ap`: COCO AP on bootstrap replicates of the evaluated images, from one `coco_match` matching;
- `detections`: the `detections` analysis of a results file: checks, matches, oracle AP, every table below;
- `measures`: the score-IoU alignment measures every box set gets (pooled and positives-only PCC, rank correlation
  within each object, the IoU lost at NMS, the pooled PCC's decomposition), also used by the model probes;
- `alignment`, `calibration`, `lrp`, `threshold_metrics`, `tide`, `coco_analyze`: score-IoU correlation, D-ECE /
  MCE / LaECE, oLRP, precision / recall / F1 / AR / confusion matrix, TIDE's and analyze()'s error breakdowns;
- `groups`: object groups: COCO size areas and class-difficulty terciles (App. A.1);
- `formats`: YOLO txt and Pascal VOC files as COCO structures, image and category ids matched or mapped;
- `replicates`, `compare`: every headline metric re-weighted per bootstrap replicate from one matching, so a detector
  gets intervals and two detectors a paired comparison with Holm.

Names are imported lazily.
"""

from __future__ import annotations

from dhanalysis.lazy import lazy_getattr

_EXPORTS = {
    "SIZE_GROUPS": "groups",
    "DIFFICULTY_GROUPS": "groups",
    "size_index": "groups",
    "difficulty_from_ap": "groups",
    "load_difficulty": "groups",
    "assign_difficulty": "groups",
    "compute_detections": "detections",
    "read_inputs": "detections",
    "tide_match": "tide",
    "tide_breakdown": "tide",
    "analyze_breakdown": "coco_analyze",
    "alignment_table": "alignment",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
