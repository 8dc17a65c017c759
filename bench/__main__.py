"""``python -m bench [--json PATH] [--quick] [--threads N] [--device auto|cpu|cuda]``: every benchmark in one run, a
table, optional JSON. ``--device cuda`` on a machine without a GPU stops with one line (exit 2).

Run from the repository root (the sections read ``configs/coco/r50``). On CPU the full run takes a few minutes and
sizes are chosen so that it stays under ten even on two slow cores, except the `detections` section: one round at
COCO val2017 size with 1,000 bootstrap replicates, several minutes more. ``--quick`` shrinks every section (a smoke
test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from bench import conv_head, detections, evaluate, mmdet, peak, replicates, sliding, together, train
from bench.common import cpuinfo_fields, log
from dhanalysis.engine.host import retain_freed_memory

# (JSON key path, target, comparison, what it is): the targets of the performance issue
TARGETS = [
    ("sliding_window.single_fc.efficiency", 0.50, ">=", "sliding-window Single-FC, fp32, of matmul peak"),
    ("sliding_window.single_fc.speedup_vs_baseline", 2.0, ">=", "sliding-window Single-FC vs straightforward"),
    ("sliding_window.double_head_ext.speedup_vs_baseline", 2.0, ">=",
     "sliding-window Double-Head-Ext vs straightforward"),
    ("conv_head.efficiency", 0.60, ">=", "conv-head (K=5, NL) inference, of matmul peak"),
    ("conv_head_training.efficiency", 0.60, ">=", "conv-head (K=5, NL) training fwd+bwd, of matmul peak"),
    ("synth_head.k3.auto_over_modules", 1.0, "<=", "synth single-conv head-only step / stock modules (K=3)"),
    ("sliding_window.single_fc.bf16_efficiency", 0.45, ">=", "sliding-window Single-FC, bf16, of bf16 peak"),
    ("sliding_window.single_fc.bf16.max_bin_mean_diff_vs_fp32", 0.01, "<=", "bf16 per-bin means vs fp32"),
    ("sliding_window.measures.overhead", 0.10, "<=", "alignment measures' cost over the sliding-window analysis"),
    ("train.single_fc_over_torchvision", 1.05, "<=", "training s/iter, ours / torchvision"),
    ("eval.all_modes_over_one_mode", 1.3, "<=", "evaluation, all modes / one mode (realistic)"),
    ("detections.ours_over_tidecv", 1.0, "<=", "dhanalysis detections with 1,000 bootstrap replicates / tidecv"),
]


def lookup(results: dict, path: str):
    node = results
    for part in path.split("."):
        node = node[part]
    return node


def environment(threads: int) -> dict:
    model = cpuinfo_fields().get("model name", platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"torch": torch.__version__, "threads": threads, "cpu": model, "cpu_capability":
            torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def table(results: dict) -> str:
    """The summary table (markdown) of measured values against the targets."""
    lines = ["| measurement | value | target | met |", "|---|---|---|---|"]
    lines.append(f"| fp32 matmul peak (best head shape) | {results['matmul_gflops']:.1f} GFLOP/s | | |")
    lines.append(f"| bf16 matmul peak (best head shape) | {results['matmul_gflops_bf16']:.2f} GFLOP/s | | |")
    sw = results["sliding_window"]
    locals_ = [sw["single_fc"], sw["double_head_ext"], results["conv_head"]]
    lines.append("| fp32 fc6-shape rate interleaved with each section (sw fc / sw ext / conv-head) | "
                 + " / ".join(f"{r['matmul_gflops_local']:.1f}" for r in locals_) + " GFLOP/s | | |")
    for name in ("single_fc", "double_head_ext"):
        r = sw[name]
        lines.append(f"| sliding-window {name}: fast / straightforward proposals/s | "
                     f"{r['fast']['proposals_per_s']:.1f} / {r['baseline']['proposals_per_s']:.1f} | | |")
        lines.append(f"| sliding-window {name}: head GFLOP/s fast / straightforward | "
                     f"{r['fast']['head_gflops']:.1f} / {r['baseline']['head_gflops']:.1f} | | |")
    if "pipeline_over_head_matmul" in sw["single_fc"]:
        lines.append(f"| sliding-window single_fc: pipeline / fc-head pure matmul time | "
                     f"{sw['single_fc']['pipeline_over_head_matmul']:.2f} | <= 2 | "
                     f"{'yes' if sw['single_fc']['pipeline_over_head_matmul'] <= 2 else 'no'} |")
    ct = results["conv_head_training"]
    lines.append("| conv-head training GFLOP/s " + " / ".join(ct["forms"]) + " | " + " / ".join(
        f"{r['gflops']:.1f}" for r in ct["forms"].values()) + f" (trains in {ct['detected']}, fastest here "
        f"{ct['fastest']}) | | |")
    sh = results["synth_head"]
    lines.append(f"| synth head-only step s, modules / trained form, K=3; K=5 | {sh['k3']['modules_s']:.3f} / "
                 f"{sh['k3']['auto_s']:.3f}; {sh['k5']['modules_s']:.3f} / {sh['k5']['auto_s']:.3f} (paired ratios "
                 f"{sh['k3']['auto_over_modules']:.3f}; {sh['k5']['auto_over_modules']:.3f}) | | |")
    lines.append(results["mmdet"]["line"] if "line" in results["mmdet"] else "| mmdetection comparison | "
                 f"{results['mmdet']} | | |")
    ch = results["conv_head"]
    lines.append(f"| conv-head GFLOP/s matmul form / NCHW modules | {ch['fast']['gflops']:.1f} / "
                 f"{ch['module']['gflops']:.1f} | | |")
    tr = results["train"]
    lines.append(f"| train s/iter single-fc / torchvision | {tr['single_fc_s_per_iter']:.2f} / "
                 f"{tr['torchvision_s_per_iter']:.2f} (ratio of bests {tr['single_fc_over_torchvision_of_best']:.3f})"
                 " | | |")
    for name in ("realistic", "worst_case"):
        ev = results["eval"][name]
        lines.append(f"| eval ({name}) s all {len(ev['modes'])} modes / one mode | {ev['all_modes_s']:.2f} / "
                     f"{ev['one_mode_s']:.2f} (paired ratio {ev['all_modes_over_one_mode']:.3f}) | | |")
    lines.append(f"| train s/iter double-head-ext / single-fc ({tr['ext_box_batch_size_per_image']} RoIs/img) | "
                 f"{tr['double_head_ext_s_per_iter']:.2f} / {tr['ext_single_fc_s_per_iter']:.2f} | | |")
    lines.append(f"| train s/iter double-head-ext, conv-head {tr['conv_head_trains_in']} / stock modules | "
                 f"{tr['double_head_ext_s_per_iter']:.2f} / {tr['double_head_ext_stock_s_per_iter']:.2f} (paired "
                 f"ratio {tr['double_head_ext_over_stock_modules']:.3f}) | | |")
    tg = results["together"]
    lines.append(f"| heads on one frozen trunk, s/iter together / one at a time ({len(tg['variants'])} heads) | "
                 f"{tg['together_s_per_iter']:.2f} / {tg['one_at_a_time_s_per_iter']:.2f} (paired speed-up "
                 f"{tg['together_speedup']:.2f}x) | | |")
    lines += detections.rows(results["detections"])
    lines += replicates.rows(results["replicates"])
    for path, target, op, what in TARGETS:
        value = lookup(results, path)
        met = value >= target if op == ">=" else value <= target
        lines.append(f"| {what} (`{path}`) | {value:.3f} | {op} {target} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the harness, not numbers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per candidate after warm-up (default 2)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (default: cuda when present, else cpu); cuda fails when there is no GPU")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no GPU present: --device cuda needs a CUDA device visible to torch (torch.cuda.is_available() is "
              "False); run on a machine with one", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    retained = retain_freed_memory()  # as every dhanalysis command runs
    device = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    results: dict = {"environment": environment(torch.get_num_threads()) | {"freed_memory_retained": retained}}
    peaks = peak.run(device, repeats=args.repeats + 1)
    results.update(peaks)
    results["sliding_window"] = sliding.run(peaks, device, repeats=args.repeats, quick=args.quick)
    results["conv_head"] = conv_head.run(peaks, device, num_rois=16 if args.quick else 96, repeats=args.repeats + 1)
    results["conv_head_training"] = conv_head.run_training(peaks, device, num_rois=4 if args.quick else 512,
                                                           repeats=args.repeats + 1)
    results["synth_head"] = conv_head.run_synth(device, repeats=args.repeats + 1, quick=args.quick)
    results["mmdet"] = mmdet.run(device)
    results["train"] = train.run(device, repeats=1 if args.quick else args.repeats + 2,
                                 ext_box_batch=16 if args.quick else 64)
    results["eval"] = evaluate.run(device, repeats=args.repeats + 1)
    results["together"] = together.run(device, repeats=args.repeats, quick=args.quick)
    results["detections"] = detections.run(quick=args.quick, repeats=1, log=log)  # minutes per round at full size
    results["replicates"] = replicates.run(repeats=args.repeats + 1, quick=args.quick)
    results["targets"] = {path: {"value": lookup(results, path), "target": target, "op": op,
                                 "met": bool(lookup(results, path) >= target if op == ">=" else
                                             lookup(results, path) <= target)} for path, target, op, _ in TARGETS}
    results["seconds_total"] = time.perf_counter() - started
    results["environment"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(table(results))
    print(f"total {results['seconds_total']:.0f} s on {results['environment']['cpu']} "
          f"({results['environment']['threads']} threads)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
