"""The one owner of output folders: atomic writes never leave half a file, claims refuse another run's folder and
replace only what a run owns, nested identities are compared key by key."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from dhanalysis.cli import in_flags
from dhanalysis.errors import DHError
from dhanalysis.folders import (FolderTaken, atomic_torch_save, atomic_write_bytes, atomic_write_json, claim,
                                differences, read_identity, write_table)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("fails_in", ["fsync", "replace"])
def test_atomic_write_leaves_no_partial_file_when_the_writer_fails(tmp_path, monkeypatch, fails_in):
    target = tmp_path / "table.csv"
    target.write_bytes(b"old, complete\n")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, fails_in, broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new but never finished\n")
    assert target.read_bytes() == b"old, complete\n"
    assert leftovers(tmp_path) == []


def test_a_serialiser_that_raises_writes_nothing(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"x": Unpicklable()}, tmp_path / "chunk.pt")
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "summary.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_write_table_csv_markdown_and_parquet_choice(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    paths = write_table(frame, tmp_path / "t1", markdown="| a | b |\n", parquet=False)
    assert [p.name for p in paths] == ["t1.md", "t1.csv"]
    assert (tmp_path / "t1.md").read_text() == "| a | b |\n"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t1.csv"), frame)
    paths = write_table(frame, tmp_path / "sub" / "t2.csv")  # a stem with its suffix: the same files
    assert paths[0] == tmp_path / "sub" / "t2.csv" and all(p.suffix in (".csv", ".parquet") for p in paths)
    assert leftovers(tmp_path) == []


def test_differences_name_every_nested_key():
    stored = {"model": {"variant": "single-fc", "head": {"fc_dim": 32}}, "split": "val", "seed": 0}
    wanted = {"model": {"variant": "double-head", "head": {"fc_dim": 32}}, "split": "val", "grid": "sliding"}
    assert differences(stored, wanted) == ["grid: absent vs 'sliding'", "model.variant: 'single-fc' vs 'double-head'",
                                           "seed: 0 vs absent"]
    assert differences(stored, wanted, ignore=("seed", "grid")) == ["model.variant: 'single-fc' vs 'double-head'"]
    assert differences(stored, stored) == [] and differences(1, 2) == ["value: 1 vs 2"]


def test_read_identity_unwraps_run_and_refuses_damaged_records(tmp_path):
    assert read_identity(tmp_path / "absent.json") is None
    atomic_write_json(tmp_path / "summary.json", {"run": {"analysis": "pcc"}, "images": 3})
    assert read_identity(tmp_path / "summary.json") == {"analysis": "pcc"}
    (tmp_path / "config.json").write_text('{"model": ')
    with pytest.raises(FolderTaken, match="config.json is not valid JSON; pass overwrite=True"):
        read_identity(tmp_path / "config.json")


def test_claim_refuses_a_folder_of_another_run_unless_overwrite(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    owned, other = folder / "stats.csv", folder / "notes.txt"
    owned.write_text("theirs")
    other.write_text("not ours to delete")
    mine, theirs = {"model": "single-fc", "images": 4}, {"model": "double-head", "images": 4}

    with pytest.raises(FolderTaken) as refused:
        claim(folder, mine, theirs, [owned], what="sliding-window results")
    message = str(refused.value)
    assert message.startswith(f"{folder} holds sliding-window results of another model or configuration "
                              "(model: 'double-head' vs 'single-fc')")
    assert "overwrite=True" in message and "--" not in message  # the library speaks of values, not flags
    assert owned.read_text() == "theirs"  # refused: nothing touched

    assert claim(folder, mine, theirs, [owned], overwrite=True) is False  # replaced: starts fresh
    assert not owned.exists() and other.read_text() == "not ours to delete"


def test_claim_resumes_its_own_run_restarts_on_request_and_starts_fresh(tmp_path):
    owned = tmp_path / "chunks"
    owned.mkdir()
    key = {"analysis": "spatial-corr", "max_images": 2}
    assert claim(tmp_path, key, dict(key), [owned]) is True and owned.is_dir()  # same run: resume, keep its work
    assert claim(tmp_path, key, dict(key), [owned], overwrite=True) is True  # overwrite alone replaces others only
    assert claim(tmp_path, key, dict(key), [owned], overwrite=True, restart=True) is False and not owned.exists()
    assert claim(tmp_path, key, None, [owned]) is False  # nothing recorded: a fresh start


def test_claim_without_resume_refuses_any_earlier_run(tmp_path):
    ckpt = tmp_path / "checkpoint.pth"
    ckpt.write_bytes(b"weights")
    with pytest.raises(FolderTaken) as refused:
        claim(tmp_path, {"lr": 0.1}, ckpt, [ckpt], resume=False, what="a training run")
    assert refused.value.resumable and "pass resume=True to continue it or overwrite=True" in str(refused.value)
    assert ckpt.exists()
    assert claim(tmp_path, {"lr": 0.1}, ckpt, [ckpt], resume=False, overwrite=True, restart=True) is False
    assert not ckpt.exists()


def test_the_command_line_words_the_remedy_with_its_flags(tmp_path):
    taken = FolderTaken(tmp_path, f"{tmp_path} holds results of another model or configuration (x: 1 vs 2)")
    assert in_flags(taken).endswith("(x: 1 vs 2); rerun with --overwrite to replace them, or choose another --out")
    resumable = FolderTaken(tmp_path, f"{tmp_path} already holds a training run", resumable=True)
    assert in_flags(resumable).endswith("; pass --resume to continue it or --overwrite to start again")
    assert in_flags(DHError("plain")) == "plain"
