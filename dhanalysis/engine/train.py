"""The training loop: SGD with warm-up and multi-step decay, atomic checkpoints, bitwise resume on CPU.

Reproducibility is designed in, so that a run killed at iteration k and resumed equals the uninterrupted run:
- the data order is a function of (seed, epoch) through `DistributedSampler`, and a resumed run skips the batches
  already seen without loading them;
- each sample's augmentation draws from its own seed (seed, epoch, position), not from a worker's RNG;
- the DataLoader gets its own generator, so creating it does not consume the model's RNG stream;
- checkpoints carry the model, optimizer, scheduler, iteration and the torch RNG states.

A checkpoint can also be asked for between the periodic ones: SIGUSR1 writes one at the end of the current iteration
and training goes on; SIGTERM writes one and stops (exit 130, resume with ``--resume``). A scheduler that preempts a
job gives it seconds (SLURM's ``--signal=USR1@120``, an eviction's SIGTERM), while the last periodic checkpoint may
be an hour of work behind.

Learning rate: ``train.lr`` is for ``train.ims_per_batch`` images in total (over all ranks). Changing the total batch
with ``--ims-per-batch`` scales the LR linearly and the schedule (iterations, steps, warm-up) inversely, the usual
linear scaling rule, so the number of epochs stays the same.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml
from torch.utils.data import DataLoader, DistributedSampler

from dhanalysis.config import Config, check_ranges, config_from_dict, config_to_dict
from dhanalysis.data.coco import build_dataset, collate_fn
from dhanalysis.engine.distributed import (all_gather_object, cpu_has_bf16, get_rank, get_world_size,
                                           init_distributed, is_main, max_over_ranks, resolve_device)
from dhanalysis.engine.host import retain_freed_memory, set_signal_handlers
from dhanalysis.engine.trunk import (cache_identity, freeze, head_losses, hold_frozen_norms, load_trunk, shared_cache,
                                     trunk_frozen)
from dhanalysis.errors import DHError
from dhanalysis.folders import atomic_write_text, claim
from dhanalysis.model.build import build_model
from dhanalysis.model.checkpoint import load_state_checked, read_checkpoint, save_checkpoint
from dhanalysis.vocab import FINAL_CHECKPOINT

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pth"


def scale_schedule(cfg: Config, ims_per_batch: int) -> Config:
    """The linear scaling rule: LR × (new batch / reference batch), iterations and steps × the inverse. The scaled
    schedule stays in range: at least one iteration, and no decay step rounded down to iteration 0."""
    t = cfg.train
    if isinstance(ims_per_batch, bool) or not isinstance(ims_per_batch, int) or ims_per_batch < 1:
        raise DHError(f"the total batch must be a whole number of images, at least 1, got {ims_per_batch!r}")
    if ims_per_batch == t.ims_per_batch:
        return cfg
    factor = ims_per_batch / t.ims_per_batch
    train = replace(
        t,
        ims_per_batch=ims_per_batch,
        lr=t.lr * factor,
        iterations=max(1, round(t.iterations / factor)),
        steps=tuple(max(1, round(s / factor)) for s in t.steps),
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
        if batch_size < 1:  # a batch of no images never ends an epoch: the loop below would spin forever
            raise DHError(f"a batch needs at least one image per process, got {batch_size}; raise train.ims_per_batch")
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
    ckpt, final = out / CHECKPOINT, out / FINAL_CHECKPOINT
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


# ----------------------------------------------------------------------------------------- the parts
@dataclass
class Precision:
    """The AMP policy: autocast on CUDA when ``train.amp`` (bf16 where supported, else fp16 with a loss scaler);
    bf16 autocast on a CPU only when ``train.cpu_bf16`` and the CPU multiplies bf16 natively."""

    enabled: bool
    dtype: torch.dtype

    @classmethod
    def choose(cls, dev: torch.device, t) -> Precision:
        if dev.type == "cuda":
            enabled = t.amp
            dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
        else:
            enabled, dtype = t.cpu_bf16 and cpu_has_bf16(), torch.bfloat16
            if t.cpu_bf16 and not enabled:
                log.warning("train.cpu_bf16 is set but this CPU (%s) has no bf16 units; training in fp32",
                            torch.backends.cpu.get_cpu_capability())
        return cls(enabled, dtype)

    def autocast(self, dev: torch.device):
        return torch.autocast(dev.type, dtype=self.dtype, enabled=self.enabled)

    def scaler(self) -> torch.amp.GradScaler:
        """A loss scaler for one run (fp16 only; a no-op otherwise)."""
        return torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)


@dataclass
class Run:
    """One model being trained: its config, folder, optimiser state and (under torchrun) its DDP wrapper."""

    cfg: Config
    out: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    params: list[torch.nn.Parameter]
    wrapped: torch.nn.Module  # what the step calls: the model, its heads, or their DDP wrapper
    scaler: torch.amp.GradScaler

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def build_run(cfg: Config, out: Path, num_classes: int, dev: torch.device, state: dict | None,
              precision: Precision, trunk: torch.nn.Module | None = None) -> Run:
    """The model of ``cfg`` with its optimiser and schedule, from ``state`` when resuming. ``trunk``: an already
    built model whose backbone and RPN this one shares (heads trained together on one frozen trunk)."""
    t = cfg.train
    model = build_model(cfg, num_classes, pretrained=state is None).to(dev)  # a resume's state replaces them
    cfg = model.config  # with num_classes filled in
    if trunk is not None:
        model.backbone, model.rpn = trunk.backbone, trunk.rpn
    elif t.init_from:
        load_trunk(model, t.init_from)
    if t.freeze:
        freeze(model, t.freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    if state is not None:
        load_state_checked(model, state["model"], str(out))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    wrapped = model.roi_heads if trunk_frozen(t.freeze) else model
    if get_world_size() > 1:  # on a frozen trunk only the heads have gradients to reduce
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[dev.index] if dev.type == "cuda" else None)
    model.train()
    hold_frozen_norms(model, t.freeze)
    return Run(cfg, out, model, optimizer, scheduler, params, wrapped, precision.scaler())


def make_loader(cfg: Config, dataset, start: int, end: int) -> DataLoader:
    """Batches for iterations ``start..end``: an order fixed by (seed, epoch), each sample augmented from its own
    seed, so a resumed run sees exactly what the uninterrupted one would have."""
    t, world = cfg.train, get_world_size()
    sampler = DistributedSampler(dataset, num_replicas=world, rank=get_rank(), shuffle=True, seed=t.seed,
                                 drop_last=True)
    batches = _ResumableBatches(sampler, t.ims_per_batch // world, t.seed, start, end)
    return DataLoader(_SeededSamples(dataset), batch_sampler=batches, collate_fn=collate_fn,
                      num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(t.seed),
                      persistent_workers=False, worker_init_fn=_leave_stopping_to_the_loop)


def _leave_stopping_to_the_loop(worker_id: int) -> None:
    """A scheduler's SIGTERM often reaches the whole process group. A worker that died of it would end the main
    process with a loader error before the checkpoint the same signal asks it for (`CheckpointRequests`), so workers
    ignore it; the main process shuts them down as it stops, and a worker whose parent is gone exits by itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def save_run(run: Run, path: Path, iteration: int) -> None:
    """An atomic checkpoint of the run: weights, optimiser, schedule, iteration and every rank's RNG states."""
    rng = all_gather_object(_rng_state())
    if is_main():
        save_checkpoint(path, run.model, optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                        iteration=iteration, rng=rng if len(rng) > 1 else rng[0])


