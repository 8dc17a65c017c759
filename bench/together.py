"""Heads trained together on one frozen trunk vs the same heads trained one at a time.

The reproduction trains every head variant on the frozen backbone, FPN and RPN of one detector. Trained one at a
time, each run samples its RoIs, pools them and steps its heads; trained together (`train_together`), one sampling
and one pooling per iteration feed every head. This section times one iteration of the study's own head set — the
synthetic presets (ResNet-18-FPN at 320 px, 4 images, 128 RoIs each; fc-head 2 fc of 64, conv-head K = 5) of
Single-FC, Single-Conv, Double-FC, Double-Conv, Double-Head and Double-Head-Ext — on cached trunk outputs, both ways,
interleaved: the ratio is what the study's head phase gains.
"""

from __future__ import annotations

import torch

from bench.common import interleaved, log, paired_ratio
from dhanalysis.config import load_config, preset_path
from dhanalysis.engine.train import Precision, apply_gradients, build_run
from dhanalysis.engine.trunk import TrunkCache, head_losses, run_trunk
from dhanalysis.model import build_model

VARIANTS = ("single-fc", "single-conv", "double-fc", "double-conv", "double-head", "double-head-ext")
SIZE, IMAGES = 320, 4


def inputs(num_classes: int, seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """``IMAGES`` random ``SIZE``² images with five boxes each (all three COCO size groups)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i in range(IMAGES):
        images.append(torch.rand(3, SIZE, SIZE, generator=g))
        side = torch.tensor([14.0, 30.0, 60.0, 110.0, 200.0])[:, None].expand(5, 2)
        xy = torch.rand(5, 2, generator=g) * (SIZE - side)
        targets.append({"boxes": torch.cat([xy, xy + side], 1), "labels": torch.randint(1, num_classes + 1, (5,),
                        generator=g), "image_id": torch.tensor(i + 1)})
    return images, targets


def run(device: str = "cpu", repeats: int = 2, quick: bool = False) -> dict:
    """``{"together_s_per_iter", "one_at_a_time_s_per_iter", "together_speedup", ...}``."""
    variants = VARIANTS[:3] if quick else VARIANTS
    overrides = ["model.num_classes=6", "model.backbone.weights=null", "train.freeze=[backbone, rpn]"]
    if quick:
        overrides += ["model.box_batch_size_per_image=32", "model.head.num_blocks=3"]
    cfgs = [load_config(preset_path(f"synth/{v}.yaml"), overrides) for v in variants]
    torch.manual_seed(0)
    lead = build_model(cfgs[0]).to(device)
    precision = Precision.choose(torch.device(device), cfgs[0].train)
    runs = [build_run(cfg, None, 6, torch.device(device), None, precision, lead) for cfg in cfgs]
    images, targets = inputs(6)
    cache = TrunkCache(2**34)
    for image, target in zip(images, targets):
        lead.transform.train()
        cache.put((int(target["image_id"]), False), run_trunk(lead, image.to(device), target))

    def step(members) -> None:
        for r, losses in zip(members, head_losses([(m.model, m.wrapped) for m in members], images, targets, cache)):
            apply_gradients(r, sum(losses.values()))

    candidates = {"together": lambda: step(runs), "one_at_a_time": lambda: [step([r]) for r in runs]}
    t = interleaved(candidates, repeats=repeats)
    out = {"variants": list(variants), "images": IMAGES, "size": SIZE,
           "rois_per_image": cfgs[0].model.box_batch_size_per_image,
           "together_s_per_iter": t["together"]["best"], "one_at_a_time_s_per_iter": t["one_at_a_time"]["best"],
           "together_speedup": paired_ratio(t, "one_at_a_time", "together")}
    log(f"heads together: {len(runs)} heads {out['together_s_per_iter']:.3f} s/iter together vs "
        f"{out['one_at_a_time_s_per_iter']:.3f} one at a time ({out['together_speedup']:.2f}x)")
    return out
