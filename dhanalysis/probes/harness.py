"""Run analyses of trained models over a dataset: the model's folder, resumable chunks, torchrun shards, only sums.

Every analysis of §3 is a *task*: given one image's FPN features and ground truth it adds to running sums (and,
optionally, a few raw rows). The runner owns everything else, in the order one ``--ckpt`` meets it:

- **models** (`load_models`): each checkpoint is loaded in turn with the dataset it was trained for (`open_models`),
  and its results folder is claimed (`claim_run`): ``config.json`` records whose results the folder holds, and
  another model's folder is refused unless ``overwrite`` (`dhanalysis.folders.claim`). Without checkpoints,
  `finished_runs` lists the workspace's;
- **one analysis** (`run_analysis`): its output files are claimed for the analysis key (model, data, arguments), then
  its tasks run in chunks, and `write_summary` writes the summary every analysis shares, last;
- **one backbone pass per image**: transform + backbone + FPN run once, and every task reads the same features;
- **sharding**: under torchrun, dataset image i goes to rank i % world; rank 0 merges when every rank is done;
- **chunks and resume**: every ``chunk_size`` images a rank writes its sums to ``chunk_dir/c<first image id>.pt``
  atomically, then records the chunk and its image ids in its manifest ``chunk_dir/manifest.rank<r>.json`` (also
  atomically). A killed run restarts with the images no manifest lists, so no image is counted twice or lost,
  whatever the world size of the restart; ``chunk_dir/run.json`` holds the key the chunks were computed for.

Chunk files are plain tensors and lists, read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from dhanalysis.errors import DHError
from dhanalysis.folders import FolderTaken, atomic_torch_save, atomic_write_json, claim, read_identity, read_json
from dhanalysis.results import Outputs, owned_paths, result_paths
from dhanalysis.vocab import CHUNKS_DIR, CONFIG_JSON

CHUNK_FORMAT = "dhanalysis-chunk-v1"
DEFAULT_CHUNK_SIZE = 50
CHECKPOINTS = Path("checkpoints")  # the workspace's training runs, one folder each (`dhanalysis train --out`)
RESULTS = Path("results")  # the workspace's results, one folder per model


# ------------------------------------------------------------------------------------------------ models
@dataclass
class ModelRun:
    """One checkpoint ready to analyse: its model, dataset, results folder and the data part of every result's key."""

    ckpt: str
    name: str
    model: Any
    dataset: Any
    folder: Path
    device: torch.device
    config: dict
    data_key: dict  # data_root, split, max_images
    rank: int

    @property
    def max_images(self) -> int | None:
        return self.data_key["max_images"]


def finished_runs(root: str | Path = CHECKPOINTS) -> dict[str, Path]:
    """Every finished training run under ``root`` (a folder holding ``model_final.pth``), by name, in path order.

    A run's name is its folder relative to ``root`` with ``/`` read as ``-`` (``checkpoints/synth-single-fc`` is
    ``synth-single-fc``), which is also its results folder's name.
    """
    from dhanalysis.vocab import FINAL_CHECKPOINT

    root = Path(root)
    if not root.is_dir():
        return {}
    runs = sorted(root.rglob(FINAL_CHECKPOINT))
    return {"-".join(p.parent.relative_to(root).parts) or root.resolve().name: p for p in runs}


def analysis_device(device: str | None = None) -> torch.device:
    """Check ``device`` (None: CUDA when present), join torchrun's process group when launched by it, and return this
    rank's device."""
    from dhanalysis.engine.distributed import init_distributed, resolve_device

    requested = device or ("cuda" if torch.cuda.is_available() else "cpu")
    resolve_device(requested)  # a one-line DHError when CUDA is asked for and absent
    init_distributed(requested)
    return resolve_device(requested)


def as_today(config: Any) -> Any:
    """A stored config as today's code reads it: keys added since take their defaults and renamed keys migrate, so
    results written before a new option existed keep their identity."""
    from dhanalysis.config import config_from_dict, config_to_dict

    if not isinstance(config, dict):
        return config
    try:
        return config_to_dict(config_from_dict(config))
    except (DHError, TypeError, ValueError, AttributeError):
        return config


