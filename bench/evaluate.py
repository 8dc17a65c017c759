"""Evaluation: every inference mode of a Double-Head-Ext model from one pass vs a single mode.

`DoubleHeadRCNN.predict_modes` runs backbone, RPN and both heads once and post-processes per mode; the ratio is the
price of the extra post-processing (score fusion, decoding, NMS per mode). The score threshold is set to 0 so NMS
sees every box (a random model's scores would otherwise all fall under 0.05 and NMS would cost nothing).
"""

from __future__ import annotations

import torch

from bench.common import interleaved, log
from bench.train import inputs
from dhanalysis.config import load_config
from dhanalysis.model import build_model
from dhanalysis.model.variants import applicable_modes


def run(device: str = "cpu", repeats: int = 3, proposals: int = 100) -> dict:
    """``{"all_modes_over_one_mode", ...}`` on one 384-pixel image with ``proposals`` RPN proposals."""
    cfg = load_config("configs/coco/r50/double-head-ext.yaml", [
        "model.num_classes=80", "model.backbone.name=resnet18", "model.min_size=384", "model.max_size=384",
        f"model.rpn.post_nms_top_n_test={proposals}", "model.score_thresh=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    images = inputs(device)[0][:1]
    modes = applicable_modes(cfg.model.variant, cfg.model.loss)
    one = [model.mode]
    t = interleaved({"one": lambda: model.predict_modes(images, one),
                     "all": lambda: model.predict_modes(images, modes)}, repeats=repeats)
    out = {"modes": modes, "proposals": proposals, "one_mode_s": t["one"]["best"], "all_modes_s": t["all"]["best"],
           "all_modes_over_one_mode": t["all"]["best"] / t["one"]["best"],
           "all_modes_over_one_mode_median": t["all"]["median"] / t["one"]["median"]}
    log(f"eval: {len(modes)} modes {out['all_modes_s']:.2f} s vs one mode {out['one_mode_s']:.2f} s "
        f"({out['all_modes_over_one_mode']:.2f}x)")
    return out
