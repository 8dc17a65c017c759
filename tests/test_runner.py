"""The analysis runner on its own: chunks and resume (with a stub model and task, so only the runner is under test),
claims of the model folder and of each analysis's outputs, identity mismatches as one-line errors, the workspace's
models when no --ckpt is given, and library errors that speak of values while the command line names flags."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from dhanalysis.probes.harness import (RunOptions, TaskState, analyse, finished_chunks, finished_runs, load_models,
                                        merge_chunks)
from dhanalysis.probes.sliding_window import compute_sliding_window
from dhanalysis.probes.spatial import compute_spatial_corr
from dhanalysis.cli import main
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.errors import DHError
from dhanalysis.folders import FolderTaken
from dhanalysis.model import build_model, save_checkpoint

from helpers import tiny_config

QUIET = RunOptions(chunk_size=2, progress=False, rank=0, world_size=1)


# ------------------------------------------------------------------------------------------------ stubs
class Images(torch.utils.data.Dataset):
    """``n`` tiny images of one box each; image i has id 10 + i."""

    def __init__(self, n: int):
        self.ids = [10 + i for i in range(n)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        target = {"image_id": torch.tensor(self.ids[i]), "boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]),
                  "labels": torch.tensor([1]), "iscrowd": torch.tensor([0]), "area": torch.tensor([16.0])}
        return torch.zeros(3, 8, 8), target


class Backbone(torch.nn.Module):
    """What the runner asks of a model: ``features`` of one image and a parameter to find the device from."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def features(self, images, targets):
        return SimpleNamespace(image_sizes=[tuple(images[0].shape[-2:])]), {"0": images[0][None]}, targets


class CountTask:
    """Sums image ids and records which images it saw."""

    name, unit = "count", "boxes"

    def __init__(self):
        self.seen: list[int] = []

    def new_state(self) -> TaskState:
        return TaskState(sums={"ids": torch.zeros((), dtype=torch.float64)})

    def process(self, ctx, state: TaskState) -> int:
        self.seen.append(ctx.image_id)
        state.sums["ids"] += ctx.image_id
        state.count("boxes", len(ctx.boxes))
        return len(ctx.boxes)


# ------------------------------------------------------------------------------------------------ chunks
def test_chunks_hold_chunk_size_images_and_merge_to_every_image(tmp_path):
    task = CountTask()
    merged = analyse(Backbone(), Images(5), [task], tmp_path / "chunks", {"analysis": "count"}, QUIET)
    assert [c["image_ids"] for c in finished_chunks(tmp_path / "chunks")] == [[10, 11], [12, 13], [14]]
    assert merged.image_ids == [10, 11, 12, 13, 14] and task.seen == merged.image_ids
    assert float(merged.states["count"].sums["ids"]) == sum(merged.image_ids)
    assert merged.counts["images"] == 5 and merged.states["count"].counts["boxes"] == 5
    assert json.loads((tmp_path / "chunks" / "run.json").read_text()) == {"run": {"analysis": "count"}}


def test_a_killed_run_resumes_with_the_images_no_manifest_lists(tmp_path):
    chunk_dir = tmp_path / "chunks"
    analyse(Backbone(), Images(5), [CountTask()], chunk_dir, {"analysis": "count"}, QUIET)
    # as if killed after its second chunk: the third chunk is neither listed nor (completely) written
    manifest = chunk_dir / "manifest.rank0.json"
    data = json.loads(manifest.read_text())
    last = data["chunks"].pop()
    manifest.write_text(json.dumps(data))
    (chunk_dir / last["file"]).write_bytes(b"half a chunk")
    task = CountTask()
    merged = analyse(Backbone(), Images(5), [task], chunk_dir, {"analysis": "count"}, QUIET)
    assert task.seen == [14]  # only what was missing
    assert merged.image_ids == [10, 11, 12, 13, 14] and float(merged.states["count"].sums["ids"]) == 60


def test_shards_of_two_ranks_merge_to_the_whole_run(tmp_path):
    seen, merged = {}, {}
    for rank in (1, 0):  # rank 0 last: it merges once every rank is done (torchrun's barrier, played in order)
        task = CountTask()
        options = RunOptions(chunk_size=1, progress=False, rank=rank, world_size=2)
        merged[rank] = analyse(Backbone(), Images(5), [task], tmp_path / "chunks", {"analysis": "count"}, options)
        seen[rank] = task.seen
    assert seen == {0: [10, 12, 14], 1: [11, 13]}  # image i goes to rank i % world
    assert merged[1] is None and merged[0].image_ids == [10, 11, 12, 13, 14]
    assert sorted(p.name for p in (tmp_path / "chunks").glob("manifest.*")) == ["manifest.rank0.json",
                                                                                 "manifest.rank1.json"]