def stored_key(path: Path) -> Any | None:
    """The identity a record holds (`dhanalysis.folders.read_identity`) with its model config read as today's."""
    stored = read_identity(path)
    if isinstance(stored, dict) and isinstance(stored.get("config"), dict):
        stored = {**stored, "config": as_today(stored["config"])}
    return stored


def claim_model_folder(folder: Path, config: dict, overwrite: bool = False, rank: int = 0) -> None:
    """Make ``folder`` hold this model's results: another model's folder is refused (`FolderTaken` naming the first
    difference of ``config.json``) unless ``overwrite``, which first deletes every result the registry lists
    (`dhanalysis.results.result_paths`)."""
    from dhanalysis.engine.distributed import barrier

    folder = Path(folder)
    record = folder / CONFIG_JSON
    same = claim(folder, config, as_today(read_identity(record)), result_paths(folder), overwrite=overwrite,
                 writer=rank == 0)
    if not same and rank == 0:
        atomic_write_json(record, config)
    barrier()


def open_dataset(root: Path, split: str, num_classes: int, ckpt: str = "the checkpoint", strict: bool = False,
                 skip_bad_images: bool = False, exif_orientation: bool = False):
    """The `CocoDataset` of a split (no transforms: the model resizes), checked against the model's classes; images
    decode as the model's source framework decodes them (``exif_orientation``)."""
    from dhanalysis.data.coco import CocoDataset

    dataset = CocoDataset(root, split, train=False, strict=strict, skip_bad_images=skip_bad_images,
                          exif_orientation=exif_orientation)
    if dataset.num_classes != num_classes:
        raise DHError(f"{ckpt} was trained for {num_classes} classes but {root}/{split} has {dataset.num_classes}; "
                      "evaluate or analyse it on the dataset it was trained on")
    return dataset


def open_models(
    ckpts: Sequence[str | Path],
    names: Sequence[str] | None = None,
    data_root: str | Path | None = None,
    split: str | None = None,
    out: str | Path | None = None,
    max_images: int | None = None,
    device: str | None = None,
    strict: bool = False,
    skip_bad_images: bool = False,
    check: Callable[[Any], None] | None = None,
) -> Iterator[ModelRun]:
    """Load each checkpoint in turn (one model in memory at a time) with its dataset; nothing is written.

    ``names`` name the models (default: each config's ``name``) and their folders: ``out`` itself for one model,
    ``out/<name>`` for several, ``results/<name>`` without ``out`` (`claim_run` makes the folder the model's).
    ``data_root`` and ``split`` default to the config's ``data.root`` and ``data.val_split``; ``max_images`` keeps
    the first N images. ``check(config)`` runs last, so a request the model cannot serve stops before any claim.
    """
    from dhanalysis.config import config_to_dict
    from dhanalysis.model.checkpoint import load_checkpoint

    ckpts = [str(c) for c in ckpts]
    if names and len(names) != len(ckpts):
        raise DHError(f"give one name per checkpoint ({len(ckpts)} checkpoints, {len(names)} names)")
    if max_images is not None and max_images < 1:
        raise DHError(f"the number of images must be at least 1, got {max_images}")
    dev = analysis_device(device)
    seen: set[str] = set()
    for i, ckpt in enumerate(ckpts):
        model = load_checkpoint(ckpt, map_location=dev)
        cfg = model.config
        name = names[i] if names else cfg.name
        if not name or "/" in name or name in (".", ".."):
            raise DHError(f"model name '{name}' of {ckpt} cannot name a folder; give it another name")
        if name in seen:
            raise DHError(f"two checkpoints are both named '{name}'; give each its own name")
        seen.add(name)
        root = Path(data_root or cfg.data.root)
        split_name = split or cfg.data.val_split
        dataset = open_dataset(root, split_name, cfg.model.num_classes, ckpt, strict, skip_bad_images,
                               cfg.model.exif_orientation)
        if check is not None:
            check(cfg)
        folder = (Path(out) / name if len(ckpts) > 1 else Path(out)) if out else RESULTS / name
        data_key = {"data_root": str(root.resolve()), "split": split_name, "max_images": max_images}
        yield ModelRun(ckpt, name, model, dataset, folder, dev, config_to_dict(cfg), data_key, _rank())


