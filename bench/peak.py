"""The machine's matmul ceiling at head-like shapes, fp32 and bf16: the denominator of every efficiency.

The peak is the best rate over a few shapes the heads actually run (fc6 of 512 RoIs, a 1×1 conv of 64 RoIs, fc7), so
an efficiency of 1.0 means "as fast as this machine multiplies these matrices", not a datasheet number. bf16 is timed
on shapes scaled down until one product takes about half a second: without bf16 units (AVX2-only CPUs) it is
emulated and two orders of magnitude slower, and the full fc6 product would take half a minute.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.common import interleaved, log

# (M, K, N): fc6 of 512 RoIs; a 1×1 conv 1024→256 over 64 RoIs × 49 positions; fc7 of 2048 RoIs
SHAPES = {"fc6_512": (512, 12544, 1024), "conv1x1_64": (64 * 49, 1024, 256), "fc7_2048": (2048, 1024, 1024)}


def probe(device: str = "cpu") -> tuple[Callable[[], object], int]:
    """A fc6-shaped fp32 product to interleave with a section's runs, and its FLOPs: the peak under the same load.

    Sections divide by max(the peak section's rate, this local rate): under load an efficiency can come out too low,
    never inflated by a peak that happened to be measured in a slow moment.
    """
    m, k, n = SHAPES["fc6_512"]
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    return (lambda: a @ b), 2 * m * k * n


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, device: str, repeats: int) -> dict[str, float]:
    """GFLOP/s (2·M·K·N per product) of one shape, best and median of ``repeats``."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    t = interleaved({"mm": lambda: a @ b}, repeats=repeats)["mm"]
    flops = 2 * m * k * n
    return {"gflops": flops / t["best"] / 1e9, "gflops_median": flops / t["median"] / 1e9, "seconds": t["best"]}


def bf16_shapes(device: str) -> dict[str, tuple[int, int, int]]:
    """The head shapes, with M shrunk when a small probe shows bf16 is slow here (keeps the run short)."""
    probe = matmul_rate(64, 1024, 1024, torch.bfloat16, device, repeats=1)["gflops"]
    budget_flops = max(probe, 1.0) * 1e9 * 0.5  # about half a second per product
    shapes = {}
    for name, (m, k, n) in SHAPES.items():
        shrink = max(1, int(2 * m * k * n / budget_flops))
        shapes[name] = (max(16, m // shrink), k, n)
    return shapes


def run(device: str = "cpu", repeats: int = 3) -> dict:
    """``{"matmul_gflops", "matmul_gflops_bf16", "shapes": {...}}``: the best rate over the head shapes."""
    out: dict = {"shapes": {}}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        shapes = SHAPES if dtype == torch.float32 else bf16_shapes(device)
        rates = {}
        for name, (m, k, n) in shapes.items():
            rates[name] = {"shape": [m, k, n], **matmul_rate(m, k, n, dtype, device, repeats)}
            log(f"matmul {label} {name} {m}x{k}@{k}x{n}: {rates[name]['gflops']:.1f} GFLOP/s")
        out["shapes"][label] = rates
        key = "matmul_gflops" if dtype == torch.float32 else "matmul_gflops_bf16"
        out[key] = max(r["gflops"] for r in rates.values())
    return out
