"""Sliding-window throughput: the fast path the command uses vs the straightforward path, on a real-sized image;
and what the alignment measures' object rows add to it (`measures_cost`, also ``python -m bench.sliding``).

One timed unit is `SlidingWindowTask.process` on one image whose FPN features are already computed (the backbone
runs once per image for every analysis, so it is not part of this cost): proposal generation, RoIAlign, heads,
scores, regressed IoUs and the statistics. The straightforward path is the same task with ``fast=False``: the
model's `LevelPooler` (torchvision ``roi_align`` per FPN level, as `MultiScaleRoIAlign`) on every proposal, the NCHW
head modules, decoding of every class, fp32. Efficiency = head FLOPs per second / the measured matmul peak.
"""

from __future__ import annotations

import torch

from bench.common import interleaved, log, paired_ratio
from bench.peak import probe
from dhanalysis.probes.proposals import DEFAULT_PROPOSALS_PER_GT, sliding_window_proposals
from dhanalysis.probes.harness import image_context
from dhanalysis.probes.sliding_window import SlidingWindowTask
from dhanalysis.probes.sliding_window import DEFAULT_BATCH_SIZE
from dhanalysis.stats.moments import NUM_BINS
from dhanalysis.config import load_config
from dhanalysis.model import build_model

NUM_CLASSES = 80
# ground-truth boxes on an 800 × 1067 image: small, medium, large, one at the border, one elongated
GT_BOXES = [[120.0, 140.0, 150.0, 176.0], [300.0, 200.0, 480.0, 430.0], [560.0, 90.0, 1000.0, 700.0],
            [0.0, 600.0, 140.0, 800.0], [700.0, 650.0, 1010.0, 720.0]]


def build(variant: str, device: str, overrides: tuple[str, ...] = ()):
    """A randomly initialised model of the paper's widths (ResNet-50-FPN config), eval mode."""
    torch.manual_seed(0)
    cfg = load_config(f"configs/coco/r50/{variant}.yaml", [f"model.num_classes={NUM_CLASSES}", *overrides])
    return build_model(cfg).to(device).eval()


def real_image_context(model, device: str, seed: int = 0):
    """`ImageContext` of a random 800 × 1067 image with `GT_BOXES` (features from ``model``'s backbone)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 800, 1067, generator=g)
    boxes = torch.tensor(GT_BOXES)
    target = {"boxes": boxes, "labels": torch.randint(1, NUM_CLASSES + 1, (len(boxes),), generator=g),
              "image_id": torch.tensor(1), "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
              "area": (boxes[:, 2:] - boxes[:, :2]).prod(1)}
    with torch.inference_mode():
        ctx, _, _ = image_context(model, image, target, torch.device(device))
    return ctx


def head_matmul_fn(task: SlidingWindowTask, num_rois: int, batch: int):
    """The fc-head's matmuls alone (fc6, fc7, predictor) on ``num_rois`` random rows in batches: the floor."""
    heads = task.scorer.heads
    layers = []
    for branch, _ in heads.branches:
        layers += [branch.head.fc6, branch.head.fc7, branch.predictor.joint]
    x0 = torch.randn(min(batch, num_rois), layers[0].weight_t.shape[0], dtype=heads.dtype)

    def run() -> None:
        done = 0
        while done < num_rois:
            x = x0[: min(batch, num_rois - done)]
            for layer in layers:
                x = layer(x)
            done += len(x)
    return run


def bin_means(state, heads: dict) -> dict[str, dict[str, list[float]]]:
    """Per-head, per-IoU-bin mean score and regressed IoU of a task state (sums over classes and sizes)."""
    sums = state.sums["stats"].reshape(len(heads), -1, NUM_BINS, 11).sum(1).double()
    out = {}
    for h, head in enumerate(heads):
        s = sums[h]
        out[head] = {"score": (s[:, 5] / s[:, 1]).tolist(), "reg_iou": (s[:, 8] / s[:, 2]).tolist()}
    return out


def max_bin_difference(a: dict, b: dict) -> float:
    """Largest |difference| of per-bin means between two `bin_means` (NaN bins, e.g. empty, are skipped)."""
    worst = 0.0
    for head in a:
        for key in a[head]:
            for x, y in zip(a[head][key], b[head][key]):
                if x == x and y == y:
                    worst = max(worst, abs(x - y))
    return worst