def claim_run(run: ModelRun, overwrite: bool = False) -> ModelRun:
    """Make ``run.folder`` hold ``run``'s results (`claim_model_folder`: another model's folder is refused unless
    ``overwrite``); returns ``run``."""
    claim_model_folder(run.folder, run.config, overwrite, run.rank)
    return run


def load_models(
    ckpts: Sequence[str | Path],
    names: Sequence[str] | None = None,
    data_root: str | Path | None = None,
    split: str | None = None,
    out: str | Path | None = None,
    max_images: int | None = None,
    overwrite: bool = False,
    device: str | None = None,
    strict: bool = False,
    skip_bad_images: bool = False,
    check: Callable[[Any], None] | None = None,
) -> Iterator[ModelRun]:
    """Each checkpoint loaded with its dataset (`open_models`, whose arguments these are) and its results folder
    claimed (`claim_run`), one model in memory at a time: what every analysis command runs on."""
    for run in open_models(ckpts, names, data_root, split, out, max_images, device, strict, skip_bad_images, check):
        yield claim_run(run, overwrite)


def _rank() -> int:
    from dhanalysis.engine.distributed import get_rank

    return get_rank()


# ------------------------------------------------------------------------------------------------ tasks
@dataclass
class ImageContext:
    """One image as every task sees it: features computed once, ground truth in the resized frame.

    ``boxes`` ``(G, 4)`` xyxy in the resized image (the frame of ``features`` and of the probe), ``labels`` ``(G,)``
    1..C, ``areas`` ``(G,)`` annotation areas in original pixels (COCO size groups), ``box_index`` ``(G,)`` each
    box's position in the dataset target (crowd boxes are left out of ``boxes``).
    """

    image_id: int
    image_list: Any  # torchvision ImageList of one image
    features: dict[str, torch.Tensor]
    image_size: tuple[int, int]  # resized (height, width)
    original_size: tuple[int, int]
    boxes: torch.Tensor
    labels: torch.Tensor
    areas: torch.Tensor
    box_index: torch.Tensor


@dataclass
class TaskState:
    """What a task accumulates over a chunk: ``sums`` add, ``counts`` add, ``rows`` (tensors of rows) concatenate."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    rows: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def count(self, name: str, value: float) -> None:
        self.counts[name] = self.counts.get(name, 0) + value

    def add(self, other: TaskState) -> None:
        """Add another state's sums and counts (rows are streamed separately, see `iter_rows`)."""
        for k, v in other.sums.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        for k, v in other.counts.items():
            self.count(k, v)

    def to_payload(self) -> dict:
        rows = {k: torch.cat(v) if v else torch.zeros(0) for k, v in self.rows.items()}
        return {"sums": {k: v.detach().cpu() for k, v in self.sums.items()}, "counts": dict(self.counts),
                "rows": {k: v.detach().cpu() for k, v in rows.items()}}


class Task(Protocol):
    """An analysis that adds one image at a time to a `TaskState`."""

    name: str
    unit: str  # what `process` counts, for the progress bar ("proposals", "objects")

    def new_state(self) -> TaskState: ...

    def process(self, ctx: ImageContext, state: TaskState) -> int:
        """Add one image; return how many boxes were scored (for the progress bar)."""
        ...


@dataclass(frozen=True)
class RunOptions:
    """How to run, not what to compute: none of these enter a result's identity."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_images: int | None = None
    workers: int = 0
    progress: bool = True
    rank: int | None = None  # None: torch.distributed's rank (0 without torchrun)
    world_size: int | None = None


@dataclass
class Merged:
    """All finished chunks of a run added up (rank 0)."""

    image_ids: list[int]
    counts: dict[str, float]
    seconds: float
    states: dict[str, TaskState]
    chunk_dir: Path


def _dist_rank_world(options: RunOptions) -> tuple[int, int]:
    if options.rank is not None:
        return options.rank, options.world_size or 1
    from dhanalysis.engine.distributed import get_rank, get_world_size

    return get_rank(), get_world_size()


def _barrier(options: RunOptions) -> None:
    if options.rank is None:
        from dhanalysis.engine.distributed import barrier

        barrier()


def selected_indices(num_images: int, max_images: int | None) -> list[int]:
    """Dataset indices a run covers: the first ``max_images`` (all when None)."""
    n = num_images if max_images is None else min(num_images, max_images)
    return list(range(n))


def shard(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """The indices rank ``rank`` of ``world`` processes: dataset image i goes to rank i % world."""
    return [i for i in indices if i % world == rank]


# ------------------------------------------------------------------------------------------------ chunks
def _manifests(chunk_dir: Path) -> list[Path]:
    return sorted(chunk_dir.glob("manifest.rank*.json"))


def finished_chunks(chunk_dir: Path) -> list[dict]:
    """Every finished chunk ``{"id", "file", "image_ids"}`` listed by any rank's manifest, sorted by id."""
    chunks = []
    for path in _manifests(chunk_dir):
        chunks += read_json(path).get("chunks", [])
    return sorted(chunks, key=lambda c: c["id"])


