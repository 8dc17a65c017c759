"""Timing helpers shared by the benchmark sections.

Other processes may share the cores, so every comparison runs its candidates interleaved (A, B, A, B, ...) in the
same process after one warm-up each, and reports the best (least disturbed) and the median of the repeats; ratios
are taken per round (`paired_ratio`), so load that changes between rounds cancels out.
"""

from __future__ import annotations

import math
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


def round_ratios(timings: dict[str, dict], num: str, den: str) -> list[float]:
    """time[num] / time[den] of each round: the two ran back to back under the same load, so a load that changes
    between rounds (other processes on the cores) cancels out of each ratio."""
    return [a / b for a, b in zip(timings[num]["times"], timings[den]["times"])]


def paired_ratio(timings: dict[str, dict], num: str, den: str) -> float:
    """The median over rounds of `round_ratios`."""
    return statistics.median(round_ratios(timings, num, den))


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free interval for the median of ``values``: ``(low, high, coverage)``.

    The k-th smallest and k-th largest of n values bracket the population median unless at least n − k + 1 of
    them fall on one side of it, which for independent draws from any continuous distribution has probability
    2·P(Binomial(n, ½) ≤ k − 1). k is the largest whose coverage is still ≥ ``level``; where n is too small for
    that (fewer than 6 values at 95%), the interval is the whole range and ``coverage`` says what it reaches (75% for
    3), so a reader sees how far a benchmark's few rounds pin its ratio down.
    """
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_interval needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")

    def coverage(k: int) -> float:  # 1 − 2·P(Binomial(n, ½) ≤ k − 1)
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def paired_interval(timings: dict[str, dict], num: str, den: str, level: float = 0.95) -> tuple[float, float, float]:
    """`median_interval` of the `round_ratios` that `paired_ratio` takes the median of."""
    return median_interval(round_ratios(timings, num, den), level)


def log(message: str) -> None:
    """Progress on stderr-like stdout, flushed, so a long run shows where it is."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def cpuinfo_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (or of ``cpuinfo``), e.g. "model name", "flags"; empty
    where the platform has no such file."""
    from pathlib import Path

    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block ends at its blank line
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_kind(cpuinfo: str | None = None, environ: dict | None = None) -> str:
    """The CPU kind a measurement belongs to, by the instruction sets its kernels may use: "AMX", "AVX-512" or
    "AVX2" (else "other"), with the model name, and "(emulated: ...)" where ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY
    and MKL_ENABLE_INSTRUCTIONS restrict oneDNN's, ATen's and MKL's kernels to fewer than the CPU has. Ratios against
    another library differ per kind (oneDNN picks its kernels by it), so every such row names the kind it was
    measured on. An emulation that leaves one of the three libraries above the kind is "partly emulated" and says
    which: MKL runs the matmuls (fc layers, 1×1 convolutions as matmuls), so leaving it at AVX-512 flatters the side
    that uses more of them (BENCHMARKS.md)."""
    import os

    environ = os.environ if environ is None else environ
    fields = cpuinfo_fields(cpuinfo)
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name", "unknown CPU")
    native = ("AMX" if "amx_tile" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags
              else "other")
    order = ["other", "AVX2", "AVX-512", "AMX"]
    onednn = environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    aten = environ.get("ATEN_CPU_CAPABILITY", "").lower()
    mkl = environ.get("MKL_ENABLE_INSTRUCTIONS", "").upper()
    held = {"oneDNN": native, "ATen": native, "MKL": native}
    if onednn:
        held["oneDNN"] = ("AVX2" if onednn.startswith("AVX2") else "AVX-512" if onednn.startswith("AVX512")
                          and "AMX" not in onednn else "AMX" if "AMX" in onednn else "other")
    if aten:
        held["ATen"] = {"avx2": "AVX2", "avx512": "AVX-512"}.get(aten, "other")
    if mkl:
        held["MKL"] = "AVX2" if mkl.startswith("AVX2") else "AVX-512" if mkl.startswith("AVX512") else "other"
    held = {lib: min(level, native, key=order.index) for lib, level in held.items()}  # a limit above the CPU: moot
    kind = min(held.values(), key=order.index)
    if kind != native:
        above = [lib for lib, level in held.items() if level != kind]
        how = f"partly emulated ({', '.join(above)} not held)" if above else "emulated"
        return f"{kind} ({how} on {model}, {native}: ONEDNN_MAX_CPU_ISA={onednn or '-'}, " \
               f"ATEN_CPU_CAPABILITY={aten or '-'}, MKL_ENABLE_INSTRUCTIONS={mkl or '-'})"
    return f"{kind} ({model})"