def test_chunks_of_another_key_are_refused_unless_overwrite(tmp_path):
    chunk_dir = tmp_path / "chunks"
    analyse(Backbone(), Images(3), [CountTask()], chunk_dir, {"analysis": "count", "max_images": 3}, QUIET)
    with pytest.raises(FolderTaken, match=r"holds partial results of another model or configuration "
                                          r"\(max_images: 3 vs 2\)"):
        analyse(Backbone(), Images(3), [CountTask()], chunk_dir, {"analysis": "count", "max_images": 2}, QUIET)
    task = CountTask()
    analyse(Backbone(), Images(3), [task], chunk_dir, {"analysis": "count", "max_images": 2}, QUIET, overwrite=True)
    assert task.seen == [10, 11, 12]  # started again from nothing
    assert json.loads((chunk_dir / "run.json").read_text())["run"]["max_images"] == 2


def test_a_damaged_chunk_is_a_folder_error_and_chunk_size_a_value_error(tmp_path):
    chunk_dir = tmp_path / "chunks"
    analyse(Backbone(), Images(2), [CountTask()], chunk_dir, {"analysis": "count"}, QUIET)
    (chunk_dir / finished_chunks(chunk_dir)[0]["file"]).write_bytes(b"garbage")
    with pytest.raises(FolderTaken, match="listed as finished but cannot be read"):
        merge_chunks(chunk_dir)
    with pytest.raises(DHError, match="^chunk size must be at least 1 image, got 0$"):
        analyse(Backbone(), Images(2), [CountTask()], tmp_path / "other", {}, RunOptions(chunk_size=0, rank=0))


# ------------------------------------------------------------------------------------------------ real models
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("runner")
    data = base / "data"
    make_synth_dataset(data, num_train=1, num_val=3, image_size=64, seed=0)
    ckpts = {}
    for variant in ("single-fc", "double-head"):
        torch.manual_seed(0)
        cfg = tiny_config(variant, "model.num_classes=6", "model.min_size=64", "model.max_size=64", f"data.root={data}")
        ckpts[variant] = base / f"{variant}.pth"
        save_checkpoint(ckpts[variant], build_model(cfg))
    return SimpleNamespace(base=base, data=data, ckpt=ckpts)


def test_load_models_claims_the_model_folder(world, tmp_path):
    folder = tmp_path / "res"
    (run,) = load_models([world.ckpt["single-fc"]], out=folder, device="cpu")
    assert run.folder == folder and run.name == "synth-single-fc" and run.max_images is None
    assert json.loads((folder / "config.json").read_text())["model"]["variant"] == "single-fc"
    (folder / "eval.csv").write_text("model,mode\n")
    (folder / "notes.md").write_text("mine")
    with pytest.raises(FolderTaken, match=r"holds results of another model or configuration \(model\."):
        list(load_models([world.ckpt["double-head"]], out=folder, device="cpu"))
    assert (folder / "eval.csv").exists()
    list(load_models([world.ckpt["double-head"]], out=folder, device="cpu", overwrite=True))
    assert json.loads((folder / "config.json").read_text())["model"]["variant"] == "double-head"
    assert not (folder / "eval.csv").exists() and (folder / "notes.md").read_text() == "mine"


def test_opening_a_model_writes_nothing_until_its_folder_is_claimed(world, tmp_path):
    """`open_models` loads (model, dataset, folder-to-be) and touches no folder; `claim_run` then claims it, refusing
    another model's folder as `load_models` does."""
    from dhanalysis.probes.harness import claim_run, open_models

    folder = tmp_path / "res"
    (run,) = open_models([world.ckpt["single-fc"]], out=folder, device="cpu")
    assert run.folder == folder and run.name == "synth-single-fc" and len(run.dataset) == 3
    assert not folder.exists()
    assert claim_run(run) is run
    assert json.loads((folder / "config.json").read_text()) == run.config
    (other,) = open_models([world.ckpt["double-head"]], out=folder, device="cpu")
    with pytest.raises(FolderTaken):
        claim_run(other)
    claim_run(other, overwrite=True)
    assert json.loads((folder / "config.json").read_text())["model"]["variant"] == "double-head"