def finished_image_ids(chunk_dir: Path) -> set[int]:
    return {int(i) for c in finished_chunks(chunk_dir) for i in c["image_ids"]}


def per_image_payloads(chunk_dir: Path, task: str) -> list[dict]:
    """``{"image_id", **the task's payload}`` of every finished chunk of an analysis run with one image per chunk
    (``chunk_size=1``): the per-image sums a bootstrap over images reads."""
    entries = finished_chunks(chunk_dir)
    if not entries:
        raise DHError(f"{chunk_dir} holds no finished chunks; run the analysis with one image per chunk first")
    out = []
    for entry in entries:
        if len(entry["image_ids"]) != 1:
            raise DHError(f"{chunk_dir} has chunks of several images; the bootstrap over images needs one image per "
                          "chunk (run the analysis again with a chunk size of 1)")
        payload = _load_chunk(chunk_dir, entry)
        out.append({"image_id": int(entry["image_ids"][0]), **payload["tasks"].get(task, {})})
    return out


def _load_chunk(chunk_dir: Path, entry: dict) -> dict:
    path = chunk_dir / entry["file"]
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the folder's fault, whatever torch says
        raise FolderTaken(chunk_dir, f"chunk {path} is listed as finished but cannot be read "
                                     f"({type(exc).__name__})") from None
    if payload.get("format") != CHUNK_FORMAT:
        raise FolderTaken(chunk_dir, f"chunk {path} was not written by this version")
    return payload


def _record_chunk(chunk_dir: Path, rank: int, entry: dict) -> None:
    manifest = chunk_dir / f"manifest.rank{rank}.json"
    data = read_json(manifest) if manifest.is_file() else {"chunks": []}
    data["chunks"] = [c for c in data["chunks"] if c["id"] != entry["id"]] + [entry]
    atomic_write_json(manifest, data)


def image_context(model, image: torch.Tensor, target: dict,
                  device: torch.device) -> tuple[ImageContext | None, dict, int]:
    """One dataset item's `ImageContext` (None when it has no non-crowd box), runner counts, and its image id.

    ``image`` ``(3, H, W)`` in [0, 1]; ``target`` as `CocoDataset` returns it (original pixels).
    """
    image_id = int(target["image_id"])
    crowd = target["iscrowd"].bool() if "iscrowd" in target else torch.zeros(len(target["boxes"]), dtype=torch.bool)
    keep = torch.where(~crowd)[0]
    counts = {"images": 1, "boxes": len(keep), "crowd_boxes_skipped": int(crowd.sum())}
    if len(keep) == 0:
        counts["images_without_boxes"] = 1
        return None, counts, image_id
    boxes = target["boxes"][keep].to(device=device, dtype=torch.float32)
    labels = target["labels"][keep].to(device)
    image_list, features, resized = model.features([image.to(device)], [{"boxes": boxes, "labels": labels}])
    areas = target["area"][keep] if "area" in target else (boxes[:, 2:] - boxes[:, :2]).prod(1).cpu()
    ctx = ImageContext(
        image_id=image_id,
        image_list=image_list,
        features=features,
        image_size=tuple(image_list.image_sizes[0]),
        original_size=tuple(image.shape[-2:]),
        boxes=resized[0]["boxes"],
        labels=labels,
        areas=areas.to(device=device, dtype=torch.float64),
        box_index=keep.to(device),
    )
    return ctx, counts, image_id


def _identity(x: Any) -> Any:
    return x


