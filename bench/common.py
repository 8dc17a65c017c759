"""Timing helpers shared by the benchmark sections.

Other processes may share the cores, so every comparison runs its candidates interleaved (A, B, A, B, ...) in the
same process after one warm-up each, and reports the best (least disturbed) and the median of the repeats; ratios
are taken per round (`paired_ratio`), so load that changes between rounds cancels out.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call (CUDA work, if any, is waited for)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 3,
                warmup: int = 1) -> dict[str, dict]:
    """Run candidates round-robin ``repeats`` times: {name: {"best": s, "median": s, "runs": n, "times": [s, ...]}}."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    runs: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            runs[name].append(timed(fn))
    return {name: {"best": min(t), "median": statistics.median(t), "runs": len(t), "times": t}
            for name, t in runs.items()}


def paired_ratio(timings: dict[str, dict], num: str, den: str) -> float:
    """Median over rounds of time[num] / time[den] of the same round: the two ran back to back under the same load,
    so a load that changes between rounds (other processes on the cores) cancels out of each ratio."""
    return statistics.median(a / b for a, b in zip(timings[num]["times"], timings[den]["times"]))


def log(message: str) -> None:
    """Progress on stderr-like stdout, flushed, so a long run shows where it is."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
