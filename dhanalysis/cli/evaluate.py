"""COCO box AP of one or more checkpoints, every applicable inference mode in one pass.

  dhanalysis eval --ckpt checkpoints/synth-double-head-ext/model_final.pth --out results/synth-double-head-ext

  dhanalysis eval --ckpt model_final.pth --out results/x-before-nms --before-nms

Writes eval.csv (model, mode, AP, AP50, AP75, APs, APm, APl; AP values are fractions in [0, 1]), per_class_ap.csv
(model, mode, category_id, category, AP; the analyses rank class difficulty from it), evaluated_images.json (the
image ids AP was measured on), detections_<mode>.json (COCO results format, original category ids, each head's class
score as <head>_score) and eval_stage.json (the detections' stage, after_nms or before_nms, and the thresholds that
made them). With several --ckpt, each model's results go to OUT/<model name>/. A folder holding another model's
results (its config.json differs), or detections of the other stage, is refused without --overwrite.

--before-nms keeps every detection above the score threshold (model.score_thresh) and the small-box rule, with no
per-class NMS and no per-image top-k: several boxes per object, what the within-object measures of 'dhanalysis
detections' need. The AP of such a run is computed on those detections too (COCOeval keeps the 100 best per image and
class), so it is not the detector's AP.
"""

from __future__ import annotations

import argparse

from dhanalysis.flags import check_at_least
from dhanalysis.probes.flags import add_model_arguments, models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, workspace=False)
    parser.add_argument("--modes", default="all", help="comma-separated inference modes, or 'all' (default)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per forward (default 1, as the reference evaluations of torchvision, detectron2, "
                             "mmdetection and maskrcnn-benchmark run: a larger batch pads images to the largest, "
                             "which changes border features and the anchor grid of the padded levels)")
    parser.add_argument("--strict", action="store_true", help="fail on an undecodable image instead of skipping it")
    parser.add_argument("--before-nms", action="store_true",
                        help="write every mode's detections before the per-class NMS and the per-image top-k (score "
                             "threshold and small-box rule kept), for measures that need several boxes per object; "
                             "AP is then computed on them too")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from dhanalysis.engine.distributed import is_main
    from dhanalysis.engine.evaluate import evaluate
    from dhanalysis.model.variants import check_mode
    from dhanalysis.vocab import DETECTIONS_INFO_JSON, EVAL_CSV, PER_CLASS_AP_CSV
    from dhanalysis.folders import check_writable_folder
    from dhanalysis.model.checkpoint import check_model_names

    check_writable_folder(args.out or "results")  # before any model runs: results go under it
    check_model_names(args.ckpt, args.name)
    check_at_least(args, batch_size=1)
    modes = None if args.modes == "all" else [m.strip() for m in args.modes.split(",") if m.strip()]

    def check_modes(cfg) -> None:  # before any file is written
        for mode in modes or ():
            check_mode(cfg.model.variant, cfg.model.loss, mode)

    for model_run in models(args, strict=args.strict, skip_bad_images=not args.strict, check=check_modes):
        table, _ = evaluate(model_run.model, model_run.dataset, modes, model_run.device, args.batch_size,
                            args.max_images, model_run.folder, model_run.name, before_nms=args.before_nms,
                            overwrite=args.overwrite)
        if is_main():
            with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
                print(table.to_string(index=False))
            out = model_run.folder
            stage = ("before NMS (no per-class NMS, no per-image top-k); the AP above is of these detections, not the "
                     "detector's" if args.before_nms else "after NMS")
            print(f"wrote {out / EVAL_CSV}, {out / PER_CLASS_AP_CSV}, {out / DETECTIONS_INFO_JSON} and "
                  f"detections_<mode>.json: detections {stage}")
    return 0