def process_shard(
    model,
    dataset,
    tasks: Sequence[Task],
    indices: Sequence[int],
    chunk_dir: Path,
    rank: int,
    options: RunOptions,
    device: torch.device,
) -> None:
    """Process ``indices`` (skipping images a manifest already lists) and write one chunk per ``chunk_size`` images.

    ``dataset`` is a `CocoDataset` (or anything with ``ids`` and ``(image, target)`` items).
    """
    from tqdm import tqdm

    done = finished_image_ids(chunk_dir)
    todo = [i for i in indices if int(dataset.ids[i]) not in done]
    if not todo:
        return
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, todo), batch_size=None,
                                         num_workers=options.workers, collate_fn=_identity)
    bar = tqdm(total=len(todo), unit="img", dynamic_ncols=True, mininterval=1.0,
               disable=not options.progress or rank != 0, desc=chunk_dir.name)
    scored, started = 0, time.perf_counter()
    unit = getattr(tasks[0], "unit", "boxes") if tasks else "boxes"

    def fresh() -> tuple[dict, dict, list, float]:
        return {t.name: t.new_state() for t in tasks}, {}, [], time.perf_counter()

    states, counts, image_ids, chunk_start = fresh()
    position = 0
    with torch.inference_mode():
        for image, target in loader:
            ctx, image_counts, image_id = image_context(model, image, target, device)
            for k, v in image_counts.items():
                counts[k] = counts.get(k, 0) + v
            if ctx is not None:
                for task in tasks:
                    scored += task.process(ctx, states[task.name])
            image_ids.append(image_id)
            position += 1
            bar.update(1)
            bar.set_postfix({f"{unit}/s": f"{scored / max(time.perf_counter() - started, 1e-9):.0f}"}, refresh=False)
            if len(image_ids) == options.chunk_size or position == len(todo):
                _write_chunk(chunk_dir, rank, image_ids, counts, time.perf_counter() - chunk_start, states)
                states, counts, image_ids, chunk_start = fresh()
    bar.close()


def _write_chunk(chunk_dir: Path, rank: int, image_ids: list[int], counts: dict, seconds: float,
                 states: dict[str, TaskState]) -> None:
    chunk_id = f"c{min(image_ids):012d}"
    payload = {
        "format": CHUNK_FORMAT,
        "id": chunk_id,
        "rank": rank,
        "image_ids": list(image_ids),
        "counts": counts,
        "seconds": seconds,
        "tasks": {name: state.to_payload() for name, state in states.items()},
    }
    atomic_torch_save(payload, chunk_dir / f"{chunk_id}.pt")
    _record_chunk(chunk_dir, rank, {"id": chunk_id, "file": f"{chunk_id}.pt", "image_ids": list(image_ids)})


def merge_chunks(chunk_dir: Path, expected_ids: Sequence[int] | None = None) -> Merged:
    """Add up every finished chunk; with ``expected_ids``, check that each image was counted exactly once."""
    seen: set[int] = set()
    counts: dict[str, float] = {}
    states: dict[str, TaskState] = {}
    seconds = 0.0
    for entry in finished_chunks(chunk_dir):
        ids = {int(i) for i in entry["image_ids"]}
        twice = seen & ids
        if twice:
            raise FolderTaken(chunk_dir, f"{chunk_dir} counts image {min(twice)} in two chunks")
        seen |= ids
        payload = _load_chunk(chunk_dir, entry)
        for k, v in payload["counts"].items():
            counts[k] = counts.get(k, 0) + v
        seconds += float(payload["seconds"])
        for name, part in payload["tasks"].items():
            state = TaskState(sums=part["sums"], counts=part["counts"])
            if name in states:
                states[name].add(state)
            else:
                states[name] = TaskState(sums={k: v.clone() for k, v in state.sums.items()},
                                         counts=dict(state.counts))
    if expected_ids is not None:
        missing = set(int(i) for i in expected_ids) - seen
        if missing:
            raise DHError(f"{len(missing)} images of this run are in no finished chunk of {chunk_dir} (a rank "
                          "stopped early?); run the same analysis again to finish them")
    return Merged(sorted(seen), counts, seconds, states, chunk_dir)


def iter_rows(chunk_dir: Path, task: str, name: str) -> Iterator[torch.Tensor]:
    """The raw rows ``name`` of ``task``, chunk by chunk (one chunk in memory at a time)."""
    for entry in finished_chunks(chunk_dir):
        rows = _load_chunk(chunk_dir, entry)["tasks"].get(task, {}).get("rows", {}).get(name)
        if rows is not None and rows.numel():
            yield rows


