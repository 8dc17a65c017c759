"""The training loop: SGD with warm-up and multi-step decay, atomic checkpoints, bitwise resume on CPU.

Reproducibility is designed in, so that a run killed at iteration k and resumed equals the uninterrupted run:
- the data order is a function of (seed, epoch) through `DistributedSampler`, and a resumed run skips the batches
  already seen without loading them;
- each sample's augmentation draws from its own seed (seed, epoch, position), not from a worker's RNG;
- the DataLoader gets its own generator, so creating it does not consume the model's RNG stream;
- checkpoints carry the model, optimizer, scheduler, iteration and the torch RNG states.

Learning rate: ``train.lr`` is for ``train.ims_per_batch`` images in total (over all ranks). Changing the total batch
with ``--ims-per-batch`` scales the LR linearly and the schedule (iterations, steps, warm-up) inversely, the usual
linear scaling rule, so the number of epochs stays the same.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from torch.utils.data import DataLoader, DistributedSampler

from dhanalysis.config import Config, config_from_dict, config_to_dict
from dhanalysis.data.coco import build_dataset, collate_fn
from dhanalysis.engine.distributed import (cpu_has_bf16, get_rank, get_world_size, init_distributed, is_main,
                                           resolve_device)
from dhanalysis.engine.trunk import (cache_identity, freeze, head_losses, hold_frozen_norms, load_trunk, shared_cache,
                                     trunk_frozen)
from dhanalysis.errors import DHError
from dhanalysis.folders import atomic_write_text, claim
from dhanalysis.model.build import build_model
from dhanalysis.model.checkpoint import load_state_checked, read_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"
FINAL = "model_final.pth"


def scale_schedule(cfg: Config, ims_per_batch: int) -> Config:
    """The linear scaling rule: LR × (new batch / reference batch), iterations and steps × the inverse."""
    t = cfg.train
    if ims_per_batch == t.ims_per_batch:
        return cfg
    factor = ims_per_batch / t.ims_per_batch
    train = replace(
        t,
        ims_per_batch=ims_per_batch,
        lr=t.lr * factor,
        iterations=max(1, round(t.iterations / factor)),
        steps=tuple(round(s / factor) for s in t.steps),
        warmup_iters=round(t.warmup_iters / factor),
    )
    return replace(cfg, train=train)


def lr_factor(iteration: int, cfg: Config) -> float:
    """Linear warm-up from ``warmup_factor`` to 1, then ×gamma at each step."""
    t = cfg.train
    decay = t.gamma ** sum(iteration >= s for s in t.steps)
    if iteration < t.warmup_iters:
        alpha = iteration / t.warmup_iters
        return decay * (t.warmup_factor * (1 - alpha) + alpha)
    return decay


class _SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that item ``(index, seed)`` applies its random augmentation with that seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class _ResumableBatches(torch.utils.data.Sampler):
    """Batches of ``(index, seed)`` for iterations ``start..end``, epoch after epoch of a `DistributedSampler`."""

    def __init__(self, sampler: DistributedSampler, batch_size: int, seed: int, start: int, end: int):
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed
        self.start, self.end = start, end
        self.per_epoch = len(sampler) // batch_size
        if self.per_epoch == 0:
            raise DHError(f"the training split has fewer images ({len(sampler)} per rank) than one batch "
                          f"({batch_size}); lower train.ims_per_batch")

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        it = self.start
        while it < self.end:
            epoch, offset = divmod(it, self.per_epoch)
            self.sampler.set_epoch(epoch)
            indices = list(self.sampler)
            for b in range(offset, self.per_epoch):
                if it >= self.end:
                    return
                batch = indices[b * self.batch_size:(b + 1) * self.batch_size]
                yield [(i, hash((self.seed, epoch, i)) & 0x7FFFFFFF) for i in batch]
                it += 1


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _prepare_out_dir(out: Path, cfg: Config, resume: bool, overwrite: bool) -> dict | None:
    """Claim the output folder for ``cfg``; return the checkpoint to resume from, if any.

    An earlier run there is refused unless ``resume`` (same config: it continues) or ``overwrite`` (its checkpoints
    and metrics are deleted; nothing else in the folder is touched).
    """
    ckpt, final = out / CHECKPOINT, out / FINAL
    existing = final if final.exists() else ckpt if ckpt.exists() else None
    state = read_checkpoint(existing) if existing is not None and resume and not overwrite else None
    stored: Any = existing  # without resume, that a run is there is enough to refuse or replace it
    wanted = config_to_dict(cfg)
    if state is not None:
        stored = config_to_dict(config_from_dict(state["config"]))
        # the stored config has num_classes filled in from the dataset; compare on equal terms
        wanted["model"]["num_classes"] = stored["model"]["num_classes"]
    what = f"a training run ({existing.name})" if existing is not None else "a training run"
    resumed = claim(out, wanted, stored, [ckpt, final, out / "metrics.jsonl"], overwrite=overwrite, restart=overwrite,
                    resume=resume, what=what)
    return state if resumed else None


def _trim_metrics(path: Path, iteration: int) -> None:
    """Drop metric lines past the checkpoint we resume from, so the log reads as one uninterrupted run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("iteration", 0) <= iteration:
                keep.append(line)
        except json.JSONDecodeError:  # a blank line, or one cut short by a kill
            continue
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def train(
    cfg: Config,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    max_iterations: int | None = None,
    progress: bool = True,
) -> Path:
    """Train ``cfg``'s model and return the path of ``model_final.pth``.

    ``max_iterations`` stops early (the run can be resumed), which the tests use to simulate an interruption.
    """
    dev = resolve_device(device)
    init_distributed(dev.type)
    rank, world = get_rank(), get_world_size()
    out = Path(out)
    t = cfg.train
    if t.ims_per_batch % world:
        raise DHError(f"train.ims_per_batch={t.ims_per_batch} does not split evenly over {world} processes")

    state = _prepare_out_dir(out, cfg, resume, overwrite) if is_main() else None
    if world > 1:
        state_flag = [state is not None]
        torch.distributed.broadcast_object_list(state_flag)
        if state_flag[0] and state is None:
            state = read_checkpoint(out / (FINAL if (out / FINAL).exists() else CHECKPOINT))
    start_iter = int(state["iteration"]) if state else 0
    if state is not None and start_iter >= t.iterations:
        if is_main():
            print(f"{out / FINAL} is complete ({start_iter} iterations); nothing to do")
        return out / FINAL

    torch.manual_seed(t.seed + rank)
    random.seed(t.seed + rank)
    dataset = build_dataset(cfg.data, train=True)
    model = build_model(cfg, dataset.num_classes, pretrained=state is None).to(dev)  # a resume's state replaces it
    cfg = model.config  # with num_classes filled in
    if t.init_from:
        load_trunk(model, t.init_from)
    if t.freeze:
        freeze(model, t.freeze)
    cache = None
    if trunk_frozen(t.freeze):
        if not t.init_from:
            raise DHError("train.freeze holds backbone and rpn but train.init_from is empty: a frozen trunk must "
                          "come from a trained detector's checkpoint")
        cache = shared_cache(cache_identity(cfg, t.init_from), t.trunk_cache_gb)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    if state is not None:
        load_state_checked(model, state["model"], str(out))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
        if is_main():
            print(f"resuming {out} from iteration {start_iter}")
    if is_main():
        # also on a fresh start: a run killed before its first checkpoint leaves lines no checkpoint stands behind
        _trim_metrics(out / "metrics.jsonl", start_iter)

    ddp_model = model
    if world > 1:  # on a frozen trunk only the heads have gradients to reduce
        ddp_model = torch.nn.parallel.DistributedDataParallel(model.roi_heads if cache is not None else model,
                                                              device_ids=[dev.index] if dev.type == "cuda" else None)
    per_rank = t.ims_per_batch // world
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=t.seed, drop_last=True)
    end_iter = t.iterations if max_iterations is None else min(t.iterations, max_iterations)
    batches = _ResumableBatches(sampler, per_rank, t.seed, start_iter, end_iter)
    loader = DataLoader(_SeededSamples(dataset), batch_sampler=batches, collate_fn=collate_fn,
                        num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(t.seed),
                        persistent_workers=False)

    if dev.type == "cuda":
        use_amp = t.amp
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    else:
        use_amp, amp_dtype = t.cpu_bf16 and cpu_has_bf16(), torch.bfloat16
        if t.cpu_bf16 and not use_amp:
            log.warning("train.cpu_bf16 is set but this CPU (%s) has no bf16 units; training in fp32",
                        torch.backends.cpu.get_cpu_capability())
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        log.info("training %s (%s) for %d iterations on %s x%d; outputs in %s", cfg.name, cfg.model.variant,
                 t.iterations, dev, world, out)

    def checkpoint(path: Path, iteration: int) -> None:
        rng = [None] * world
        if world > 1:
            torch.distributed.all_gather_object(rng, _rng_state())
        else:
            rng = [_rng_state()]
        if is_main():
            save_checkpoint(path, model, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            iteration=iteration, rng=rng if world > 1 else rng[0])

    model.train()
    hold_frozen_norms(model, t.freeze)
    if cache is not None:
        log.info("heads on the frozen trunk of %s; trunk outputs cached (up to %.1f GB)", t.init_from,
                 t.trunk_cache_gb)
    bar = None
    if is_main() and progress:
        from tqdm import tqdm

        bar = tqdm(total=t.iterations, initial=start_iter, desc=f"train {cfg.name}", unit="it", dynamic_ncols=True)
    metrics_file = (out / "metrics.jsonl").open("a") if is_main() else None
    iteration = last_logged = start_iter
    tick = time.perf_counter()
    try:
        for images, targets in loader:
            images = [img.to(dev, non_blocking=True) for img in images]
            targets = [{k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in tg.items()} for tg in targets]
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                if cache is not None:
                    losses = head_losses(model, ddp_model if world > 1 else model.roi_heads, images, targets, cache)
                else:
                    losses = ddp_model(images, targets)
            total = sum(losses.values())
            if not torch.isfinite(total):
                terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                kept = "the last good checkpoint " + str(out / CHECKPOINT) if (out / CHECKPOINT).exists() else \
                    "no checkpoint yet"
                raise DHError(f"non-finite loss at iteration {iteration + 1} ({terms}); kept {kept}; lower train.lr "
                              "or set train.clip_grad_norm")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if t.clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, t.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            iteration += 1

            if is_main() and (iteration % t.log_period == 0 or iteration == end_iter):
                now = time.perf_counter()
                record = {"iteration": iteration, "lr": optimizer.param_groups[0]["lr"], "loss": total.item(),
                          **{k: v.item() for k, v in losses.items()},
                          "time_per_iter": (now - tick) / max(1, iteration - last_logged)}
                last_logged, tick = iteration, now
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            if iteration % t.checkpoint_period == 0 and iteration < t.iterations:
                checkpoint(out / CHECKPOINT, iteration)
    finally:
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()

    if iteration >= t.iterations:
        checkpoint(out / FINAL, iteration)
        if is_main():
            (out / CHECKPOINT).unlink(missing_ok=True)
            print(f"wrote {out / FINAL} and {out / 'metrics.jsonl'}")
        return out / FINAL
    checkpoint(out / CHECKPOINT, iteration)
    return out / CHECKPOINT