def compare(model, ctx, proposals_per_gt: int, batch: int, peak: float, repeats: int,
            with_matmul_floor: bool) -> dict:
    """Fast vs straightforward task on one image: proposals/s, head GFLOP/s, efficiency, speedup."""
    fast = SlidingWindowTask(model, NUM_CLASSES, batch, proposals_per_gt)
    base = SlidingWindowTask(model, NUM_CLASSES, batch, proposals_per_gt, fast=False)
    windows = len(sliding_window_proposals(ctx.boxes, ctx.image_size, grid=fast.grid)[0])
    flops = fast.scorer.flops_per_roi()
    candidates = {"fast": lambda: fast.process(ctx, fast.new_state()),
                  "baseline": lambda: base.process(ctx, base.new_state())}
    if with_matmul_floor:
        candidates["head_matmul"] = head_matmul_fn(fast, windows, batch)
    candidates["peak_probe"], probe_flops = probe()
    with torch.inference_mode():
        # warm up (thread pools, allocator, first-call dispatch) on a few windows, not on the whole timed size
        for task in (SlidingWindowTask(model, NUM_CLASSES, batch, 16, fast=f) for f in (True, False)):
            task.process(ctx, task.new_state())
        t = interleaved(candidates, repeats=repeats, warmup=0)
    local_peak = probe_flops / t["peak_probe"]["best"] / 1e9
    peak = max(peak, local_peak)
    out = {"proposals": windows, "proposals_per_gt": proposals_per_gt, "head_mflop_per_proposal": flops / 1e6,
           "batch_size": batch, "matmul_gflops_local": local_peak, "peak_used_gflops": peak}
    for name in ("fast", "baseline"):
        sec = t[name]["best"]
        out[name] = {"seconds": sec, "seconds_median": t[name]["median"], "proposals_per_s": windows / sec,
                     "head_gflops": windows * flops / sec / 1e9, "efficiency": windows * flops / sec / 1e9 / peak}
    out["efficiency"] = out["fast"]["efficiency"]
    out["baseline_efficiency"] = out["baseline"]["efficiency"]
    out["speedup_vs_baseline"] = paired_ratio(t, "baseline", "fast")
    out["speedup_vs_baseline_of_best"] = t["baseline"]["best"] / t["fast"]["best"]
    if with_matmul_floor:
        out["head_matmul_seconds"] = t["head_matmul"]["best"]
        out["pipeline_over_head_matmul"] = t["fast"]["best"] / t["head_matmul"]["best"]
    return out


def bf16_run(model, ctx, proposals_per_gt: int, batch: int, peak_bf16: float, repeats: int) -> dict:
    """The fast path in bf16: efficiency against the bf16 peak and the largest per-bin mean difference from fp32."""
    fp32 = SlidingWindowTask(model, NUM_CLASSES, batch, proposals_per_gt)
    bf16 = SlidingWindowTask(model, NUM_CLASSES, batch, proposals_per_gt, precision="bf16")
    windows = len(sliding_window_proposals(ctx.boxes, ctx.image_size, grid=fp32.grid)[0])
    flops = bf16.scorer.flops_per_roi()
    states = {"fp32": fp32.new_state(), "bf16": bf16.new_state()}
    with torch.inference_mode():
        fp32.process(ctx, states["fp32"])
        bf16.process(ctx, states["bf16"])
        t = interleaved({"bf16": lambda: bf16.process(ctx, bf16.new_state())}, repeats=repeats, warmup=0)["bf16"]
    heads = fp32.heads
    diff = max_bin_difference(bin_means(states["fp32"], heads), bin_means(states["bf16"], heads))
    gflops = windows * flops / t["best"] / 1e9
    return {"proposals": windows, "seconds": t["best"], "proposals_per_s": windows / t["best"], "head_gflops": gflops,
            "bf16_efficiency": gflops / peak_bf16, "max_bin_mean_diff_vs_fp32": diff}


