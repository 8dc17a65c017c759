"""Evaluation: every inference mode of a Double-Head-Ext model from one pass vs a single mode.

`DoubleHeadRCNN.predict_modes` runs backbone, RPN and both heads once and post-processes per mode; the ratio is the
price of the extra post-processing (score fusion, decoding, thresholding, NMS per mode). A random model's scores are
all near 1/81, under the 0.05 threshold, so NMS would cost nothing; two settings make it work:

- ``realistic`` (the target): the config's threshold 0.05 and a classifier sharpened ×30 so that, as for a trained
  model, a few classes per proposal pass it; 200 RPN proposals (the config uses 1000, which on a CPU would take
  minutes per call and only make the ratio smaller);
- ``worst_case``: threshold 0, so every (proposal, class) pair reaches NMS, with 100 proposals: post-processing at its
  heaviest relative to the heads.
"""

from __future__ import annotations

import torch

from bench.common import interleaved, log, paired_ratio
from bench.train import inputs
from dhanalysis.config import load_config
from dhanalysis.model import build_model
from dhanalysis.model.variants import applicable_modes


def measure(device: str, repeats: int, proposals: int, score_thresh: float, sharpen: float) -> dict:
    cfg = load_config("configs/coco/r50/double-head-ext.yaml", [
        "model.num_classes=80", "model.backbone.name=resnet18", "model.min_size=384", "model.max_size=384",
        f"model.rpn.post_nms_top_n_test={proposals}", f"model.score_thresh={score_thresh}"])
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    with torch.no_grad():
        for branch in model.roi_heads.branches.values():
            if branch.predictor.cls_score is not None:
                branch.predictor.cls_score.weight.mul_(sharpen)
    images = inputs(device)[0][:1]
    modes = applicable_modes(cfg.model.variant, cfg.model.loss)
    one = [model.mode]
    detections = model.predict_modes(images, modes)
    t = interleaved({"one": lambda: model.predict_modes(images, one),
                     "all": lambda: model.predict_modes(images, modes)}, repeats=repeats)
    return {"modes": modes, "proposals": proposals, "score_thresh": score_thresh, "classifier_sharpened": sharpen,
            "detections_per_mode": {m: len(d[0]["boxes"]) for m, d in detections.items()},
            "one_mode_s": t["one"]["best"], "all_modes_s": t["all"]["best"],
            "all_modes_over_one_mode": paired_ratio(t, "all", "one"),
            "all_modes_over_one_mode_of_best": t["all"]["best"] / t["one"]["best"]}


def run(device: str = "cpu", repeats: int = 3) -> dict:
    """``{"all_modes_over_one_mode" (realistic), "realistic": {...}, "worst_case": {...}}``."""
    realistic = measure(device, repeats, proposals=200, score_thresh=0.05, sharpen=30.0)
    worst = measure(device, repeats, proposals=100, score_thresh=0.0, sharpen=1.0)
    for name, r in (("realistic", realistic), ("worst case", worst)):
        log(f"eval {name}: {len(r['modes'])} modes {r['all_modes_s']:.2f} s vs one mode {r['one_mode_s']:.2f} s "
            f"(paired {r['all_modes_over_one_mode']:.2f}x; detections/mode {max(r['detections_per_mode'].values())})")
    return {"all_modes_over_one_mode": realistic["all_modes_over_one_mode"], "realistic": realistic,
            "worst_case": worst, "modes": realistic["modes"]}
