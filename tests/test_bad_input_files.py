"""Bad output paths and unsafe folders, through the command line: no command destroys or half-writes what it did not
write, and every output path is checked before any computation.

- A dataset folder is owned like a results folder: `data synth` and `data voc2coco` refuse a folder holding anything
  they did not write (or a synthetic set of other parameters) unless --overwrite, which deletes only their own files.
- An --out that is a file, sits under a file or cannot be written is refused, naming the flag, by every command that
  writes, before any model runs (and a file output given a folder is refused too).
- Several --ckpt whose models share a name are refused before the first model's results are written; temporary
  files that killed writes left are removed when a command claims the folder again; an undecodable training image
  stops training before anything is written.

Each refusal goes through `refusals.refused`: exit 2, one line, no traceback, watched paths unchanged. Tiny data and
models: every refusal happens before a model runs, so the module takes seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from dhanalysis.cli import main
from dhanalysis.config import preset_path
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.model import build_model, save_checkpoint

from helpers import TINY, tiny_config
from refusals import refused

SYNTH = dict(num_train=8, num_val=2, image_size=96)
SYNTH_FLAGS = ["--num-train", "8", "--num-val", "2", "--image-size", "96"]
TRAIN_SETTINGS = [*TINY, "model.num_classes=0", "model.backbone.norm=frozen_bn", "model.backbone.trainable_layers=0",
                  "data.num_workers=0", "train.iterations=2", "train.ims_per_batch=2", "train.checkpoint_period=1",
                  "train.log_period=1", "train.warmup_iters=1", "train.steps=[1]"]
MODEL_COMMANDS = ["eval", "sliding-window", "pcc", "spatial-corr"]  # the commands that take several --ckpt
STALE = "abcd1234"  # the random part of a planted temporary file's name


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """A tiny synthetic dataset, a tiny VOC folder, two checkpoints whose models share the name
    'synth-single-fc' (a/model_final.pth and b/model_final.pth), and the inputs of `detections` and `figures`."""
    base = tmp_path_factory.mktemp("bad-input-files")
    data = base / "data"
    make_synth_dataset(data, **SYNTH)
    ckpts = []
    for folder in ("a", "b"):
        torch.manual_seed(0)
        ckpts.append(base / folder / "model_final.pth")
        save_checkpoint(ckpts[-1], build_model(tiny_config("single-fc", "model.num_classes=6", f"data.root={data}")))
    results_json = base / "dets.json"
    results_json.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20], "score": 0.9}]))
    (base / "results").mkdir()
    return SimpleNamespace(base=base, data=data, ckpts=ckpts, voc=make_voc(base / "VOC2007"),
                           results_json=results_json)


def make_voc(root: Path) -> Path:
    """Two images with one box each, split into trainval and test."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for stem, split in (("000001", "trainval"), ("000002", "test")):
        Image.new("RGB", (50, 40), (120, 30, 200)).save(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>50</width><height>40</height></size><object>"
            "<name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20"
            "</ymax></bndbox></object></annotation>")
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(f"{stem}\n")
    return root


def command_argv(command: str, world: SimpleNamespace, out: Path, *extra: str) -> list[str]:
    """A command line that would run ``command`` on the tiny inputs, writing to ``out``."""
    ckpt, data = str(world.ckpts[0]), str(world.data)
    model = ["--ckpt", ckpt, "--data-root", data, "--device", "cpu", "--out", str(out)]
    argv = {
        "train": ["train", "--config", str(preset_path("synth/single-fc.yaml")), "--data-root", data,
                  "--device", "cpu", "--out", str(out)],
        "eval": ["eval", *model, "--max-images", "1"],
        "sliding-window": ["sliding-window", *model, "--no-progress"],
        "pcc": ["pcc", *model, "--no-progress"],
        "spatial-corr": ["spatial-corr", *model, "--no-progress"],
        "detections": ["detections", "--gt", str(world.data / "annotations" / "instances_val.json"), "--results",
                       str(world.results_json), "--out", str(out)],
        "figures": ["figures", "--results", str(world.base / "results"), "--out", str(out)],
        "convert": ["convert", "--from", "torchvision", ckpt, "--out", str(out)],
        "pretrain": ["pretrain", "--data-root", data, "--iterations", "1", "--out", str(out)],
        "data synth": ["data", "synth", *SYNTH_FLAGS, "--out", str(out)],
        "data voc2coco": ["data", "voc2coco", "--voc-root", str(world.voc), "--out", str(out)],
    }[command]
    return [*argv, *extra]


