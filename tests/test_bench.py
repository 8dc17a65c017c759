"""The benchmark runs: ``python -m bench --quick`` end to end, so a refactor cannot break it unseen."""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys

import pytest

from helpers import ROOT


def _bench(module: str):
    """``bench.<module>`` imported from the repository root (the benchmarks are not an installed package)."""
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(f"bench.{module}")
    finally:
        sys.path.remove(str(ROOT))


@pytest.mark.slow
def test_the_benchmark_runs_to_its_table(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--repeats", "1", "--json", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    main = _bench("__main__")
    TARGETS, lookup = main.TARGETS, main.lookup
    results = json.loads(out.read_text())
    for path, _, _, what in TARGETS:
        value = lookup(results, path)  # every target measured, as a finite number, and printed in the table
        assert value == value and abs(value) < float("inf"), path
        assert f"`{path}`" in run.stdout, what
    # the matmul floor of the sliding-window section ran (it is what broke unseen before)
    assert results["sliding_window"]["single_fc"]["head_matmul_seconds"] > 0
    assert results["together"]["together_speedup"] > 0 and "heads on one frozen trunk" in run.stdout
    # the study's replicate AP, all at once, is the one-at-a-time accumulation's to the bit on the bench's own file
    assert results["replicates"]["equal"] is True and "replicate AP" in run.stdout


def test_the_measures_cost_runs_quick():
    """``python -m bench.sliding --quick``: the alignment measures' cost beside the sliding-window task."""
    run = subprocess.run([sys.executable, "-m", "bench.sliding", "--quick", "--repeats", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout[run.stdout.index("{"):])
    assert found["windows"] > 0 and found["positives_per_object"] > 0
    for key in ("overhead", "measures_share", "seconds_with", "seconds_without", "seconds_measures_alone"):
        assert found[key] == found[key] and abs(found[key]) < float("inf"), key
    assert found["seconds_measures_alone"] > 0


def test_the_detections_bench_runs_quick_under_the_memory_policy(tmp_path):
    """``python -m bench.detections --quick``: every candidate in its own process, each under the memory policy the
    command line applies (engine/host.py), so its rows are measured as `dhanalysis detections` runs; the engines
    agree with pycocotools on the generated files."""
    out = tmp_path / "detections.json"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}  # a malloc left untuned
    run = subprocess.run([sys.executable, "-m", "bench.detections", "--quick", "--json", str(out)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(out.read_text())
    rows = {**found["engines"], **found["analyses"]}
    assert {"pycocotools", "coco_match", "ours"} <= set(rows)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert {name: row["freed_memory_retained"] for name, row in rows.items()} == {name: glibc for name in rows}
    for name, row in found["engines"].items():
        assert abs(row["ap_minus_pycocotools"]) < 1e-6, name
    assert found["analyses"]["ours"]["ap"] == pytest.approx(found["engines"]["pycocotools"]["ap"], abs=1e-9)
    assert "| ours: dhanalysis detections, every table written" in run.stdout


@pytest.mark.parametrize("flags, env, kind", [
    ("fpu sse2 avx avx2 fma avx512f avx512bw amx_bf16 amx_tile", {}, "AMX (Xeon X)"),
    ("fpu sse2 avx avx2 fma avx512f avx512bw", {}, "AVX-512 (Xeon X)"),
    ("fpu sse2 avx avx2 fma", {}, "AVX2 (Xeon X)"),
    ("fpu sse2", {}, "other (Xeon X)"),
    # oneDNN, ATen and MKL held to AVX2 on an AMX CPU: the AVX2 kind, said to be emulated
    ("avx2 avx512f amx_tile", {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                               "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
     "AVX2 (emulated on Xeon X, AMX: ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2)"),
    # MKL left at the CPU's own kernels: only partly emulated, and the row says which library was not held
    ("avx2 avx512f amx_tile", {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
     "AVX2 (partly emulated (MKL not held) on Xeon X, AMX: ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2, "
     "MKL_ENABLE_INSTRUCTIONS=-)"),
    ("avx2 avx512f amx_tile", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
     "AVX-512 (partly emulated (ATen, MKL not held) on Xeon X, AMX: ONEDNN_MAX_CPU_ISA=AVX512_CORE, "
     "ATEN_CPU_CAPABILITY=-, MKL_ENABLE_INSTRUCTIONS=-)"),
    ("avx2 avx512f", {"ATEN_CPU_CAPABILITY": "default"},
     "other (partly emulated (oneDNN, MKL not held) on Xeon X, AVX-512: ONEDNN_MAX_CPU_ISA=-, "
     "ATEN_CPU_CAPABILITY=default, MKL_ENABLE_INSTRUCTIONS=-)"),
    ("avx2", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "AVX2 (Xeon X)"),  # a limit above the CPU changes nothing
])
def test_the_cpu_kind_follows_the_flags_and_the_kernel_limits(flags, env, kind):
    """The mmdetection rows name the CPU kind they were measured on, emulation included (issue: ratios per kind)."""
    cpu_kind = _bench("common").cpu_kind
    cpuinfo = f"processor\t: 0\nmodel name\t: Xeon X\nflags\t\t: {flags}\n"
    assert cpu_kind(cpuinfo, env) == kind


def test_the_mmdetection_row_names_the_cpu_kind_when_skipped():
    run = subprocess.run([sys.executable, "-c", "import json, bench.mmdet as m; print(json.dumps(m.run()))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    if "skipped" not in out:
        pytest.skip("mmdetection is installed here: the full row is measured by python -m bench")
    assert out["cpu_kind"] in out["line"] and out["cpu_kind"].split()[0] in ("AMX", "AVX-512", "AVX2", "other")


@pytest.mark.parametrize("n", [1, 3, 5, 6, 9, 15, 40])
def test_the_median_interval_is_the_order_statistic_interval_of_the_binomial(n):
    """The k-th smallest and largest of n values, k the largest whose binomial coverage is >= 95%; fewer than 6 values
    give the whole range and say what it covers (checked against scipy's binomial distribution)."""
    from scipy.stats import binom

    median_interval = _bench("common").median_interval
    values = list(range(n, 0, -1))  # unsorted on purpose
    low, high, coverage = median_interval(values)
    ks = [k for k in range(1, (n + 1) // 2 + 1) if 1 - 2 * binom.cdf(k - 1, n, 0.5) >= 0.95]
    k = max(ks) if ks else 1
    assert (low, high) == (k, n - k + 1)
    assert coverage == pytest.approx(1 - 2 * binom.cdf(k - 1, n, 0.5), abs=1e-12)


def test_the_median_interval_covers_a_known_median_as_often_as_it_says():
    """Simulated paired ratios with a known median, from a skewed law with rare slow rounds (as a shared machine's
    timings are): over 4,000 draws of 9 rounds the interval holds the true median at least as often as it says."""
    import numpy as np

    median_interval = _bench("common").median_interval

    def ratios(rng, n):  # lognormal around 0.8, and one round in ten 1.3× slower
        return 0.8 * np.exp(rng.normal(0.0, 0.1, n)) * np.where(rng.random(n) < 0.1, 1.3, 1.0)

    truth = float(np.median(ratios(np.random.default_rng(1), 2_000_000)))  # the mixture's median, to ~1e-4
    rng = np.random.default_rng(0)
    hits, coverage = 0, 0.0
    for _ in range(4000):
        low, high, coverage = median_interval(ratios(rng, 9).tolist())
        hits += low <= truth <= high
    assert coverage >= 0.95
    assert hits / 4000 >= coverage - 0.01  # the binomial standard error at 4,000 draws is 0.003


def test_the_median_interval_rejects_what_has_no_median():
    median_interval = _bench("common").median_interval
    with pytest.raises(ValueError, match="at least one value"):
        median_interval([])
    with pytest.raises(ValueError, match="level"):
        median_interval([1.0, 2.0], level=1.0)
