"""The conv-head (K = 5, non-local, paper widths) in inference: its matmul form vs the NCHW modules.

Both run the same RoI features; efficiency = FLOPs (2·MACs counted from the layer shapes) per second / the measured
fp32 matmul peak. The matmul form (`ConvHead.inference_form()`) is what the fast sliding-window path runs.
"""

from __future__ import annotations

import torch

from bench.common import interleaved, log, paired_ratio
from bench.peak import probe
from bench.sliding import build


def run(peak: dict, device: str = "cpu", num_rois: int = 96, repeats: int = 3) -> dict:
    """``{"efficiency", "module_efficiency", "speedup_vs_module", ...}`` for ``num_rois`` RoIs of 256×7×7."""
    model = build("double-head-ext", device)
    module = model.roi_heads.branches["conv"].head
    with torch.no_grad():
        fast = module.inference_form(torch.float32)
    rows = torch.randn(num_rois, 7, 7, 256, device=device)  # channels-last, as the fast RoIAlign gives them
    nchw = rows.permute(0, 3, 1, 2).contiguous()
    peak_fn, probe_flops = probe(device)
    with torch.inference_mode():
        t = interleaved({"fast": lambda: fast(rows), "module": lambda: module(nchw), "peak_probe": peak_fn},
                        repeats=repeats)
    flops = fast.flops_per_roi(7) * num_rois
    local_peak = probe_flops / t["peak_probe"]["best"] / 1e9
    peak = {"matmul_gflops": max(peak["matmul_gflops"], local_peak)}
    out = {"rois": num_rois, "gflop_per_roi": fast.flops_per_roi(7) / 1e9, "matmul_gflops_local": local_peak,
           "peak_used_gflops": peak["matmul_gflops"]}
    for name in ("fast", "module"):
        out[name] = {"seconds": t[name]["best"], "seconds_median": t[name]["median"],
                     "gflops": flops / t[name]["best"] / 1e9}
    out["efficiency"] = out["fast"]["gflops"] / peak["matmul_gflops"]
    out["module_efficiency"] = out["module"]["gflops"] / peak["matmul_gflops"]
    out["speedup_vs_module"] = paired_ratio(t, "module", "fast")
    log(f"conv-head: matmul form {out['fast']['gflops']:.1f} GFLOP/s ({out['efficiency']:.2f} of peak), modules "
        f"{out['module']['gflops']:.1f} GFLOP/s")
    return out