def check_finite(total: torch.Tensor, losses: dict[str, torch.Tensor], run: Run, iteration: int) -> None:
    if not torch.isfinite(total):
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        ckpt = run.out / CHECKPOINT
        kept = f"the last good checkpoint {ckpt}" if ckpt.exists() else "no checkpoint yet"
        raise DHError(f"non-finite loss at iteration {iteration + 1} ({terms}); kept {kept}; lower train.lr or set "
                      "train.clip_grad_norm")


def apply_gradients(run: Run, total: torch.Tensor) -> None:
    """Backward, optional gradient clipping, the SGD step and the schedule's step, for one run."""
    scaler = run.scaler
    run.optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    clip = run.cfg.train.clip_grad_norm
    if clip > 0:
        scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, clip)
    scaler.step(run.optimizer)
    scaler.update()
    run.scheduler.step()


class MetricsLog:
    """``metrics.jsonl`` (every ``log_period`` iterations) and the progress bar, on the main process only."""

    def __init__(self, run: Run, start: int, total_iterations: int, progress: bool, desc: str | None = None):
        self.run, self.last, self.tick = run, start, time.perf_counter()
        self.file = (run.out / "metrics.jsonl").open("a") if is_main() else None
        self.bar = None
        if is_main() and progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_iterations, initial=start, desc=desc or f"train {run.cfg.name}", unit="it",
                            dynamic_ncols=True)

    def record(self, iteration: int, end: int, total: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        if self.file is not None and (iteration % self.run.cfg.train.log_period == 0 or iteration == end):
            now = time.perf_counter()
            line = {"iteration": iteration, "lr": self.run.lr, "loss": total.item(),
                    **{k: v.item() for k, v in losses.items()},
                    "time_per_iter": (now - self.tick) / max(1, iteration - self.last)}
            self.last, self.tick = iteration, now
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{total.item():.3f}", lr=f"{self.run.lr:.2g}")

    def close(self) -> None:
        for handle in (self.bar, self.file):
            if handle is not None:
                handle.close()


# ----------------------------------------------------------------------------------------- the loop
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
    return train_together([cfg], [out], resume, overwrite, device, max_iterations, progress)[0]


def train_together(
    cfgs: list[Config],
    outs: list[str | Path],
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    max_iterations: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Train several models, each into its own folder (as `train` would), and return their final checkpoints.

    More than one model must share a frozen trunk (``train.init_from`` + ``train.freeze=[backbone, rpn]``), the
    data, the schedule and the RoI sampling: then every iteration runs the trunk (cached), samples the RoIs and pools
    them once, and feeds every model's heads from them — the heads train together at the cost of their own layers.
    The first model's run is the one `train` would make alone (its RNG stream drives the data order and the RoI
    sampling); the others see the same images and RoIs (common random numbers: comparisons between them are
    paired), and each starts from its own head initialisation, that of `train` with its seed.
    """
    retain_freed_memory()  # the steps' activations are reused, not faulted in anew (engine/host.py), from Python too
    if resume and overwrite:
        raise DHError("resume=True continues the run in the folder and overwrite=True discards it; pass one of them")
    for cfg in cfgs:  # configs built in code (dataclasses.replace) skip config_from_dict's range checks
        check_ranges(cfg)
    dev = resolve_device(device)
    init_distributed(dev.type)
    outs = [Path(o) for o in outs]
    check_together(cfgs)
    if cfgs[0].train.ims_per_batch % get_world_size():
        raise DHError(f"train.ims_per_batch={cfgs[0].train.ims_per_batch} does not split evenly over "
                      f"{get_world_size()} processes")
    states = [_shared_state(out, cfg, resume, overwrite) for cfg, out in zip(cfgs, outs)]
    pending: dict[int, list[int]] = {}  # start iteration -> models that resume from it
    for i, (cfg, state) in enumerate(zip(cfgs, states)):
        start = int(state["iteration"]) if state else 0
        if state is not None and start >= cfg.train.iterations:
            if is_main():
                print(f"{outs[i] / FINAL_CHECKPOINT} is complete ({start} iterations); nothing to do")
        else:
            pending.setdefault(start, []).append(i)
    paths = [out / FINAL_CHECKPOINT for out in outs]
    for start, members in sorted(pending.items()):  # models at another iteration cannot share the RNG stream
        ends = _train_group([cfgs[i] for i in members], [outs[i] for i in members], [states[i] for i in members],
                            start, dev, max_iterations, progress)
        for i, path in zip(members, ends):
            paths[i] = path
    return paths


def check_together(cfgs: list[Config]) -> None:
    """Models trained together must differ in their heads only (one error line names the first difference)."""
    if len(cfgs) < 2:
        return
    first = cfgs[0]
    if not (first.train.init_from and trunk_frozen(first.train.freeze)):
        raise DHError("models train together only on a frozen shared trunk: set train.init_from and "
                      "train.freeze=[backbone, rpn]")
    if get_world_size() > 1:
        raise DHError("models train together in one process; under torchrun train them one at a time")
    t0 = replace(first.train, lr=0.0)
    for cfg in cfgs[1:]:
        m, m0 = cfg.model, first.model
        same = {"data": cfg.data == first.data, "train (but train.lr)": replace(cfg.train, lr=0.0) == t0,
                "model.backbone": m.backbone == m0.backbone, "model.rpn": m.rpn == m0.rpn,
                "model image size": (m.min_size, m.max_size) == (m0.min_size, m0.max_size),
                "model RoI sampling": (m.box_batch_size_per_image, m.box_positive_fraction)
                == (m0.box_batch_size_per_image, m0.box_positive_fraction),
                "model.head RoI pooling": (m.head.roi_size, m.head.sampling_ratio)
                == (m0.head.roi_size, m0.head.sampling_ratio)}
        for what, ok in same.items():
            if not ok:
                raise DHError(f"{cfg.name} cannot train together with {first.name}: their {what} differ (models "
                              "trained together share the trunk, data, schedule and RoI sampling)")


def _shared_state(out: Path, cfg: Config, resume: bool, overwrite: bool) -> dict | None:
    """`_prepare_out_dir` on the main process; the checkpoint to resume from, read on every rank."""
    state = _prepare_out_dir(out, cfg, resume, overwrite) if is_main() else None
    if get_world_size() > 1:
        flag = [state is not None]
        torch.distributed.broadcast_object_list(flag)
        if flag[0] and state is None:
            state = read_checkpoint(out / (FINAL_CHECKPOINT if (out / FINAL_CHECKPOINT).exists() else CHECKPOINT))
    return state


def _train_group(cfgs: list[Config], outs: list[Path], states: list[dict | None], start: int, dev: torch.device,
                 max_iterations: int | None, progress: bool) -> list[Path]:
    """Models resuming from the same iteration, trained in one loop; returns each one's latest checkpoint."""
    rank, t = get_rank(), cfgs[0].train
    torch.manual_seed(t.seed + rank)
    random.seed(t.seed + rank)
    dataset = build_dataset(cfgs[0].data, train=True)
    seeded = _rng_state()
    precision = Precision.choose(dev, t)
    runs: list[Run] = []
    lead_rng = None
    for cfg, out, state in zip(cfgs, outs, states):
        _set_rng_state(seeded)  # each model's heads start from the initialisation a lone run would give them
        runs.append(build_run(cfg, out, dataset.num_classes, dev, state, precision, runs[0].model if runs else None))
        lead_rng = lead_rng or _rng_state()  # the stream a lone run of the first model goes on with
    _set_rng_state(lead_rng)
    if states[0] is not None:
        _set_rng_state(states[0]["rng"][rank] if isinstance(states[0]["rng"], list) else states[0]["rng"])
        if is_main():
            for run in runs:
                print(f"resuming {run.out} from iteration {start}")
    cache = None
    if trunk_frozen(t.freeze):
        if not t.init_from:
            raise DHError("train.freeze holds backbone and rpn but train.init_from is empty: a frozen trunk must "
                          "come from a trained detector's checkpoint")
        cache = shared_cache(cache_identity(runs[0].cfg, t.init_from), t.trunk_cache_gb)
        log.info("heads on the frozen trunk of %s; trunk outputs cached (up to %.1f GB)", t.init_from,
                 t.trunk_cache_gb)
    for run in runs:
        _start_folder(run, start, dev)
    end = t.iterations if max_iterations is None else min(t.iterations, max_iterations)
    iteration = _loop(runs, make_loader(runs[0].cfg, dataset, start, end), start, end, dev, cache, precision,
                      progress)
    return [_finish(run, iteration) for run in runs]


def _start_folder(run: Run, start: int, dev: torch.device) -> None:
    if not is_main():
        return
    # also on a fresh start: a run killed before its first checkpoint leaves lines no checkpoint stands behind
    _trim_metrics(run.out / "metrics.jsonl", start)
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(run.cfg), sort_keys=False))
    log.info("training %s (%s) for %d iterations on %s x%d; outputs in %s", run.cfg.name, run.cfg.model.variant,
             run.cfg.train.iterations, dev, get_world_size(), run.out)