def test_an_analysis_resumes_its_own_results_and_restarts_on_overwrite(world, tmp_path):
    options = RunOptions(chunk_size=1, progress=False)
    (run,) = load_models([world.ckpt["single-fc"]], out=tmp_path, max_images=2, device="cpu")
    first = compute_spatial_corr(run, options=options)
    assert first.summary["images"] == 2 and first.summary["run"]["max_images"] == 2
    assert [p.name for p in first.paths][-1] == "spatial_summary.json"
    chunk = tmp_path / "chunks" / "spatial_corr" / finished_chunks(tmp_path / "chunks" / "spatial_corr")[0]["file"]
    stamp = chunk.stat().st_mtime_ns
    again = compute_spatial_corr(run, options=options)
    assert chunk.stat().st_mtime_ns == stamp  # resumed: nothing scored twice
    assert again.summary["objects"] == first.summary["objects"]
    compute_spatial_corr(run, options=options, overwrite=True)
    assert chunk.stat().st_mtime_ns != stamp  # started again


def test_an_identity_mismatch_is_a_one_line_error_naming_the_flag(world, tmp_path, capsys):
    argv = ["spatial-corr", "--ckpt", str(world.ckpt["single-fc"]), "--out", str(tmp_path), "--device", "cpu",
            "--no-progress", "--max-images", "1"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv[:-1] + ["2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dhanalysis: error: ") and err.count("\n") == 1
    assert "spatial-correlation results of another model or configuration (max_images: 1 vs 2)" in err
    assert err.rstrip().endswith("rerun with --overwrite to replace them, or choose another --out")


def test_library_errors_speak_of_values_the_command_line_of_flags(world, tmp_path, capsys):
    (run,) = load_models([world.ckpt["single-fc"]], out=tmp_path, max_images=1, device="cpu")
    for kwargs, message in (({"raw_sample": -1}, "raw sample must be 0 or more"),
                            ({"precision": "bf16", "scoring": "reference"}, "reference scoring path runs in fp32"),
                            ({"grid": "hexagonal"}, "unknown sliding-window grid 'hexagonal'")):
        with pytest.raises(DHError, match=message) as error:
            compute_sliding_window(run, proposals_per_gt=20, **kwargs)
        assert "--" not in str(error.value)
    with pytest.raises(DHError, match="number of images must be at least 1, got 0"):
        list(load_models([world.ckpt["single-fc"]], max_images=0, device="cpu"))
    base = ["sliding-window", "--ckpt", str(world.ckpt["single-fc"]), "--out", str(tmp_path), "--device", "cpu"]
    for extra, flag in ((["--raw-sample", "-1"], "--raw-sample must be at least 0"),
                        (["--batch-size", "0"], "--batch-size must be at least 1"),
                        (["--chunk-size", "0"], "--chunk-size must be at least 1"),
                        (["--max-images", "0"], "--max-images must be at least 1"),
                        (["--name", "a", "--name", "b"], "give one --name per --ckpt")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dhanalysis: error: {flag}") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------ the workspace
def test_without_ckpt_the_workspace_runs_are_analysed_as_listed(world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["spatial-corr", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished run (model_final.pth) under" in err and "dhanalysis train" in err

    for name, variant in (("synth-fc", "single-fc"), ("sweep/dh", "double-head")):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        shutil.copyfile(world.ckpt[variant], tmp_path / "checkpoints" / name / "model_final.pth")
    (tmp_path / "checkpoints" / "unfinished").mkdir()
    shutil.copyfile(world.ckpt["single-fc"], tmp_path / "checkpoints" / "unfinished" / "checkpoint.pth")
    assert list(finished_runs()) == ["sweep-dh", "synth-fc"]

    assert main(["spatial-corr", "--device", "cpu", "--max-images", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    taken = [line.split(":")[0] for line in out.splitlines() if line.startswith("[")]
    assert taken == ["[1/2] sweep-dh", "[2/2] synth-fc"]
    for name, variant in (("sweep-dh", "double-head"), ("synth-fc", "single-fc")):
        folder = tmp_path / "results" / name
        assert (folder / "spatial_corr.npz").is_file()
        assert json.loads((folder / "config.json").read_text())["model"]["variant"] == variant
        assert json.loads((folder / "spatial_summary.json").read_text())["model"] == name
    # the usage line our users write: every trained model of the workspace, on the split named
    assert main(["pcc", "--split", "val", "--device", "cpu", "--max-images", "1", "--proposals-per-gt", "20",
                 "--no-progress"]) == 0
    for name in ("sweep-dh", "synth-fc"):
        summary = json.loads((tmp_path / "results" / name / "pcc_summary.json").read_text())
        assert summary["run"]["split"] == "val" and summary["images"] == 1
    assert main(["spatial-corr", "--device", "cpu", "--name", "x"]) == 2
    assert "--name names the models of --ckpt" in capsys.readouterr().err
