"""Heads trained on a frozen, shared trunk: the backbone, FPN and RPN of one trained detector, run without gradients
and their outputs cached, so that each head variant trains in minutes on a CPU.

The paper trains every model end to end (§5.1), so each variant also has its own backbone. On a shared trunk all
variants see the *same* features and proposals, which isolates the question the paper asks (which head suits which
task) from differences in the learned features; results say which protocol produced them (``train.freeze``).

A trunk output depends only on the image (and whether it was flipped), never on the rest of the batch: each image
runs through the trunk alone, and a batch stacks the cached per-image outputs (feature maps zero-padded to the
largest in the batch, as ``ImageList`` pads images). Caches live for the process and are shared by every run on the
same trunk, so a sweep computes each image's trunk once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dhanalysis.errors import DHError
from dhanalysis.model.checkpoint import load_state_checked, read_checkpoint

log = logging.getLogger(__name__)

TRUNK = ("backbone", "rpn")  # what a shared trunk holds; `train.freeze` naming both turns the cached path on


def load_trunk(model: nn.Module, path: str | Path, modules: tuple[str, ...] = TRUNK) -> None:
    """Copy ``modules`` (top-level parts) from the checkpoint at ``path`` into ``model``; heads stay as built.

    Every key of those parts must exist in both with the same shape (the trunks must be the same network).
    """
    state = read_checkpoint(path)["model"]
    for name in modules:
        part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        try:
            load_state_checked(getattr(model, name), part, f"{path} ({name})")
        except DHError as exc:
            raise DHError(f"train.init_from {path} does not hold this model's {'/'.join(modules)} ({exc}); use a "
                          "checkpoint of the same backbone, FPN width and anchors") from None


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Stop gradients to every parameter under ``prefixes`` (``backbone``, ``rpn``, ``backbone.body``, ...)."""
    known = {name.split(".")[0] for name, _ in model.named_children()}
    for prefix in prefixes:
        if prefix.split(".")[0] not in known:
            raise DHError(f"train.freeze names '{prefix}', which is not a part of the model ({', '.join(sorted(known))})")
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)


def hold_frozen_norms(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Put the BatchNorm layers of frozen parts in eval mode (call after ``model.train()``): frozen means their
    running statistics stay as trained, too."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(
                name == p or name.startswith(p + ".") for p in prefixes):
            module.eval()


def trunk_frozen(prefixes: tuple[str, ...]) -> bool:
    return all(part in prefixes for part in TRUNK)


@dataclass
class TrunkOutput:
    """One image through the trunk: FPN maps ``{name: (1, C, h, w)}``, proposals ``(P, 4)``, target, image size."""

    features: dict[str, torch.Tensor]
    proposals: torch.Tensor
    target: dict
    image_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.features.values()) + self.proposals.numel() * 4


@dataclass
class TrunkCache:
    """Trunk outputs by (image id, flipped), up to ``budget_bytes``; beyond it outputs are recomputed each time."""

    budget_bytes: int
    entries: dict[tuple[int, bool], TrunkOutput] = field(default_factory=dict)
    used: int = 0
    hits: int = 0
    misses: int = 0

    def get(self, key: tuple[int, bool]) -> TrunkOutput | None:
        out = self.entries.get(key)
        if out is None:
            self.misses += 1
        else:
            self.hits += 1
        return out

    def put(self, key: tuple[int, bool], out: TrunkOutput) -> None:
        if self.used + out.nbytes <= self.budget_bytes:
            self.entries[key] = out
            self.used += out.nbytes


_CACHES: dict[tuple, TrunkCache] = {}


def shared_cache(identity: tuple, budget_gb: float) -> TrunkCache:
    """The process-wide cache of one trunk (``identity``: checkpoint file and everything the outputs depend on)."""
    if identity not in _CACHES:
        _CACHES.clear()  # one trunk at a time: a new one frees the previous one's memory
        _CACHES[identity] = TrunkCache(int(budget_gb * 2**30))
    return _CACHES[identity]


