"""The study's AP on bootstrap replicates: every replicate at once against one replicate at a time.

  python -m bench.replicates [--replicates 4000] [--repeats 3]
  python -m bench.replicates --quick   # 40 images, 50 replicates: a smoke test, not numbers

The findings recompute each run's COCO AP on every bootstrap replicate of the test images and every seed
(`study.evidence.Evidence.ap`, 4,000 replicates), and the regime's standard errors do the same on val (500).
`CocoMatches.ap` accumulates one replicate (its drawn images' detections, sorted, read by the COCOeval accumulation);
`CocoMatches.ap_replicates` weighs each detection by its image's draw count and accumulates every replicate at once,
to the same bits. Both run on one results file the size of the study's (300 images, 6 classes, about 10 detections
per image: `bench.detections.coco_like`'s generator, its 80 classes folded onto 6), interleaved; the row says whether
the two agree exactly.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bench.common import interleaved, log, paired_ratio
from bench.detections import coco_like
from dhanalysis.metrics.resampled_ap import CocoMatches
from dhanalysis.stats.bootstrap import positions_of, replicate_counts

QUICK = {"images": 40, "replicates": 50}
FULL = {"images": 300, "replicates": 4000}
CLASSES, DETS_PER_IMAGE = 6, 10


def study_sized(images: int, seed: int = 0) -> CocoMatches:
    """One matching of a generated results file: ``images`` images, `CLASSES` classes."""
    gt, dets = coco_like(images, DETS_PER_IMAGE, seed)
    fold = {c["id"]: k % CLASSES + 1 for k, c in enumerate(gt["categories"])}
    gt = {**gt, "categories": [{"id": k + 1, "name": f"class{k}"} for k in range(CLASSES)],
          "annotations": [{**a, "category_id": fold[a["category_id"]]} for a in gt["annotations"]]}
    dets = [{**d, "category_id": fold[d["category_id"]]} for d in dets]
    return CocoMatches.from_results(gt, dets, [im["id"] for im in gt["images"]])


def run(repeats: int = 3, quick: bool = False, replicates: int | None = None) -> dict:
    """``{"images", "replicates", "one_at_a_time_s", "all_at_once_s", "speedup", "equal"}``."""
    size = QUICK if quick else FULL
    replicates = replicates or size["replicates"]
    matches = study_sized(size["images"])
    counts = replicate_counts(size["images"], replicates, seed=0)
    results = {}

    def one_at_a_time():
        results["loop"] = np.array([matches.ap(positions_of(row)) for row in counts])

    def all_at_once():
        results["vector"] = matches.ap_replicates(counts)

    t = interleaved({"one_at_a_time": one_at_a_time, "all_at_once": all_at_once}, repeats=repeats)
    out = {"images": size["images"], "classes": CLASSES, "detections": int(len(matches.score)),
           "replicates": replicates, "one_at_a_time_s": t["one_at_a_time"]["best"],
           "all_at_once_s": t["all_at_once"]["best"], "speedup": paired_ratio(t, "one_at_a_time", "all_at_once"),
           "equal": bool(np.array_equal(results["loop"], results["vector"]))}
    log(f"replicate AP: {replicates} replicates of {out['images']} images, one at a time {out['one_at_a_time_s']:.2f}"
        f" s, all at once {out['all_at_once_s']:.2f} s ({out['speedup']:.2f}x), equal to the bit: {out['equal']}")
    return out


def rows(r: dict) -> list[str]:
    """The summary table's row."""
    return [f"| replicate AP ({r['replicates']} replicates, {r['images']} images): s one at a time / all at once | "
            f"{r['one_at_a_time_s']:.2f} / {r['all_at_once_s']:.2f} (paired speed-up {r['speedup']:.2f}x, equal: "
            f"{'yes' if r['equal'] else 'NO'}) | | |"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicates", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not numbers")
    parser.add_argument("--replicates", type=int, default=None, help="bootstrap replicates (default 4000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args(argv)
    print(json.dumps(run(repeats=args.repeats, quick=args.quick, replicates=args.replicates), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