def _loop(runs: list[Run], loader: DataLoader, start: int, end: int, dev: torch.device, cache, precision: Precision,
          progress: bool) -> int:
    """Iterations ``start..end`` of every run; checkpoints every ``checkpoint_period``. Returns the last iteration."""
    t = runs[0].cfg.train
    desc = f"train {len(runs)} heads together ({runs[0].cfg.name}, ...)" if len(runs) > 1 else None
    logs = [MetricsLog(run, start, t.iterations, progress and i == 0, desc) for i, run in enumerate(runs)]
    iteration = start
    requests = CheckpointRequests()
    try:
        requests.listen()  # before the loader forks its workers, which then inherit a handler that only sets a flag
        for images, targets in loader:
            images = [img.to(dev, non_blocking=True) for img in images]
            targets = [{k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in tg.items()} for tg in targets]
            with precision.autocast(dev):
                if cache is not None:
                    all_losses = head_losses([(run.model, run.wrapped) for run in runs], images, targets, cache)
                else:
                    all_losses = [runs[0].wrapped(images, targets)]
            for run, losses, metrics in zip(runs, all_losses, logs):
                total = sum(losses.values())
                check_finite(total, losses, run, iteration)
                apply_gradients(run, total)
                metrics.record(iteration + 1, end, total, losses)
            iteration += 1
            asked = requests.take(dev)
            if (iteration % t.checkpoint_period == 0 or asked) and iteration < t.iterations:
                for run in runs:
                    save_run(run, run.out / CHECKPOINT, iteration)
                requests.report(asked, iteration, runs)
            if asked == CheckpointRequests.STOP:
                if iteration >= t.iterations:  # asked in the last iteration: the final weights, not a checkpoint
                    for run in runs:
                        _finish(run, iteration)
                raise KeyboardInterrupt  # the command's interrupt message says how to resume
    finally:
        requests.close()
        for metrics in logs:
            metrics.close()
    return iteration


