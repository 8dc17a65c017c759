"""`dhanalysis detections` at COCO val2017 size against pycocotools' own evaluation and tidecv's, side by side.

  python -m bench.detections [--images 5000] [--dets-per-image 100] [--json PATH]

Generates COCO-like files (``--images`` images of 640 × 480, 80 classes in 12 supercategories, ~7.3 objects per
image with COCO's mix of sizes and 1% crowds; 100 detections per image: a jittered box on most objects, some with
another class, duplicates, and the rest background boxes of low score) and times, on the same files:

- ``pycocotools``: ``loadRes`` + ``COCOeval.evaluate()`` + ``accumulate()`` (what `dhanalysis eval` pays for AP);
- ``coco_match``: the same evaluation by `dhanalysis.analysis.coco_match` (reading the results into arrays included);
- ``tidecv``: loading both files + ``TIDE.evaluate()`` + its main and special errors;
- ``ours``: `dhanalysis.analysis.detections.compute_detections` without writing (every table: COCOeval matching and
  AP, TIDE, oracle rescoring, analyze(), alignment with ``--bootstrap`` replicates, calibration, LRP), reading the
  files.

Each is run once (they take minutes); peak memory (ru_maxrss) of the process is reported after each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def coco_like(images: int, dets_per_image: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    cats = [{"id": k + 1 + (k // 10), "name": f"class{k}", "supercategory": f"super{k % 12}"} for k in range(80)]
    cat_ids = np.array([c["id"] for c in cats])
    imgs, anns, dets = [], [], []
    for i in range(images):
        imgs.append({"id": i + 1, "width": 640, "height": 480, "file_name": f"{i:012d}.jpg"})
        n = rng.poisson(7.3)
        side = np.exp(rng.normal(3.9, 1.0, n)).clip(4, 460)  # 41% small, 34% medium, 25% large, as COCO
        w, h = side * rng.uniform(0.6, 1.4, n), side * rng.uniform(0.6, 1.4, n)
        w, h = w.clip(2, 630), h.clip(2, 470)
        x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
        cls = cat_ids[rng.integers(0, 80, n)]
        crowd = rng.random(n) < 0.01
        for j in range(n):
            box = [float(x[j]), float(y[j]), float(w[j]), float(h[j])]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(cls[j]), "bbox": box,
                         "area": float(w[j] * h[j] * 0.8), "iscrowd": int(crowd[j]),
                         "segmentation": [[x[j], y[j], x[j] + w[j], y[j], x[j] + w[j], y[j] + h[j], x[j],
                                           y[j] + h[j]]]})
        # detections: up to 4 per object (jittered, some wrong class), then background boxes
        per_obj = np.minimum(rng.poisson(2.5, n) + 1, 4)
        src = np.repeat(np.arange(n), per_obj)[:dets_per_image]
        k = len(src)
        jit = rng.normal(0, 0.12, (k, 4))
        bx = np.c_[x[src] + jit[:, 0] * w[src], y[src] + jit[:, 1] * h[src], w[src] * np.exp(jit[:, 2]),
                   h[src] * np.exp(jit[:, 3])]
        bc = np.where(rng.random(k) < 0.15, cat_ids[rng.integers(0, 80, k)], cls[src])
        bs = rng.beta(2, 2, k)
        m = dets_per_image - k
        side = np.exp(rng.normal(3.5, 1.0, m)).clip(4, 400)
        gx = np.c_[rng.uniform(0, 600, m), rng.uniform(0, 440, m), side, side * rng.uniform(0.5, 2, m)]
        boxes = np.r_[bx, gx].round(2)
        classes = np.r_[bc, cat_ids[rng.integers(0, 80, m)]]
        scores = np.r_[bs, rng.beta(1, 8, m)].round(5)
        dets += [{"image_id": i + 1, "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
                 for b, c, s in zip(boxes, classes, scores)]
    return {"images": imgs, "annotations": anns, "categories": cats}, dets


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_pycocotools(gt_path: Path, det_path: Path) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        start = time.perf_counter()
        ev = COCOeval(gt, gt.loadRes(str(det_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
    return time.perf_counter() - start


def time_coco_match(gt_path: Path, det_path: Path) -> float:
    """`coco_match.evaluate` (COCOeval vectorised) on the same files, timed like `time_pycocotools`: from the loaded
    ground truth, including reading the results into arrays (loadRes's share)."""
    from dhanalysis.analysis import coco_match

    gt = json.loads(gt_path.read_text())
    boxes = coco_match.ground_truth_boxes(gt)
    start = time.perf_counter()
    dets = json.loads(det_path.read_text())
    dt = coco_match.detection_boxes([d["image_id"] for d in dets], [d["category_id"] for d in dets],
                                    [d["bbox"] for d in dets], [d["score"] for d in dets])
    coco_match.evaluate(boxes, dt, [im["id"] for im in gt["images"]], [c["id"] for c in gt["categories"]])
    return time.perf_counter() - start


def time_tidecv(gt_path: Path, det_path: Path) -> float:
    import tidecv

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        tide = tidecv.TIDE()
        tide.evaluate(tidecv.datasets.COCO(str(gt_path)), tidecv.datasets.COCOResult(str(det_path), name="d"),
                      mode=tidecv.TIDE.BOX)
        tide.get_main_errors()
        tide.get_special_errors()
    return time.perf_counter() - start


def time_ours(gt_path: Path, det_path: Path, replicates: int) -> tuple[float, dict]:
    from dhanalysis.analysis.detections import compute_detections

    start = time.perf_counter()
    steps: list[tuple[str, float]] = []
    done = compute_detections(gt_path, det_path, replicates=replicates,
                              progress=lambda s: steps.append((s, time.perf_counter())))
    end = time.perf_counter()
    marks = [t for _, t in steps] + [end]
    return end - start, {"steps_s": {s: round(marks[i + 1] - t, 2) for i, (s, t) in enumerate(steps)},
                         "AP": done.summary["coco"]["AP"], "tide_ap50": done.summary["tide_ap50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets-per-image", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--skip-tidecv", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gt, dets = coco_like(args.images, args.dets_per_image)
        gt_path, det_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(gt))
        det_path.write_text(json.dumps(dets))
        out = {"images": args.images, "ground_truths": len(gt["annotations"]), "detections": len(dets),
               "bootstrap": args.bootstrap}
        del gt, dets
        out["pycocotools_s"] = time_pycocotools(gt_path, det_path)
        out["pycocotools_peak_mib"] = peak_mib()
        print(f"pycocotools evaluate + accumulate: {out['pycocotools_s']:.1f} s", flush=True)
        out["coco_match_s"] = time_coco_match(gt_path, det_path)
        out["coco_match_over_pycocotools"] = out["coco_match_s"] / out["pycocotools_s"]
        print(f"coco_match evaluate + accumulate: {out['coco_match_s']:.1f} s "
              f"({out['coco_match_over_pycocotools']:.3f} of pycocotools)", flush=True)
        out["ours_s"], out["ours"] = time_ours(gt_path, det_path, args.bootstrap)
        out["ours_peak_mib"] = peak_mib()
        print(f"dhanalysis detections (all tables): {out['ours_s']:.1f} s {out['ours']['steps_s']}", flush=True)
        if not args.skip_tidecv:
            out["tidecv_s"] = time_tidecv(gt_path, det_path)
            out["tidecv_peak_mib"] = peak_mib()
            print(f"tidecv evaluate + errors: {out['tidecv_s']:.1f} s", flush=True)
            out["ours_over_tidecv"] = out["ours_s"] / out["tidecv_s"]
        out["ours_over_pycocotools"] = out["ours_s"] / out["pycocotools_s"]
        print(json.dumps({k: v for k, v in out.items() if k != "ours"}, indent=1))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
