"""Evaluation engines and whole analyses of one detector's results, side by side on COCO val2017-sized files.

  python -m bench.detections [--images 5000] [--dets-per-image 100] [--bootstrap 1000] [--repeats 1] [--json PATH]
  python -m bench.detections --quick   # 12 images, 20 replicates: a smoke test of the harness (seconds), not numbers
  python -m bench --quick              # this section among the others, at the same quick size

Generates COCO-like files (``--images`` images of 640 × 480, 80 classes in 12 supercategories, ~7.3 objects per
image with COCO's mix of sizes and 1% crowds; 100 detections per image: a jittered box on most objects, some with
another class, duplicates, and the rest background boxes of low score) and runs on the same two files:

- the **evaluation engines**, each from the two json files to COCOeval's 12 numbers (``evaluate`` + ``accumulate``
  + ``summarize``; loading timed apart): ``pycocotools`` (the reference), ``coco_match`` (ours,
  `dhanalysis.metrics.coco_match`, what `dhanalysis detections` evaluates with), ``faster_coco_eval``,
  ``hotcoco``, ``ultrafast_pycocotools`` and ``vernier`` (its pycocotools-compatible ``COCOeval``, strict parity,
  fed by pycocotools' loading). Each engine's AP (stats[0]) is compared with pycocotools';
- the **whole analyses**: ``ours`` (`compute_detections` writing every table to a folder, as ``dhanalysis detections
  --bootstrap B`` does: COCOeval matching and AP, TIDE, oracle rescoring, analyze(), calibration, LRP, the
  alignment measures with ``B`` bootstrap replicates, thresholds, confusion, AR) against ``tidecv`` (loading +
  ``TIDE.evaluate`` + its main and special errors; tidecv computes no intervals).

Every candidate runs in its own fresh interpreter (``python -m bench.detections --worker NAME ...``), so each has
the whole machine's memory to itself and its **peak memory** is that process's peak resident set (VmHWM on Linux,
else ``ru_maxrss``; interpreter and imports included, the peak after the imports is reported beside it). Every
process first applies the host memory policy every ``dhanalysis`` command runs under (`dhanalysis.engine.host`:
freed blocks kept for reuse), so ours is measured as the command runs and the peers under the same allocator
setting; each row records whether it took effect (``freed_memory_retained``).
Candidates are interleaved round by round (A, B, C, ..., A, B, C, ...), and ratios are paired within a round. A
peer that is not installed is skipped with a line saying so (``pip install -e '.[bench]'`` installs them; vernier is
left out of that extra since it pulls pyarrow, which changes what dhanalysis writes: install it elsewhere with
``pip install --target DIR vernier`` and pass ``--site DIR``, which only the peers' workers see).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dhanalysis.engine.host import retain_freed_memory

ROOT = Path(__file__).resolve().parent.parent

# candidate -> (what it is, the distribution to install); the first engine is the reference of the others' ratios
ENGINES = {
    "pycocotools": ("pycocotools COCOeval", "pycocotools"),
    "coco_match": ("ours: dhanalysis.metrics.coco_match", "dhanalysis"),
    "faster_coco_eval": ("faster-coco-eval COCOeval_faster", "faster-coco-eval"),
    "hotcoco": ("hotcoco COCOeval", "hotcoco"),
    "ultrafast_pycocotools": ("ultrafast-pycocotools COCOeval", "ultrafast-pycocotools"),
    "vernier": ("vernier COCOeval (strict parity; pycocotools loading)", "vernier"),
}
ANALYSES = {
    "tidecv": ("tidecv: TIDE.evaluate + main and special errors", "tidecv"),
    "ours": ("ours: dhanalysis detections, every table written", "dhanalysis"),
}
NOT_INSTALLED = 3  # a worker's exit status when its package is missing
QUICK = {"images": 12, "dets_per_image": 20, "bootstrap": 20}
FULL = {"images": 5000, "dets_per_image": 100, "bootstrap": 1000}


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


# --- the workers: each runs in its own process and returns what it measured --------------------------------------

def _rss_mib() -> float:
    """This process's peak resident set so far, MiB: Linux's VmHWM, which starts afresh at exec (ru_maxrss keeps the
    forking parent's resident size as a floor, and the parent holds the generated files); ru_maxrss elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summarize_quietly(ev) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()


def _pycocotools_like(module_coco, module_eval, gt_path: Path, det_path: Path, **kwargs) -> dict:
    """Load with the package's COCO + loadRes, then evaluate, accumulate and summarize with its COCOeval."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = module_coco(str(gt_path))
        dt = gt.loadRes(str(det_path))
    loaded = time.perf_counter()
    ev = module_eval(gt, dt, "bbox", **kwargs)
    _summarize_quietly(ev)
    return {"load_s": loaded - start, "eval_s": time.perf_counter() - loaded, "ap": float(ev.stats[0])}


def engine_pycocotools(gt_path: Path, det_path: Path, _: int) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return _pycocotools_like(COCO, COCOeval, gt_path, det_path)


def engine_faster_coco_eval(gt_path: Path, det_path: Path, _: int) -> dict:
    from faster_coco_eval import COCO, COCOeval_faster

    return _pycocotools_like(COCO, COCOeval_faster, gt_path, det_path)


def engine_hotcoco(gt_path: Path, det_path: Path, _: int) -> dict:
    from hotcoco import COCO, COCOeval

    return _pycocotools_like(COCO, COCOeval, gt_path, det_path)


def engine_ultrafast_pycocotools(gt_path: Path, det_path: Path, _: int) -> dict:
    from ultrafast_pycocotools import COCO, COCOeval

    return _pycocotools_like(COCO, COCOeval, gt_path, det_path)


def engine_vernier(gt_path: Path, det_path: Path, _: int) -> dict:
    import vernier
    from pycocotools.coco import COCO

    return _pycocotools_like(COCO, vernier.COCOeval, gt_path, det_path, parity_mode="strict")


def engine_coco_match(gt_path: Path, det_path: Path, _: int) -> dict:
    """Reading the files into arrays (loadRes's share), then `coco_match.evaluate`; AP as COCOeval's stats[0]."""
    from dhanalysis.metrics import coco_match

    start = time.perf_counter()
    gt = json.loads(gt_path.read_text())
    boxes = coco_match.ground_truth_boxes(gt)
    dets = json.loads(det_path.read_text())
    dt = coco_match.detection_boxes(np.array([d["image_id"] for d in dets]), np.array([d["category_id"] for d in dets]),
                                    np.array([d["bbox"] for d in dets], np.float64).reshape(-1, 4),
                                    np.array([d["score"] for d in dets], np.float64))
    loaded = time.perf_counter()
    ev = coco_match.evaluate(boxes, dt, [im["id"] for im in gt["images"]], [c["id"] for c in gt["categories"]])
    precision = ev.eval["precision"][:, :, :, 0, -1]  # area "all", maxDets 100: COCOeval's stats[0]
    ap = float(precision[precision > -1].mean()) if (precision > -1).any() else -1.0
    return {"load_s": loaded - start, "eval_s": time.perf_counter() - loaded, "ap": ap}


def analysis_tidecv(gt_path: Path, det_path: Path, _: int) -> dict:
    import tidecv

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        tide = tidecv.TIDE()
        run = tide.evaluate(tidecv.datasets.COCO(str(gt_path)),
                            tidecv.datasets.COCOResult(str(det_path), name="d"), mode=tidecv.TIDE.BOX)
        tide.get_main_errors()
        tide.get_special_errors()
    return {"seconds": time.perf_counter() - start, "ap50": float(run.ap) / 100}


def analysis_ours(gt_path: Path, det_path: Path, replicates: int) -> dict:
    """`compute_detections` into a fresh folder, as the command runs it; seconds per step from its progress lines."""
    from dhanalysis.metrics.detections import compute_detections

    with tempfile.TemporaryDirectory() as out:
        steps: list[tuple[str, float]] = []
        start = time.perf_counter()
        done = compute_detections(gt_path, det_path, Path(out) / "detections", replicates=replicates,
                                  progress=lambda s: steps.append((s, time.perf_counter())))
        end = time.perf_counter()
    marks = [t for _, t in steps] + [end]
    return {"seconds": end - start, "ap": done.summary["coco"]["AP"], "ap50": done.summary["tide_ap50"],
            "steps_s": {s: round(marks[i + 1] - t, 3) for i, (s, t) in enumerate(steps)}}


WORKERS = {name: globals()[f"engine_{name}"] for name in ENGINES} | {
    name: globals()[f"analysis_{name}"] for name in ANALYSES}


def worker(name: str, gt_path: Path, det_path: Path, replicates: int, out: Path, retained: bool) -> int:
    """Run one candidate in this (fresh) process and write what it measured, with this process's peak memory and
    whether the memory policy is in effect here (``retained``: what `main` applied before anything ran)."""
    fn = WORKERS[name]
    try:
        _import_of(name)
    except ImportError as exc:
        out.write_text(json.dumps({"skipped": f"{exc}"}))
        return NOT_INSTALLED
    after_imports = _rss_mib()
    found = fn(gt_path, det_path, replicates)
    found |= {"peak_mib": _rss_mib(), "rss_after_imports_mib": after_imports, "freed_memory_retained": retained}
    out.write_text(json.dumps(found))
    return 0


def _import_of(name: str) -> None:
    """Import what the candidate needs (ImportError when it is not installed) before its clock starts."""
    modules = {"pycocotools": ["pycocotools.cocoeval"], "coco_match": ["dhanalysis.metrics.coco_match"],
               "faster_coco_eval": ["faster_coco_eval"], "hotcoco": ["hotcoco"],
               "ultrafast_pycocotools": ["ultrafast_pycocotools"], "vernier": ["vernier", "pycocotools.coco"],
               "tidecv": ["tidecv"], "ours": ["dhanalysis.metrics.detections"]}[name]
    for module in modules:
        __import__(module)


# --- the parent: generate the files once, run every candidate in rounds, pair the ratios -------------------------

def _launch(name: str, gt_path: Path, det_path: Path, replicates: int, site: Path | None) -> dict:
    """One candidate in a fresh interpreter; its result, or {"skipped": why} when its package is not installed."""
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(site)] if site is not None and name not in ("coco_match", "ours") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        load = os.getloadavg()[0]
        run = subprocess.run([sys.executable, "-m", "bench.detections", "--worker", name, "--gt", str(gt_path),
                              "--results", str(det_path), "--bootstrap", str(replicates), "--worker-out", str(out)],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        if run.returncode not in (0, NOT_INSTALLED):
            raise RuntimeError(f"bench.detections worker {name} failed:\n{run.stderr[-3000:]}")
        found = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    return found | {"load_average_1min": load}


def _pip_name(name: str) -> str:
    return {**ENGINES, **ANALYSES}[name][1]


def run(quick: bool = False, repeats: int = 1, images: int | None = None, dets_per_image: int | None = None,
        bootstrap: int | None = None, site: Path | None = None, log=print) -> dict:
    """Every engine and both analyses on one generated pair of files, ``repeats`` interleaved rounds.

    Returns {"images", "ground_truths", "detections", "bootstrap", "engines": {name: {...}}, "analyses": {name:
    {...}}, "skipped": {name: why}, "ours_over_tidecv", ...}; per candidate: "times" (one per round), "best_s",
    "peak_mib" (largest over rounds), "ap" and, for engines, "ap_minus_pycocotools" and "over_pycocotools" (the
    median over rounds of the paired ratio, loading included) and "eval_over_pycocotools" (evaluation only).
    """
    size = dict(QUICK if quick else FULL)
    size |= {k: v for k, v in (("images", images), ("dets_per_image", dets_per_image), ("bootstrap", bootstrap))
             if v is not None}
    candidates = list(ENGINES) + list(ANALYSES)
    rounds: dict[str, list[dict]] = {name: [] for name in candidates}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        gt, dets = coco_like(size["images"], size["dets_per_image"])
        gt_path, det_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(gt))
        det_path.write_text(json.dumps(dets))
        out: dict = {**size, "ground_truths": len(gt["annotations"]), "detections": len(dets),
                     "generate_s": time.perf_counter() - started}
        del gt, dets
        for r in range(repeats):
            for name in candidates:
                if name in skipped:
                    continue
                found = _launch(name, gt_path, det_path, size["bootstrap"], site)
                if "skipped" in found:
                    skipped[name] = f"{_pip_name(name)} is not installed ({found['skipped']}): skipped"
                    log(f"detections: {skipped[name]}")
                    continue
                rounds[name].append(found)
                took = found.get("seconds", found.get("load_s", 0) + found.get("eval_s", 0))
                log(f"detections round {r + 1}/{repeats}: {name} {took:.2f} s, peak {found['peak_mib']:.0f} MiB "
                    f"(load {found['load_average_1min']:.1f})")
    out["skipped"] = skipped
    out["engines"] = {name: _engine_row(rounds[name], rounds["pycocotools"]) for name in ENGINES if rounds[name]}
    out["analyses"] = {name: _analysis_row(rounds[name]) for name in ANALYSES if rounds[name]}
    if rounds["ours"] and rounds["tidecv"]:
        out["ours_over_tidecv"] = statistics.median(
            a["seconds"] / b["seconds"] for a, b in zip(rounds["ours"], rounds["tidecv"]))
        out["ours_ap50_minus_tidecv"] = rounds["ours"][0]["ap50"] - rounds["tidecv"][0]["ap50"]
        out["ours_ap_minus_pycocotools"] = (rounds["ours"][0]["ap"] - rounds["pycocotools"][0]["ap"]
                                            if rounds["pycocotools"] else float("nan"))
    else:
        out["ours_over_tidecv"] = float("nan")
    return out


def _engine_row(runs: list[dict], reference: list[dict]) -> dict:
    totals = [r["load_s"] + r["eval_s"] for r in runs]
    row = {"times": totals, "best_s": min(totals), "load_s": min(r["load_s"] for r in runs),
           "eval_s": min(r["eval_s"] for r in runs), "peak_mib": max(r["peak_mib"] for r in runs),
           "rss_after_imports_mib": runs[0]["rss_after_imports_mib"], "ap": runs[0]["ap"],
           "freed_memory_retained": all(r["freed_memory_retained"] for r in runs),
           "load_average_1min": [r["load_average_1min"] for r in runs]}
    if reference:
        row["ap_minus_pycocotools"] = runs[0]["ap"] - reference[0]["ap"]
        row["over_pycocotools"] = statistics.median(
            (a["load_s"] + a["eval_s"]) / (b["load_s"] + b["eval_s"]) for a, b in zip(runs, reference))
        row["eval_over_pycocotools"] = statistics.median(a["eval_s"] / b["eval_s"] for a, b in zip(runs, reference))
    return row


def _analysis_row(runs: list[dict]) -> dict:
    times = [r["seconds"] for r in runs]
    best = runs[times.index(min(times))]
    return {"times": times, "best_s": min(times), "peak_mib": max(r["peak_mib"] for r in runs),
            "rss_after_imports_mib": runs[0]["rss_after_imports_mib"], "ap50": runs[0]["ap50"],
            "freed_memory_retained": all(r["freed_memory_retained"] for r in runs),
            "load_average_1min": [r["load_average_1min"] for r in runs]} | (
        {"ap": best["ap"], "steps_s": best["steps_s"]} if "steps_s" in best else {})


def table(found: dict) -> str:
    """The markdown rows of this section (also what ``python -m bench`` prints for it)."""
    lines = [f"| detections: {found['images']:,} images, {found['ground_truths']:,} ground truths, "
             f"{found['detections']:,} detections | s (load + eval) | × pycocotools (eval only) | AP − pycocotools "
             "| peak MiB |", "|---|---|---|---|---|"]
    for name, row in found["engines"].items():
        over, eval_over, ap = (row.get(k, float("nan")) for k in ("over_pycocotools", "eval_over_pycocotools",
                                                                   "ap_minus_pycocotools"))
        lines.append(f"| {ENGINES[name][0]} | {row['best_s']:.2f} ({row['load_s']:.2f} + {row['eval_s']:.2f}) | "
                     f"{over:.3f} ({eval_over:.3f}) | {ap:+.1e} | {row['peak_mib']:.0f} |")
    for name, row in found["analyses"].items():
        what = ANALYSES[name][0] + (f", {found['bootstrap']:,} bootstrap replicates" if name == "ours" else "")
        lines.append(f"| {what} | {row['best_s']:.2f} | | AP50 {row['ap50']:.4f} | {row['peak_mib']:.0f} |")
    lines.append(f"| ours ÷ tidecv, whole analysis (paired) | {found['ours_over_tidecv']:.3f} | | | |")
    for name, why in found["skipped"].items():
        lines.append(f"| {name} | {why} | | | |")
    return "\n".join(lines)


def rows(found: dict) -> list[str]:
    """This section's rows in ``python -m bench``'s four-column table (measurement | value | target | met)."""
    size = f"{found['images']:,} images, {found['detections']:,} detections"
    lines = []
    for name, row in found["engines"].items():
        over, eval_over, ap = (row.get(k, float("nan")) for k in ("over_pycocotools", "eval_over_pycocotools",
                                                                   "ap_minus_pycocotools"))
        lines.append(f"| detections ({size}): {ENGINES[name][0]}, s load + eval (× pycocotools, eval-only ×; AP − "
                     f"pycocotools; peak MiB) | {row['load_s']:.2f} + {row['eval_s']:.2f} ({over:.3f}, "
                     f"{eval_over:.3f}; {ap:+.1e}; {row['peak_mib']:.0f}) | | |")
    lines += [f"| detections ({size}): {ANALYSES[name][0]}"
              + (f", {found['bootstrap']:,} bootstrap replicates" if name == "ours" else "")
              + f", s (AP50; peak MiB) | {row['best_s']:.2f} ({row['ap50']:.4f}; {row['peak_mib']:.0f}) | | |"
              for name, row in found["analyses"].items()]
    lines += [f"| detections: {name} | {why} | | |" for name, why in found["skipped"].items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help=f"default {FULL['images']} ({QUICK['images']} quick)")
    parser.add_argument("--dets-per-image", type=int, default=None)
    parser.add_argument("--bootstrap", type=int, default=None,
                        help=f"our analysis' bootstrap replicates (default {FULL['bootstrap']})")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (default 1: each takes minutes)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['images']} images, {QUICK['dets_per_image']} "
                        f"detections each, {QUICK['bootstrap']} replicates: a smoke test (seconds)")
    parser.add_argument("--site", type=Path, help="a folder of peers installed outside the venv (pip install "
                                                   "--target DIR vernier), on the peers' path only")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--gt", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    retained = retain_freed_memory()  # as every dhanalysis command runs (engine/host.py), before any candidate
    if args.worker:
        return worker(args.worker, args.gt, args.results, args.bootstrap or 0, args.worker_out, retained)
    found = run(quick=args.quick, repeats=args.repeats, images=args.images, dets_per_image=args.dets_per_image,
                bootstrap=args.bootstrap, site=args.site)
    print(table(found))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