# ------------------------------------------------------------------------------------------------ one analysis
@dataclass
class Written:
    """What one analysis of one model wrote (rank 0): its main table, its summary, and every path, summary last."""

    table: Any  # pandas DataFrame
    summary: dict
    paths: list[Path]


def analyse(
    model,
    dataset,
    tasks: Sequence[Task],
    chunk_dir: Path,
    key: dict,
    options: RunOptions = RunOptions(),
    overwrite: bool = False,
    device: torch.device | str | None = None,
) -> Merged | None:
    """Run ``tasks`` over the dataset (this rank's shard), resuming from ``chunk_dir``; rank 0 returns the merge.

    ``key`` is the run's identity (stored in ``chunk_dir/run.json``); chunks of another key are refused unless
    ``overwrite``, which deletes the old chunks first. Other ranks return None once their shard is written.
    """
    chunk_dir = Path(chunk_dir)
    rank, world = _dist_rank_world(options)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if options.chunk_size < 1:
        raise DHError(f"chunk size must be at least 1 image, got {options.chunk_size}")
    run_file = chunk_dir / "run.json"
    resumed = claim(chunk_dir, key, stored_key(run_file), [chunk_dir], overwrite=overwrite, restart=overwrite,
                    what="partial results", writer=rank == 0)
    _barrier(options)
    if rank == 0 and not resumed:
        atomic_write_json(run_file, {"run": key})
    _barrier(options)

    indices = selected_indices(len(dataset), options.max_images)
    process_shard(model, dataset, tasks, shard(indices, rank, world), chunk_dir, rank, options, device)
    _barrier(options)
    if rank != 0:
        return None
    return merge_chunks(chunk_dir, [int(dataset.ids[i]) for i in indices])


def claim_outputs(run: ModelRun, outputs: Outputs, key: dict, overwrite: bool = False) -> None:
    """Make ``outputs`` in ``run.folder`` this analysis's: results of another key (the summary's ``run``) are refused
    unless ``overwrite``, which deletes them, and this analysis's own, first."""
    from dhanalysis.engine.distributed import barrier

    folder = run.folder
    claim(folder, key, stored_key(folder / outputs.summary), owned_paths(folder, outputs),
          overwrite=overwrite, restart=overwrite, what=outputs.what, writer=run.rank == 0)
    barrier()


def run_tasks(run: ModelRun, outputs: Outputs, tasks: Sequence[Task], key: dict,
              options: RunOptions = RunOptions(), overwrite: bool = False) -> Merged | None:
    """Run (or resume) ``tasks`` over the model's images in chunks under ``run.folder/chunks/<outputs.chunks>``;
    rank 0 returns the merge, other ranks None."""
    options = replace(options, max_images=run.max_images)
    return analyse(run.model, run.dataset, tasks, run.folder / CHUNKS_DIR / outputs.chunks, key, options,
                   overwrite=overwrite, device=run.device)


def run_analysis(run: ModelRun, outputs: Outputs, tasks: Sequence[Task], key: dict,
                 options: RunOptions = RunOptions(), overwrite: bool = False) -> Merged | None:
    """`claim_outputs`, then `run_tasks`: one analysis of one model up to its merged sums."""
    claim_outputs(run, outputs, key, overwrite)
    return run_tasks(run, outputs, tasks, key, options, overwrite)


def write_summary(run: ModelRun, outputs: Outputs, key: dict, merged: Merged, started: float,
                  **fields: Any) -> dict:
    """Write ``outputs.summary`` (atomically, after every other output): the key, the model, the analysis's own
    ``fields``, and what every analysis reports (images, time, device); returns it."""
    from dhanalysis.engine.distributed import get_world_size

    summary = {
        "run": key,
        "model": run.name,
        "checkpoint": str(run.ckpt),
        **fields,
        "images": len(merged.image_ids),
        "seconds_compute": merged.seconds,
        "seconds_wall": time.perf_counter() - started,
        "device": str(run.device),
        "world_size": get_world_size(),
    }
    atomic_write_json(run.folder / outputs.summary, summary)
    return summary
