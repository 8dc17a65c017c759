"""The CPU training recipe's costs: seconds per iteration of the reproduction's two kinds of training step.

The reproduction (`dhanalysis reproduce`) trains one Single-FC end to end (the trunk) and then every head variant on
that frozen trunk. This section measures, on the synthetic dataset's model (ResNet-18-FPN, 64 FPN channels) and
batch (4 images), what a step costs as a function of the recipe's knobs:

- image size (256 / 320 / 384 px) of the end-to-end step;
- bf16 autocast against fp32, for the end-to-end step and for the heads-on-a-frozen-trunk step of Double-Head-Ext
  (the costliest head), where the CPU has bf16 units (AMX / AVX-512 BF16; elsewhere bf16 is emulated and skipped);
- the heads-on-trunk step against the end-to-end step (what the shared trunk saves per head run).

Candidates run interleaved (``bench.common.interleaved``); ratios are paired per round.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from bench.common import interleaved, log, paired_ratio
from dhanalysis.config import load_config
from dhanalysis.engine.distributed import cpu_has_bf16
from dhanalysis.engine.trunk import TrunkCache, head_losses, run_trunk
from dhanalysis.model import build_model

IMAGES = 4  # the reproduction's ims_per_batch


def synth_model(variant: str, size: int):
    cfg = load_config(f"configs/synth/{variant}.yaml", [f"model.min_size={size}", f"model.max_size={size}",
                                                        "model.backbone.weights=null", "model.num_classes=6"])
    return build_model(cfg)


def batch(size: int, seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """``IMAGES`` random ``size``² images with five boxes of the synthetic dataset's sizes each."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(IMAGES)]
    targets = []
    for i in range(IMAGES):
        xy = torch.rand(5, 2, generator=g) * (size * 0.6)
        wh = size * (0.08 + torch.rand(5, 2, generator=g) * 0.3)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 7, (5,), generator=g),
                        "image_id": torch.tensor(i)})
    return images, targets


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def end_to_end_step(model, images, targets, bf16: bool = False):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    model.train()

    def step() -> None:
        with _autocast(bf16):
            losses = model(images, targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
    return step


def heads_step(model, images, targets, bf16: bool = False):
    """One step of the heads on a frozen trunk whose outputs are cached (as `train.freeze=[backbone, rpn]` does)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("roi_heads."))
    model.train()
    cache = TrunkCache(budget_bytes=2**32)
    for image, target in zip(images, targets):
        cache.put((int(target["image_id"]), False), run_trunk(model, image, target))
    opt = torch.optim.SGD([p for p in model.roi_heads.parameters()], lr=1e-4, momentum=0.9)

    def step() -> None:
        with _autocast(bf16):
            losses = head_losses(model, model.roi_heads, images, targets, cache)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
    return step


def run(repeats: int = 3, quick: bool = False) -> dict:
    """``{"s_per_iter": {...}, "bf16_over_fp32": {...}, ...}`` for the reproduction's training steps on CPU."""
    sizes = (128, 160) if quick else (256, 320, 384)
    out: dict = {"images": IMAGES, "sizes": list(sizes), "cpu_has_bf16": cpu_has_bf16(), "s_per_iter": {}}
    torch.manual_seed(0)
    steps = {}
    for size in sizes:
        images, targets = batch(size)
        steps[f"end_to_end_{size}"] = end_to_end_step(synth_model("single-fc", size), images, targets)
    t = interleaved(steps, repeats=repeats)
    out["s_per_iter"].update({k: v["best"] for k, v in t.items()})
    mid = sizes[len(sizes) // 2]
    for size in sizes:
        out[f"end_to_end_{size}_over_{mid}"] = paired_ratio(t, f"end_to_end_{size}", f"end_to_end_{mid}")
    log("recipe: end-to-end s/iter " + ", ".join(f"{s}px {out['s_per_iter'][f'end_to_end_{s}']:.2f}" for s in sizes))

    images, targets = batch(mid)
    steps = {"ext_heads_fp32": heads_step(synth_model("double-head-ext", mid), images, targets),
             "end_to_end_fp32": end_to_end_step(synth_model("single-fc", mid), images, targets)}
    if out["cpu_has_bf16"]:
        steps["ext_heads_bf16"] = heads_step(synth_model("double-head-ext", mid), images, targets, bf16=True)
        steps["end_to_end_bf16"] = end_to_end_step(synth_model("single-fc", mid), images, targets, bf16=True)
    t = interleaved(steps, repeats=repeats)
    out["s_per_iter"].update({k: v["best"] for k, v in t.items()})
    out["ext_heads_over_end_to_end"] = paired_ratio(t, "ext_heads_fp32", "end_to_end_fp32")
    if out["cpu_has_bf16"]:
        out["bf16_over_fp32"] = {"ext_heads": paired_ratio(t, "ext_heads_bf16", "ext_heads_fp32"),
                                 "end_to_end": paired_ratio(t, "end_to_end_bf16", "end_to_end_fp32")}
        log(f"recipe: bf16 / fp32 s/iter: Ext heads {out['bf16_over_fp32']['ext_heads']:.2f}, end to end "
            f"{out['bf16_over_fp32']['end_to_end']:.2f}")
    else:
        log("recipe: no bf16 units on this CPU; bf16 autocast not measured (it would be emulated)")
    return out


def table(r: dict) -> str:
    lines = ["| step | s/iter |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["s_per_iter"].items()]
    lines.append(f"| Ext heads on cached trunk / end-to-end Single-FC | {r['ext_heads_over_end_to_end']:.3f} |")
    for k, v in r.get("bf16_over_fp32", {}).items():
        lines.append(f"| bf16 / fp32, {k} | {v:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    print(table(run(a.repeats, a.quick)))
