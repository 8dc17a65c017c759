"""Stream a model over a dataset in resumable chunks, sharded over torchrun ranks, keeping only sums.

Every analysis of §3 is a *task*: given one image's FPN features and ground truth it adds to running sums (and,
optionally, a few raw rows). The runner owns everything else:

- **one backbone pass per image**: transform + backbone + FPN run once, and every task reads the same features;
- **sharding**: under torchrun, dataset image i goes to rank i % world; rank 0 merges when every rank is done;
- **chunks and resume**: every ``chunk_size`` images a rank writes its sums to ``chunk_dir/c<first image id>.pt``
  atomically (temporary file, then ``os.replace``), then records the chunk and its image ids in its manifest
  ``chunk_dir/manifest.rank<r>.json`` (also atomically). A killed run restarts with the images no manifest lists,
  so no image is counted twice or lost, whatever the world size of the restart;
- **identity**: ``chunk_dir/run.json`` stores what produced the chunks (model config, data, analysis arguments); a
  folder holding another run is refused unless ``overwrite``.

Chunk files are plain tensors and lists, read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from dhanalysis.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_json  # noqa: F401 - re-exported
from dhanalysis.errors import DHError

CHUNK_FORMAT = "dhanalysis-chunk-v1"
DEFAULT_CHUNK_SIZE = 50


# ------------------------------------------------------------------------------------------------ files
def read_json(path: Path) -> Any:
    """A JSON file's content; an unreadable file is a one-line `DHError` suggesting --overwrite."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DHError(f"{path} is not valid JSON; delete it or rerun with --overwrite") from None


def write_table(frame: pd.DataFrame, stem: Path) -> list[Path]:
    """``stem.csv`` always, ``stem.parquet`` as well when pyarrow is installed; both atomic. Returns the paths."""
    stem = Path(stem)
    paths = [stem.with_suffix(".csv")]
    atomic_write_bytes(paths[0], frame.to_csv(index=False).encode())
    if importlib.util.find_spec("pyarrow") is None:
        return paths
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    paths.append(stem.with_suffix(".parquet"))
    atomic_write_bytes(paths[1], buffer.getvalue())
    return paths


# ------------------------------------------------------------------------------------------------ identity
def first_difference(stored: Any, wanted: Any, prefix: str = "") -> str | None:
    """The first key where two nested dicts differ, as ``key: stored vs wanted`` (None when equal)."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in stored:
                return f"{where}: absent vs {wanted[key]!r}"
            if key not in wanted:
                return f"{where}: {stored[key]!r} vs absent"
            diff = first_difference(stored[key], wanted[key], where)
            if diff:
                return diff
        return None
    if stored != wanted:
        return f"{prefix or 'value'}: {stored!r} vs {wanted!r}"
    return None


def check_identity(path: Path, key: dict, what: str) -> bool:
    """True when ``path`` (a JSON file, or one with a ``run`` entry) holds ``key``; False when absent.

    A different key is a `DHError` naming the first difference and suggesting --overwrite.
    """
    if not path.is_file():
        return False
    stored = read_json(path)
    stored = stored.get("run", stored) if isinstance(stored, dict) else stored
    diff = first_difference(stored, key)
    if diff:
        raise DHError(
            f"{path.parent} holds {what} of another model or configuration ({diff}); rerun with --overwrite to "
            "replace them, or choose another --out"
        )
    return True


def remove_paths(paths: Sequence[Path]) -> None:
    """Delete files and folders this package wrote (only the given paths)."""
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


# Everything the analysis commands write into a model's result folder: what --overwrite may delete when the folder
# belongs to another model. Nothing else in the folder is touched.
RESULT_FILES = (
    "config.json", "summary.json", "sliding_window_stats.csv", "sliding_window_stats.parquet", "raw_sample.csv",
    "raw_sample.parquet", "pcc.csv", "pcc.parquet", "pcc_stats.csv", "pcc_stats.parquet", "pcc_summary.json",
    "spatial_corr.npz", "spatial_corr.csv", "spatial_corr.parquet", "spatial_summary.json", "chunks", "eval.csv",
    "per_class_ap.csv",
)


def prepare_model_folder(folder: Path, config: dict, overwrite: bool, rank: int = 0) -> None:
    """Make ``folder`` hold this model's results: refuse another model's folder unless ``overwrite``.

    ``config.json`` records the model's config; a folder whose config differs is refused (`DHError` naming the
    first difference), or with ``overwrite`` emptied of every analysis result (`RESULT_FILES`) first.
    """
    folder = Path(folder)
    path = folder / "config.json"
    try:
        same = check_identity(path, config, "results")
    except DHError:
        if not overwrite:
            raise
        same = False
        if rank == 0:
            remove_paths([folder / name for name in RESULT_FILES] + sorted(folder.glob("detections_*.json")))
    if not same and rank == 0:
        atomic_write_json(path, config)
    from dhanalysis.engine.distributed import barrier

    barrier()


def open_dataset(root: Path, split: str, num_classes: int, ckpt: str = "the checkpoint"):
    """The `CocoDataset` of a split (no transforms: the model resizes), checked against the model's classes."""
    from dhanalysis.data.coco import CocoDataset

    dataset = CocoDataset(root, split, train=False)
    if dataset.num_classes != num_classes:
        raise DHError(f"{ckpt} was trained for {num_classes} classes but {root}/{split} has {dataset.num_classes}; "
                      "analyse it on the dataset it was trained on (--data-root, --split)")
    return dataset


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