def run(peak: dict, device: str = "cpu", repeats: int = 2, quick: bool = False, fc_ppg: int = 2000,
        ext_ppg: int = 40) -> dict:
    """``{"single_fc": {...}, "double_head_ext": {...}}`` at sizes chosen to fit the time budget."""
    out = {}
    model = build("single-fc", device)
    ctx = real_image_context(model, device)
    log(f"sliding-window single-fc: image {ctx.image_size}, {len(ctx.boxes)} boxes")
    fc = compare(model, ctx, 300 if quick else fc_ppg, DEFAULT_BATCH_SIZE, peak["matmul_gflops"], repeats,
                 with_matmul_floor=True)
    log(f"  fast {fc['fast']['proposals_per_s']:.0f}/s vs baseline {fc['baseline']['proposals_per_s']:.0f}/s, "
        f"efficiency {fc['efficiency']:.2f}, speedup {fc['speedup_vs_baseline']:.2f}x")
    # bf16 size: the analysis's own windows per ground truth (14,000), or fewer where two seconds of head work at
    # the measured bf16 rate would not cover them (emulated bf16): a smaller image's fixed costs (its feature table)
    # would weigh more than they do in the analysis
    per_box = fc["head_mflop_per_proposal"] * 1e6 / (peak["matmul_gflops_bf16"] * 1e9)
    bf16_ppg = 300 if quick else int(min(DEFAULT_PROPOSALS_PER_GT, max(4, 2.0 / per_box / len(ctx.boxes))))
    bf16 = bf16_run(model, ctx, bf16_ppg, DEFAULT_BATCH_SIZE, peak["matmul_gflops_bf16"], repeats=1 if quick else 2)
    fc["bf16"] = bf16 | {"proposals_per_gt": bf16_ppg}
    fc["bf16_efficiency"] = bf16["bf16_efficiency"]
    log(f"  bf16 {bf16['proposals_per_s']:.1f}/s, efficiency {bf16['bf16_efficiency']:.2f} of the bf16 peak, "
        f"per-bin mean diff vs fp32 {bf16['max_bin_mean_diff_vs_fp32']:.4f}")
    out["single_fc"] = fc
    del model
    model = build("double-head-ext", device)
    log("sliding-window double-head-ext (K = 5, non-local)")
    ext = compare(model, ctx, 8 if quick else ext_ppg, 256, peak["matmul_gflops"], repeats, with_matmul_floor=False)
    log(f"  fast {ext['fast']['proposals_per_s']:.1f}/s vs baseline {ext['baseline']['proposals_per_s']:.1f}/s, "
        f"efficiency {ext['efficiency']:.2f}, speedup {ext['speedup_vs_baseline']:.2f}x")
    out["double_head_ext"] = ext
    del model
    log("sliding-window alignment measures: Single-FC with and without its object rows")
    measures = measures_cost(device, 300 if quick else DEFAULT_PROPOSALS_PER_GT, repeats=1 if quick else repeats)
    log(f"  {measures['windows']} windows, {measures['positives_per_object']:.0f} positives per object: overhead "
        f"{100 * measures['overhead']:.1f}% paired, object rows alone {100 * measures['measures_share']:.1f}%")
    out["measures"] = measures
    return out


def measures_cost(device: str = "cpu", proposals_per_gt: int = DEFAULT_PROPOSALS_PER_GT, repeats: int = 2,
                  measure_repeats: int = 5) -> dict:
    """What the alignment measures add to the sliding-window analysis (Single-FC, `GT_BOXES`, ``proposals_per_gt``
    windows per box): the task with and without its object rows, side by side in the same rounds
    (``overhead``: paired median of with / without − 1), and the object rows alone on the same scored windows
    (``measures_share``: their best time / the best time of the task without them)."""
    from dhanalysis.probes.scoring import AdaptiveBatch
    from dhanalysis.boxes import matched_iou

    model = build("single-fc", device)
    ctx = real_image_context(model, device)
    with_rows = SlidingWindowTask(model, NUM_CLASSES, DEFAULT_BATCH_SIZE, proposals_per_gt)
    without = SlidingWindowTask(model, NUM_CLASSES, DEFAULT_BATCH_SIZE, proposals_per_gt, object_measures=False)
    with torch.inference_mode():
        windows, owner = sliding_window_proposals(ctx.boxes, ctx.image_size, grid=with_rows.grid)
        labels, x = ctx.labels[owner], matched_iou(windows, ctx.boxes[owner])
        scored = with_rows.scorer.score(ctx.features, ctx.image_size, windows, labels, ctx.boxes[owner],
                                        AdaptiveBatch(DEFAULT_BATCH_SIZE))
        state = with_rows.new_state()
        alone = interleaved({"rows": lambda: with_rows._object_rows(ctx, owner, labels, x, scored, state)},
                            repeats=measure_repeats, warmup=1)["rows"]
        small = SlidingWindowTask(model, NUM_CLASSES, DEFAULT_BATCH_SIZE, 16)
        small.process(ctx, small.new_state())  # warm up thread pools and first-call dispatch on a few windows
        t = interleaved({"without": lambda: without.process(ctx, without.new_state()),
                         "with": lambda: with_rows.process(ctx, with_rows.new_state())}, repeats=repeats, warmup=0)
    positives = int((x >= 0.5).sum())
    return {"proposals_per_gt": proposals_per_gt, "windows": len(windows), "objects": len(ctx.boxes),
            "positives_per_object": positives / len(ctx.boxes), "seconds_without": t["without"]["best"],
            "seconds_with": t["with"]["best"], "seconds_measures_alone": alone["best"],
            "overhead": paired_ratio(t, "with", "without") - 1,
            "measures_share": alone["best"] / t["without"]["best"]}


if __name__ == "__main__":  # the measures' cost alone: python -m bench.sliding [--quick]
    import argparse
    import json

    parser = argparse.ArgumentParser(description=measures_cost.__doc__)
    parser.add_argument("--quick", action="store_true", help="300 windows per box: a smoke test, not numbers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    cli = parser.parse_args()
    found = measures_cost(cli.device, 300 if cli.quick else DEFAULT_PROPOSALS_PER_GT, cli.repeats)
    print(json.dumps(found, indent=1))