def cache_identity(cfg, init_from: str) -> tuple:
    """What a trunk output depends on: the trunk's weights (file, size, time) and the model's input and RPN settings."""
    p = Path(init_from)
    stat = p.stat()
    m = cfg.model
    return (str(p.resolve()), stat.st_size, stat.st_mtime_ns, repr(m.backbone), repr(m.rpn), m.min_size, m.max_size,
            cfg.data.root, cfg.data.train_split)


@torch.no_grad()
def run_trunk(model: nn.Module, image: torch.Tensor, target: dict) -> TrunkOutput:
    """One image through transform, backbone + FPN and RPN (training-time proposal counts, as end to end)."""
    # the transform draws a size and the RPN's loss samples anchors with torch's RNG; keep both out of the training
    # stream, so that a run with a warm cache and one with a cold cache (a resumed run) draw the same numbers
    with torch.random.fork_rng(devices=[image.device] if image.device.type == "cuda" else []):
        image_list, targets = model.transform([image], [target])
        features = model.backbone(image_list.tensors)
        proposals, _ = model.rpn(image_list, features, targets)
    return TrunkOutput({k: v for k, v in features.items()}, proposals[0], targets[0], image_list.image_sizes[0])


def stack_features(outputs: list[TrunkOutput]) -> dict[str, torch.Tensor]:
    """Per-image maps stacked into a batch, zero-padded at the bottom and right to the largest of each level."""
    stacked = {}
    for name in outputs[0].features:
        maps = [o.features[name] for o in outputs]
        h = max(m.shape[-2] for m in maps)
        w = max(m.shape[-1] for m in maps)
        stacked[name] = torch.cat([F.pad(m, (0, w - m.shape[-1], 0, h - m.shape[-2])) for m in maps])
    return stacked


def head_losses(models: list[tuple[nn.Module, nn.Module]], images: list[torch.Tensor], targets: list[dict],
                cache: TrunkCache) -> list[dict[str, torch.Tensor]]:
    """The RoI heads' losses on a frozen trunk's (cached) outputs: the training step of shared-trunk runs.

    ``models``: (model, heads) pairs sharing one trunk, ``heads`` being ``model.roi_heads`` or its
    DistributedDataParallel wrapper under torchrun. The trunk runs on the first model; the RoIs are sampled and
    pooled once (`pooled_samples`) and every model's branches read them, so N heads cost one sampling and pooling
    and their own layers. Returns each model's loss dict, in order.
    """
    outputs = []
    lead = models[0][0]
    for image, target in zip(images, targets):
        key = (int(target["image_id"]), bool(target.get("flipped", False)))
        out = cache.get(key)
        if out is None:
            out = run_trunk(lead, image, target)
            cache.put(key, out)
        outputs.append(out)
    features = stack_features(outputs)
    sizes = [o.image_size for o in outputs]
    if len(models) == 1:  # the heads' own forward: under DDP its hooks must see the call
        _, losses = models[0][1](features, [o.proposals for o in outputs], sizes, [o.target for o in outputs])
        return [losses]
    boxes, _, labels, regression_targets = lead.roi_heads.select_training_samples(
        [o.proposals for o in outputs], [o.target for o in outputs])
    pooled_by_scale: dict[float, dict[str, torch.Tensor]] = {}
    losses = []
    for model, _ in models:
        heads = model.roi_heads
        if heads.conv_roi_scale not in pooled_by_scale:
            pooled_by_scale[heads.conv_roi_scale] = {}
        pooled = pooled_by_scale[heads.conv_roi_scale]
        needed = {"enlarged" if name in heads.enlarged_branches else "plain" for name in heads.branches}
        if needed - set(pooled):
            pooled.update({k: v for k, v in heads.pool(features, boxes, sizes).items() if k not in pooled})
        branch_out = {name: branch(heads.branch_input(pooled, name)) for name, branch in heads.branches.items()}
        losses.append(heads.branch_losses(branch_out, labels, regression_targets))
    return losses