def _load_chunk(chunk_dir: Path, entry: dict) -> dict:
    path = chunk_dir / entry["file"]
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the folder's fault, whatever torch says
        raise DHError(f"chunk {path} is listed as finished but cannot be read ({type(exc).__name__}); rerun with "
                      "--overwrite") from None
    if payload.get("format") != CHUNK_FORMAT:
        raise DHError(f"chunk {path} was not written by this version; rerun with --overwrite")
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
            raise DHError(f"{chunk_dir} counts image {min(twice)} in two chunks; rerun with --overwrite")
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
                          "stopped early?); rerun the same command to finish them")
    return Merged(sorted(seen), counts, seconds, states, chunk_dir)


def iter_rows(chunk_dir: Path, task: str, name: str) -> Iterator[torch.Tensor]:
    """The raw rows ``name`` of ``task``, chunk by chunk (one chunk in memory at a time)."""
    for entry in finished_chunks(chunk_dir):
        rows = _load_chunk(chunk_dir, entry)["tasks"].get(task, {}).get("rows", {}).get(name)
        if rows is not None and rows.numel():
            yield rows


# ------------------------------------------------------------------------------------------------ the whole run
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

    ``key`` is the run's identity (stored in ``chunk_dir/run.json``); a folder with another key is refused unless
    ``overwrite``, which deletes the old chunks first. Other ranks return None once their shard is written.
    """
    chunk_dir = Path(chunk_dir)
    rank, world = _dist_rank_world(options)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if options.chunk_size < 1:
        raise DHError(f"--chunk-size must be at least 1, got {options.chunk_size}")
    run_file = chunk_dir / "run.json"
    if overwrite and rank == 0:
        remove_paths([chunk_dir])
    elif not overwrite:
        check_identity(run_file, key, "partial results")
    _barrier(options)
    if rank == 0:
        chunk_dir.mkdir(parents=True, exist_ok=True)
        if not run_file.is_file():
            atomic_write_json(run_file, {"run": key})
    _barrier(options)

    indices = selected_indices(len(dataset), options.max_images)
    process_shard(model, dataset, tasks, shard(indices, rank, world), chunk_dir, rank, options, device)
    _barrier(options)
    if rank != 0:
        return None
    return merge_chunks(chunk_dir, [int(dataset.ids[i]) for i in indices])