FOLDER_COMMANDS = ["train", *MODEL_COMMANDS, "detections", "figures", "data synth", "data voc2coco"]
FILE_COMMANDS = ["convert", "pretrain"]


# ------------------------------------------------------------------------------------------------ 1. data lost
def foreign_coco(folder: Path) -> None:
    """A COCO dataset another tool wrote, in the synthetic set's layout (the names synth and voc2coco write)."""
    for split in ("train", "val", "trainval", "test"):
        (folder / split).mkdir(parents=True)
        Image.new("RGB", (32, 32), (10, 200, 30)).save(folder / split / "000001.jpg")
        (folder / "annotations").mkdir(exist_ok=True)
        (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"info": {"description": "my own labels"}, "images": [{"id": 1, "file_name": "000001.jpg", "width": 32,
                                                                   "height": 32}],
             "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))


def other_synth(folder: Path) -> None:
    make_synth_dataset(folder, **{**SYNTH, "num_train": 4})


def stray_file(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "NOTES.md").write_text("my notes on this folder\n")


@pytest.mark.parametrize("command, fault, message", [
    ("data synth", foreign_coco, r"holds files the synthetic dataset did not write \(annotations/instances_"),
    ("data synth", other_synth, r"holds a synthetic dataset of other parameters \(the train split's num_train: 4 vs "
                                r"8\)"),
    ("data synth", stray_file, r"holds files the synthetic dataset did not write \(NOTES\.md\)"),
    ("data voc2coco", foreign_coco, r"holds files the conversion of .*VOC2007 did not write \(annotations/"),
    ("data voc2coco", other_synth, r"holds files the conversion of .*VOC2007 did not write"),
    ("data voc2coco", stray_file, r"holds files the conversion of .*VOC2007 did not write \(NOTES\.md\)"),
], ids=["synth-foreign-coco", "synth-other-parameters", "synth-stray-file", "voc-foreign-coco", "voc-synth-set",
        "voc-stray-file"])
def test_a_dataset_folder_holding_other_files_is_refused_without_overwrite(world, tmp_path, capsys, command, fault,
                                                                           message):
    out = tmp_path / "dataset"
    fault(out)
    line = refused(command_argv(command, world, out), capsys, out)
    assert re.search(message, line), line
    assert line.endswith("; rerun with --overwrite to replace them, or choose another --out"), line


def test_synth_overwrite_deletes_only_its_own_files(world, tmp_path):
    out = tmp_path / "dataset"
    foreign_coco(out)
    (out / "NOTES.md").write_text("keep me\n")
    (out / "train2017").mkdir()
    (out / "train2017" / "photo.jpg").write_bytes(b"not ours")
    (out / "train" / "mine.png").write_bytes(b"not ours either")
    assert main(command_argv("data synth", world, out, "--overwrite")) == 0
    assert (out / "NOTES.md").read_text() == "keep me\n"
    assert (out / "train2017" / "photo.jpg").read_bytes() == b"not ours"
    assert (out / "train" / "mine.png").read_bytes() == b"not ours either"
    assert json.loads((out / "annotations" / "instances_trainval.json").read_text())["info"]["description"] == \
        "my own labels"  # a split synth does not write is left alone
    assert json.loads((out / "annotations" / "instances_train.json").read_text())["info"]["params"]["num_train"] == 8
    assert sorted(p.name for p in (out / "train").glob("0*.jpg")) == [f"{i:06d}.jpg" for i in range(1, 9)]


def test_synth_killed_half_way_is_finished_by_the_same_command(world, tmp_path):
    out = tmp_path / "dataset"
    assert main(command_argv("data synth", world, out)) == 0
    (out / "annotations" / "instances_val.json").unlink()  # what a kill before the last json leaves
    (out / "val" / "000002.jpg").unlink()
    assert main(command_argv("data synth", world, out)) == 0
    assert sorted(p.name for p in (out / "val").iterdir()) == ["000001.jpg", "000002.jpg"]
    assert (out / "annotations" / "instances_val.json").is_file()


def test_synth_adds_or_leaves_out_a_test_split_without_touching_train_and_val(world, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert main(command_argv("data synth", world, out)) == 0
    train_json = out / "annotations" / "instances_train.json"
    stamp = train_json.stat().st_mtime_ns
    assert main(command_argv("data synth", world, out, "--num-test", "2")) == 0  # adds the test split only
    assert train_json.stat().st_mtime_ns == stamp and len(list((out / "test").iterdir())) == 2
    assert main(command_argv("data synth", world, out)) == 0  # without it: train and val are there, test stays
    assert train_json.stat().st_mtime_ns == stamp and len(list((out / "test").iterdir())) == 2
    line = refused(command_argv("data synth", world, out, "--num-test", "3"), capsys, out)
    assert "holds a synthetic dataset of other parameters (the test split's num_test: 2 vs 3)" in line, line


def test_voc_converts_again_into_its_own_folder_and_overwrite_keeps_other_files(world, tmp_path):
    out = tmp_path / "voc"
    assert main(command_argv("data voc2coco", world, out)) == 0
    assert main(command_argv("data voc2coco", world, out)) == 0  # its own files: converted again, no flag needed
    (out / "NOTES.md").write_text("keep me\n")
    assert main(command_argv("data voc2coco", world, out, "--overwrite")) == 0
    assert (out / "NOTES.md").read_text() == "keep me\n" and (out / "trainval" / "000001.jpg").is_file()


# ------------------------------------------------------------------------------------------------ 2. output paths
def out_is_a_file(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "taken").write_text("a file of mine\n")
    return tmp_path / "taken", tmp_path / "taken"


def out_under_a_file(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "taken").write_text("a file of mine\n")
    return tmp_path / "taken" / "sub" / "out", tmp_path / "taken"


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
@pytest.mark.parametrize("fault, message", [
    (out_is_a_file, r"^--out .*taken is a file, not a folder; choose a folder for --out$"),
    (out_under_a_file, r"^--out .*taken/sub/out cannot be made: .*taken is a file, not a folder; choose another "
                       r"--out$"),
], ids=["out-is-a-file", "out-under-a-file"])
def test_an_output_folder_that_cannot_be_made_is_refused_first(world, tmp_path, capsys, command, fault, message):
    out, blocker = fault(tmp_path)
    line = refused(command_argv(command, world, out), capsys, tmp_path, world.data)
    assert re.search(message, line), line
    assert blocker.read_text() == "a file of mine\n"


@pytest.mark.parametrize("command", FILE_COMMANDS)
@pytest.mark.parametrize("fault, message", [
    ("folder", r"^--out .*given is a folder, but --out names the file to write; give a file path such as "
               r".*given/\w+\.pth$"),
    ("under-a-file", r"^--out .*taken/out\.pth cannot be made: .*taken is a file, not a folder; choose another "
                     r"--out$"),
], ids=["out-is-a-folder", "out-under-a-file"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["", "overwrite"])
def test_an_output_file_that_cannot_be_written_is_refused_first(world, tmp_path, capsys, command, fault, message,
                                                                overwrite):
    if fault == "folder":
        out = tmp_path / "given"
        out.mkdir()
        (out / "keep.txt").write_text("mine\n")
    else:
        (tmp_path / "taken").write_text("a file of mine\n")
        out = tmp_path / "taken" / "out.pth"
    line = refused(command_argv(command, world, out, *(["--overwrite"] if overwrite else [])), capsys, tmp_path)
    assert re.search(message, line), line


def read_only_folder(tmp_path: Path, monkeypatch) -> Path:
    """A folder this user may not write in, as the check sees it: chmod where permission bits bind, else (root)
    os.access answering no for it alone."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    else:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real(p, mode, **kw))
    return folder


@pytest.mark.parametrize("command", [*FOLDER_COMMANDS, *FILE_COMMANDS])
def test_an_output_in_a_read_only_folder_is_refused_first(world, tmp_path, capsys, monkeypatch, command):
    folder = read_only_folder(tmp_path, monkeypatch)
    try:
        out = folder / ("out.pth" if command in FILE_COMMANDS else "out")
        line = refused(command_argv(command, world, out), capsys, tmp_path)
        assert re.search(r"^--out .*locked/out(\.pth)? cannot be written: this user may not write in .*locked; fix "
                         r"its permissions or choose another --out$", line), line
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0, reason="permission bits do not stop root from writing")
def test_a_read_only_folder_is_refused_by_its_permission_bits(world, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = refused(command_argv("data synth", world, folder / "out"), capsys, tmp_path)
        assert "cannot be written: this user may not write in" in line
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------------------------------------ 3. partial output
@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("names, message", [
    ([], r"^checkpoints .*a/model_final\.pth and .*b/model_final\.pth both hold a model named 'synth-single-fc' "
         r"and each model needs its own results folder; give each checkpoint its own --name$"),
    (["x", "x"], r"^.*a/model_final\.pth and .*b/model_final\.pth are both given the name 'x' and each model needs "
                 r"its own results folder; give each checkpoint its own --name$"),
    (["x", "a/b"], r"^model name 'a/b' of .*b/model_final\.pth cannot name a folder; give it another with --name$"),
], ids=["same-config-name", "same-name-flag", "name-with-slash"])
def test_models_that_would_share_a_results_folder_are_refused_before_the_first_runs(world, tmp_path, capsys,
                                                                                     command, names, message):
    out = tmp_path / "results"
    argv = [command, "--ckpt", str(world.ckpts[0]), "--ckpt", str(world.ckpts[1]), "--data-root", str(world.data),
            "--out", str(out), "--device", "cpu", *[a for n in names for a in ("--name", n)]]
    line = refused(argv, capsys, tmp_path)
    assert re.search(message, line), line
    assert not out.exists()


def plant(folder: Path, target: str) -> Path:
    """The temporary file a SIGKILL during an atomic write of ``folder/target`` leaves behind."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{target}.{STALE}.tmp"
    path.write_bytes(b"\0" * 4096)
    return path


@pytest.mark.parametrize("command", ["data synth", "eval", "detections"])
def test_a_rerun_removes_the_temporary_files_killed_writes_left_in_its_folders(world, tmp_path, command):
    out = tmp_path / "out"
    argv = command_argv(command, world, out, *(["--bootstrap", "0"] if command == "detections" else []))
    assert main(argv) == 0
    folders = {"data synth": [(out, "synth.json"), (out / "annotations", "instances_train.json"),
                              (out / "train", "000003.jpg")],
               "eval": [(out, "detections_single-fc.json")],
               "detections": [(out, "detections.csv")]}[command]
    planted = [plant(folder, target) for folder, target in folders]
    unrelated = plant(tmp_path, "out")  # beside the output folder: not the command's to remove
    other = tmp_path / "out" / ".notes.txt.swp"  # another program's hidden file, where a results folder allows one
    if command != "data synth":
        other.write_bytes(b"keep")
    assert main(argv) == 0
    assert not [p for p in planted if p.exists()]
    assert unrelated.exists() and (command == "data synth" or other.exists())


def test_a_rerun_removes_the_temporary_file_a_killed_checkpoint_write_left(world, tmp_path):
    """A file output outside any claimed folder: the save itself removes the leftovers of its own name."""
    out = tmp_path / "backbone.pth"
    left = plant(tmp_path, out.name)
    other = plant(tmp_path, "other.pth")
    assert main(command_argv("pretrain", world, out, "--batch-size", "4", "--crop-size", "16")) == 0
    assert out.is_file() and not left.exists() and other.exists()


def test_a_temporary_file_being_written_is_not_taken_for_a_leftover(tmp_path):
    import fcntl

    from dhanalysis.folders import remove_temp_files

    live = plant(tmp_path, "checkpoint.pth")
    with open(live, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # what the atomic writer holds while it writes
        assert remove_temp_files(tmp_path) == [] and live.exists()
    assert remove_temp_files(tmp_path) == [live] and not live.exists()


def garbage(path: Path) -> None:
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")


def cut_off(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("fault", [garbage, cut_off], ids=["garbage", "cut-off"])
def test_an_undecodable_training_image_stops_training_before_anything_is_written(world, tmp_path, capsys, fault):
    data = tmp_path / "data"
    shutil.copytree(world.data, data)
    fault(data / "train" / "000005.jpg")
    out = tmp_path / "run"
    argv = command_argv("train", world, out)
    argv = [a if a != str(world.data) else str(data) for a in argv]
    for setting in TRAIN_SETTINGS:
        argv += ["--set", setting]
    line = refused(argv, capsys, tmp_path)
    assert re.search(r"^image .*/train/000005\.jpg cannot be decoded \(.+\); replace it or remove it from the "
                     r"annotation file$", line), line
    assert not out.exists()