class CheckpointRequests:
    """Signals that ask the loop for a checkpoint at the end of the current iteration: SIGUSR1 to go on after it,
    SIGTERM to stop after it. Handlers only set a flag; the loop acts on it between iterations, where the state is
    whole, and under torchrun the ranks agree first (`max_over_ranks`), since saving gathers every rank's RNG state."""

    NONE, SAVE, STOP = 0, 1, 2
    SIGNALS = {"SIGUSR1": SAVE, "SIGTERM": STOP}

    def __init__(self) -> None:
        self.asked = self.NONE
        self.close: Callable[[], None] = lambda: None  # puts the caller's handlers back

    def listen(self) -> None:
        self.close = set_signal_handlers({name: self._handler(what) for name, what in self.SIGNALS.items()})

    def _handler(self, what: int):
        def handle(signum, frame) -> None:
            self.asked = max(self.asked, what)
        return handle

    def take(self, dev: torch.device) -> int:
        """The request every rank agrees on, cleared (one small all-reduce per iteration under torchrun)."""
        asked, self.asked = self.asked, self.NONE
        return max_over_ranks(asked, dev)

    def report(self, asked: int, iteration: int, runs: list[Run]) -> None:
        if asked and is_main():
            then = "stopping" if asked == self.STOP else "training goes on"
            print(f"checkpoint at iteration {iteration} written on request to {runs[0].out / CHECKPOINT}"
                  f"{f' and {len(runs) - 1} more' if len(runs) > 1 else ''}; {then}", flush=True)


def _finish(run: Run, iteration: int) -> Path:
    if iteration >= run.cfg.train.iterations:
        save_run(run, run.out / FINAL_CHECKPOINT, iteration)
        if is_main():
            (run.out / CHECKPOINT).unlink(missing_ok=True)
            print(f"wrote {run.out / FINAL_CHECKPOINT} and {run.out / 'metrics.jsonl'}")
        return run.out / FINAL_CHECKPOINT
    save_run(run, run.out / CHECKPOINT, iteration)
    return run.out / CHECKPOINT


def untrained_checkpoint(cfg: Config, num_classes: int, path: Path) -> Path:
    """The model of ``cfg`` with its heads as initialised under ``train.seed`` (no training step) on the trunk of
    ``train.init_from``, saved to ``path`` (once): the baseline that shows what a head's structure alone gives, which
    training is then measured against (Fig. 4's untrained heads)."""
    path = Path(path)
    if path.exists():
        return path
    if not cfg.train.init_from:
        raise DHError("an untrained-heads baseline needs train.init_from: the trunk the trained heads share")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, num_classes, pretrained=False)
    load_trunk(model, cfg.train.init_from)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model.eval(), iteration=0)
    return path
