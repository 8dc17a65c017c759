"""The conv-head (K = 5, non-local, paper widths) in inference and in training, and the synthetic preset's head runs.

Inference: the matmul form (`ConvHead.inference_form()`, what the fast sliding-window path runs) vs the NCHW
modules; efficiency = FLOPs (2·MACs counted from the layer shapes) per second / the measured fp32 matmul peak.
Training: forward + backward in each of `TRAINING_FORMS`, FLOPs counted by `torch.utils.flop_counter`; efficiency of
the form `ConvHead` trains in (`detected_training_form`), and which form was fastest here. Synth: the head-only
training step of ``configs/synth/single-conv.yaml`` (K = 3, and K = 5), modules vs the trained form.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.common import interleaved, log, paired_ratio
from bench.peak import probe
from bench.sliding import build
from dhanalysis.config import load_config
from dhanalysis.model import build_model
from dhanalysis.model.heads import TRAINING_FORMS, Branch, detected_training_form


def run(peak: dict, device: str = "cpu", num_rois: int = 96, repeats: int = 3) -> dict:
    """``{"efficiency", "module_efficiency", "speedup_vs_module", ...}`` for ``num_rois`` RoIs of 256×7×7."""
    model = build("double-head-ext", device)
    module = model.roi_heads.branches["conv"].head
    with torch.no_grad():
        fast = module.inference_form(torch.float32)
    stock = copy.deepcopy(module).to(memory_format=torch.contiguous_format)  # the stock NCHW modules
    rows = torch.randn(num_rois, 7, 7, 256, device=device)  # channels-last, as the fast RoIAlign gives them
    nchw = rows.permute(0, 3, 1, 2).contiguous()
    peak_fn, probe_flops = probe(device)
    with torch.inference_mode():
        t = interleaved({"fast": lambda: fast(rows), "module": lambda: stock.forward_as("modules", nchw),
                         "peak_probe": peak_fn}, repeats=repeats)
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


def training_step(head, x: torch.Tensor, form: str):
    """One training-mode forward + backward of ``head`` in ``form`` on RoI features ``x`` (N, C, S, S)."""
    head.train()

    def step() -> None:
        head.zero_grad(set_to_none=True)
        head.forward_as(form, x).square().mean().backward()
    return step


def training_flops(head, x: torch.Tensor) -> int:
    """FLOPs of one forward + backward, counted by `torch.utils.flop_counter` on the modules (matmuls and convs)."""
    with FlopCounterMode(display=False) as counter:
        training_step(copy.deepcopy(head), x, "modules")()
    return counter.get_total_flops()


def run_training(peak: dict, device: str = "cpu", num_rois: int = 64, repeats: int = 3) -> dict:
    """Conv-head training (K = 5, non-local, paper widths), forward + backward on ``num_rois`` RoIs, in each of
    `TRAINING_FORMS`, interleaved with the peak probe: ``{"efficiency": the form ``ConvHead`` trains in ÷ peak,
    "forms": {form: {...}}, "detected", "fastest", ...}``."""
    model = build("double-head-ext", device)
    head = model.roi_heads.branches["conv"].head
    x = torch.randn(num_rois, 256, 7, 7, device=device)
    flops = training_flops(head, x)
    peak_fn, probe_flops = probe(device)
    # "modules" is the stock NCHW arithmetic: a copy in the default memory format (the model's conv weights are
    # channels-last, `conv_memory_format`, which would make oneDNN run even the NCHW modules channels-last)
    stock = copy.deepcopy(head).to(memory_format=torch.contiguous_format)
    t = interleaved({**{form: training_step(stock if form == "modules" else head, x, form) for form in TRAINING_FORMS},
                     "peak_probe": peak_fn}, repeats=repeats)
    local_peak = probe_flops / t["peak_probe"]["best"] / 1e9
    peak_used = max(peak["matmul_gflops"], local_peak)
    detected = detected_training_form(torch.device(device))
    out = {"rois": num_rois, "gflop_per_step": flops / 1e9, "matmul_gflops_local": local_peak,
           "peak_used_gflops": peak_used, "detected": detected,
           "fastest": min(TRAINING_FORMS, key=lambda f: t[f]["best"]), "forms": {}}
    for form in TRAINING_FORMS:
        out["forms"][form] = {"seconds": t[form]["best"], "seconds_median": t[form]["median"],
                              "gflops": flops / t[form]["best"] / 1e9,
                              "efficiency": flops / t[form]["best"] / 1e9 / peak_used,
                              "over_modules": paired_ratio(t, form, "modules")}
    out["efficiency"] = out["forms"][detected]["efficiency"]
    out["modules_efficiency"] = out["forms"]["modules"]["efficiency"]
    out["detected_over_modules"] = out["forms"][detected]["over_modules"]
    log("conv-head training: " + ", ".join(f"{f} {r['gflops']:.1f} GFLOP/s ({r['efficiency']:.2f})"
                                           for f, r in out["forms"].items()) + f"; trains in {detected}")
    return out


def synth_head_step(num_blocks: int, device: str, rois: int) -> tuple[Branch, torch.Tensor, torch.Tensor]:
    """The conv branch (conv-head + predictor) of the synthetic single-conv preset (``configs/synth/single-conv.yaml``
    widths), ``num_blocks`` blocks, with ``rois`` pooled RoIs and random labels: what a head-only run trains."""
    cfg = load_config("configs/synth/single-conv.yaml", [
        "model.num_classes=8", "model.backbone.weights=null", f"model.head.num_blocks={num_blocks}"])
    torch.manual_seed(0)
    branch = build_model(cfg).roi_heads.branches["conv"].to(device)
    x = torch.randn(rois, cfg.model.backbone.fpn_channels, cfg.model.head.roi_size, cfg.model.head.roi_size,
                    device=device)
    labels = torch.randint(0, cfg.model.num_classes + 1, (rois,), device=device)
    return branch, x, labels


def run_synth(device: str = "cpu", repeats: int = 3, quick: bool = False) -> dict:
    """Head-only training steps (forward, backward, SGD) of the synthetic preset's conv branch, 4 images × 128 RoIs,
    with K = 3 (the preset) and K = 5: the modules vs the form ``ConvHead`` trains in, paired ratio per K."""
    rois = 64 if quick else 4 * 128
    out: dict = {"rois": rois}
    for k in (3, 5):
        branch, x, labels = synth_head_step(k, device, rois)
        stock = copy.deepcopy(branch).to(memory_format=torch.contiguous_format)  # the stock NCHW modules

        def step(model: Branch, form: str):
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

            def run() -> None:
                model.train().head.training_form = form
                logits, deltas = model(x)
                loss = F.cross_entropy(logits, labels) + deltas.square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return run
        t = interleaved({"modules": step(stock, "modules"), "auto": step(branch, "auto")}, repeats=repeats)
        out[f"k{k}"] = {"modules_s": t["modules"]["best"], "auto_s": t["auto"]["best"],
                        "auto_over_modules": paired_ratio(t, "auto", "modules")}
        log(f"synth head-only step K={k}: modules {t['modules']['best']:.3f} s, "
            f"{detected_training_form(torch.device(device))} {t['auto']['best']:.3f} s "
            f"({out[f'k{k}']['auto_over_modules']:.3f}x)")
    return out
