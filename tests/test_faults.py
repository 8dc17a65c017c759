"""Faults as a user meets them, through the command line: every bad input gives one line ``dhanalysis: error: ...``
and exit code 2, a SIGKILL at any moment loses nothing, numerical faults stop with what to do, and a checkpoint
cannot run code.

Everything runs on CPU on a tiny synthetic dataset (8 training and 2 validation images of 96 pixels) and a tiny
Single-FC model with a frozen ResNet-18 body. The kill tests start ``python -m dhanalysis`` as a child process,
SIGKILL it when a given file appears, rerun the very same command and compare with an uninterrupted run: training
bitwise, the sliding-window statistics value for value. Most error cases call `dhanalysis.cli.main` in this process
(what the console script runs, minus the interpreter start-up that costs seconds per call on a busy machine); the
code-running pickle goes through a real child process. Cases the unit tests already cover below the CLI
(test_checkpoint, test_data, test_engine, test_analysis_run) are only repeated here for the message and exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import pandas as pd
import pytest
import torch

from dhanalysis.cli import main
from dhanalysis.config import preset_path
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.model import build_model, save_checkpoint
from dhanalysis.model.checkpoint import read_checkpoint

from helpers import ROOT, TINY, assert_same_statistics, tiny_config

pytestmark = pytest.mark.slow

# One thread everywhere: the kill tests compare a child process with a run in this one bitwise, and two busy cores
# shared by oversubscribed thread pools make every iteration many times slower.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TRAIN_SETTINGS = [
    *TINY,
    "model.num_classes=0",  # from the dataset
    "model.backbone.norm=frozen_bn",
    "model.backbone.trainable_layers=0",  # heads, FPN and RPN train: half the time of a trainable body
    "data.num_workers=0",
    "train.iterations=6",
    "train.ims_per_batch=2",
    "train.checkpoint_period=2",
    "train.log_period=1",
    "train.warmup_iters=2",
    "train.steps=[4]",
]
WINDOWS = "2000"  # sliding windows per box: about a second per image, time enough to kill between chunks


# ------------------------------------------------------------------------------------------------ helpers
def train_argv(data: Path, out: Path, *settings: str) -> list[str]:
    argv = ["train", "--config", str(preset_path("synth/single-fc.yaml")), "--out", str(out),
            "--device", "cpu"]
    for setting in [*TRAIN_SETTINGS, f"data.root={data}", *settings]:
        argv += ["--set", setting]
    return argv


def sliding_window_argv(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["sliding-window", "--ckpt", str(ckpt), "--out", str(out), "--proposals-per-gt", WINDOWS,
            "--chunk-size", "1", "--no-progress", "--device", "cpu", *extra]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fails(argv: list[str], capsys) -> str:
    """Run the CLI in this process; check exit code 2 and a one-line error without traceback; return that line."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.rstrip("\n").splitlines()
    assert code == 2, err
    # the error is printed last, so a message of several lines would leave a last line without the prefix
    assert lines and lines[-1].startswith("dhanalysis: error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


def succeeds(argv: list[str]) -> None:
    with one_thread():
        assert main(argv) == 0


def tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "dhanalysis", *argv], env={**os.environ, **CHILD_ENV},
                                stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)


def kill_when(argv: list[str], ready: Callable[[], bool], log: Path, timeout: float = 300) -> None:
    """Start the command, SIGKILL it as soon as ``ready()`` holds, and check that it died of the kill."""
    proc = spawn(argv, log)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # a no-op when it has already exited
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the command ended (exit {proc.returncode}) before the kill point:\n" \
                                               f"{tail(log)}"


def run_to_end(argv: list[str], log: Path, timeout: float = 900) -> None:
    proc = spawn(argv, log)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, tail(log)


def logged_iterations(metrics: Path) -> list[int]:
    """Iterations in metrics.jsonl; a line being written (cut short) is left out, as the trainer does."""
    if not metrics.exists():
        return []
    out = []
    for line in metrics.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line)["iteration"])
    return out


def metric_records(metrics: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time_per_iter"}
            for line in metrics.read_text().splitlines()]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def copy_data(world: SimpleNamespace, dest: Path) -> Path:
    shutil.copytree(world.data, dest)
    return dest


def edit_val_json(root: Path, edit: Callable[[dict], None]) -> None:
    path = root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """The dataset and the uninterrupted reference runs every kill test compares with."""
    base = tmp_path_factory.mktemp("faults")
    data = base / "data"
    make_synth_dataset(data, num_train=8, num_val=2, image_size=96)
    ref_train, ref_sw = base / "ref-train", base / "ref-sliding-window"
    succeeds(train_argv(data, ref_train))
    ckpt = ref_train / "model_final.pth"
    succeeds(sliding_window_argv(ckpt, ref_sw))
    return SimpleNamespace(base=base, data=data, ckpt=ckpt, ref_train=ref_train, ref_sw=ref_sw)


# ------------------------------------------------------------------------------------------------ interruption
def test_training_killed_at_several_points_resumes_bitwise(world):
    out = world.base / "killed-train"
    argv = train_argv(world.data, out) + ["--resume"]  # --resume on an empty folder starts afresh: one command
    log = world.base / "killed-train.log"
    metrics, ckpt, final = out / "metrics.jsonl", out / "checkpoint.pth", out / "model_final.pth"
    kill_points = [
        # right after start, mid-iteration 2: one metrics line no checkpoint stands behind (a fresh start drops it)
        lambda: 1 in logged_iterations(metrics),
        # after the first checkpoint (iteration 2) has appeared, one logged iteration past it (a resume drops it)
        lambda: ckpt.exists() and 3 in logged_iterations(metrics),
    ]
    for ready in kill_points:
        kill_when(argv, ready, log)
        assert not final.exists()
        if ckpt.exists():  # whatever is under the real name is complete
            assert read_checkpoint(ckpt)["iteration"] in (2, 4)
        its = logged_iterations(metrics)
        assert its == list(range(1, len(its) + 1)), f"metrics.jsonl holds iterations {its}"
    run_to_end(argv, log)

    assert_same_weights(final, world.ckpt)
    state, ref = read_checkpoint(final), read_checkpoint(world.ckpt)
    assert state["iteration"] == 6 and state["optimizer"]["state"].keys() == ref["optimizer"]["state"].keys()
    assert not ckpt.exists()
    # the log reads as one uninterrupted run: each iteration once, with the same losses to the last bit
    assert metric_records(metrics) == metric_records(world.ref_train / "metrics.jsonl")


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_sigterm_to_the_process_group_stops_training_with_a_checkpoint(world):
    """A scheduler's SIGTERM reaches the loader's worker too: the run still writes a checkpoint where it stops (none
    is periodic here), says how to go on, and the rerun ends with the uninterrupted run's weights, bitwise."""
    out = world.base / "terminated"
    argv = train_argv(world.data, out, "data.num_workers=1", "train.checkpoint_period=100") + ["--resume"]
    log = world.base / "terminated.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dhanalysis", *argv], env={**os.environ, **CHILD_ENV},
                                stdout=f, stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and 1 not in logged_iterations(out / "metrics.jsonl") and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and its loader worker, as a scheduler sends it
    assert proc.wait(timeout=300) == 130, tail(log)
    stopped = read_checkpoint(out / "checkpoint.pth")["iteration"]
    assert 1 <= stopped < 6 and logged_iterations(out / "metrics.jsonl") == list(range(1, stopped + 1))
    assert f"checkpoint at iteration {stopped} written on request" in tail(log)
    assert "dhanalysis: interrupted; rerun it with --resume" in tail(log)
    run_to_end(argv, log)
    assert_same_weights(out / "model_final.pth", world.ckpt)


def test_sliding_window_killed_at_start_and_between_chunks_gives_the_same_statistics(world):
    out = world.base / "killed-sliding-window"
    argv = sliding_window_argv(world.ckpt, out)
    log = world.base / "killed-sliding-window.log"
    chunk_dir = out / "chunks" / "sliding_window"
    manifest = chunk_dir / "manifest.rank0.json"
    ids = CocoDataset(world.data, "val").ids

    kill_when(argv, (chunk_dir / "run.json").exists, log)  # at start: identity recorded, nothing computed
    assert not manifest.exists() and not (out / "summary.json").exists()
    kill_when(argv, manifest.exists, log)  # after the first finished chunk
    done = json.loads(manifest.read_text())["chunks"]
    assert [c["image_ids"] for c in done] == [[ids[0]]]
    assert not (out / "sliding_window_stats.csv").exists() and not (out / "summary.json").exists()
    # what a kill during a chunk's write leaves behind: a temporary file, and (between rename and manifest update)
    # a chunk no manifest lists. Neither may be read as finished; here both are garbage.
    pending = f"c{ids[1]:012d}.pt"
    (chunk_dir / f".{pending}.x1y2z3.tmp").write_bytes(b"half a chunk")
    (chunk_dir / pending).write_bytes(b"not listed in any manifest")
    run_to_end(argv, log)

    chunks = json.loads(manifest.read_text())["chunks"]
    assert sorted(i for c in chunks for i in c["image_ids"]) == sorted(ids)  # each image exactly once
    got, ref = (pd.read_csv(d / "sliding_window_stats.csv") for d in (out, world.ref_sw))
    assert_same_statistics(got, ref)
    keys = ("images", "boxes", "proposals", "bin_counts", "run")
    got, ref = (json.loads((d / "summary.json").read_text()) for d in (out, world.ref_sw))
    assert {k: got[k] for k in keys} == {k: ref[k] for k in keys}


@pytest.mark.slow
def test_demo_killed_in_its_first_head_run_finishes_on_rerun(world):
    """The demo (the reproduction's pipeline at demo size) resumes a head run killed between checkpoints to the same
    weights as an uninterrupted run, and prints what it found."""
    from dhanalysis.config import config_from_dict
    from dhanalysis.engine import trunk as trunk_module
    from dhanalysis.engine.train import train

    work = world.base / "demo"
    argv = ["demo", "--quick", "--workdir", str(work)]
    log = world.base / "demo.log"
    replicate = "single-fc-trunk/seed0"
    first = work / "checkpoints" / "demo-quick" / replicate / "table1" / "single-fc-w1"
    kill_when(argv, (first / "checkpoint.pth").exists, log)
    state = read_checkpoint(first / "checkpoint.pth")
    assert 0 < state["iteration"] < state["config"]["train"]["iterations"]
    assert not (first / "model_final.pth").exists()
    run_to_end(argv, log)

    results = work / "results" / "demo-quick"
    for name in ("single-fc", "single-conv", "double-fc", "double-conv", "double-head-ext"):
        for table in ("eval.csv", "per_class_ap.csv", "sliding_window_stats.csv", "pcc.csv", "spatial_corr.npz"):
            assert (results / replicate / name / table).is_file(), f"{name}/{table}"
    assert (results / "findings.md").is_file() and (results / "reproduction_summary.json").is_file()
    assert list((work / "figures" / "demo-quick").glob("*.png"))
    # the demo trains only the two λ pairs its claims compare: Ext (0.7, 0.8) and the vanilla Double-Head (1, 1)
    fig8 = work / "checkpoints" / "demo-quick" / replicate / "fig8"
    assert sorted(p.name for p in fig8.iterdir()) == ["lfc0.7-lconv0.8", "lfc1-lconv1"]
    text = log.read_text()
    assert "findings:" in text and "Fig. 2 check:" in text
    # the interrupted head run equals the same run (the config the demo stored in it) trained without interruption
    cfg = config_from_dict(read_checkpoint(first / "model_final.pth")["config"])
    trunk_module._CACHES.clear()
    with one_thread():
        reference = train(cfg, world.base / "demo-reference", device="cpu", progress=False)
    assert_same_weights(first / "model_final.pth", reference)
    assert metric_records(first / "metrics.jsonl") == metric_records(reference.parent / "metrics.jsonl")


# ------------------------------------------------------------------------------------------------ checkpoints
class _RunsCode:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused_by_a_real_process(world, tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    state = read_checkpoint(world.ckpt)
    state["model"]["roi_heads.extra"] = _RunsCode(marker)  # a real checkpoint with one poisoned entry
    torch.save(state, evil)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "dhanalysis", "eval", "--ckpt", str(evil), "--out", str(out),
                           "--device", "cpu"], env={**os.environ, **CHILD_ENV}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"dhanalysis: error: checkpoint {evil} contains Python objects that could run code; "
                                  "refused to load it")
    assert not marker.exists() and not out.exists()


def _truncated(world, tmp: Path) -> Path:
    data = world.ckpt.read_bytes()
    (tmp / "truncated.pth").write_bytes(data[: len(data) // 2])
    return tmp / "truncated.pth"


def _text_file(world, tmp: Path) -> Path:
    (tmp / "notes.pth").write_text("model_final.pth is on the shared drive\n")
    return tmp / "notes.pth"


def _raw_pickle(world, tmp: Path) -> Path:
    with open(tmp / "pickled.pth", "wb") as f:
        pickle.dump({"format": "dhanalysis-checkpoint-v1", "model": _RunsCode(tmp / "code-ran")}, f)
    return tmp / "pickled.pth"


def _foreign(world, tmp: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp / "foreign.pth")
    return tmp / "foreign.pth"


@pytest.mark.parametrize("make, message", [
    (lambda world, tmp: tmp / "nope.pth", r"checkpoint .*nope\.pth does not exist; train one with 'dhanalysis train'"),
    (lambda world, tmp: world.ref_train, r"is a folder, not a file \(did you mean .*model_final\.pth\?\)"),
    (_truncated, r"truncated\.pth is truncated or not a PyTorch file \(\w+\); re-create it"),
    (_text_file, r"notes\.pth is truncated or not a PyTorch file"),
    (_raw_pickle, r"pickled\.pth is a raw Python pickle, which could run code; refused to load it"),
    (_foreign, r"foreign\.pth was not written by dhanalysis"),
], ids=["missing", "folder", "truncated", "not-a-checkpoint", "raw-pickle", "foreign"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_checkpoint_files_are_one_line_errors(world, tmp_path, capsys, make, message):
    ckpt = make(world, tmp_path)
    for command in (["eval", "--ckpt", str(ckpt), "--out", str(tmp_path / "out")],
                    sliding_window_argv(ckpt, tmp_path / "out")):
        line = fails(command, capsys)
        assert re.search(message, line), line
    assert not (tmp_path / "out").exists() and not (tmp_path / "code-ran").exists()


def test_unreadable_checkpoint_is_a_one_line_error(world, tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "locked.pth"
    shutil.copyfile(world.ckpt, ckpt)
    ckpt.chmod(0)
    if os.access(ckpt, os.R_OK):  # root reads anything: make the loader see what another user would
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(ckpt))

        monkeypatch.setattr(torch, "load", denied)
    line = fails(["eval", "--ckpt", str(ckpt), "--out", str(tmp_path / "out")], capsys)
    assert "locked.pth cannot be read (permission denied); fix its permissions" in line


def test_eval_mode_the_checkpoint_variant_lacks_is_refused(world, tmp_path, capsys):
    out = tmp_path / "out"
    line = fails(["eval", "--ckpt", str(world.ckpt), "--modes", "conv", "--out", str(out)], capsys)
    assert "mode 'conv' needs the conv-head classifier, but variant 'single-fc' has no conv-head" in line
    line = fails(["eval", "--ckpt", str(world.ckpt), "--modes", "fc,bogus", "--out", str(out)], capsys)
    from dhanalysis.vocab import INFERENCE_MODES

    assert "unknown inference mode 'bogus'; use one of" in line and all(m in line for m in INFERENCE_MODES)
    assert not out.exists()  # refused before any file was written


# ------------------------------------------------------------------------------------------------ data
def _no_categories(data: dict) -> None:
    del data["categories"]


def _unknown_image(data: dict) -> None:
    data["annotations"].append({"id": 999, "image_id": 77, "category_id": data["categories"][0]["id"],
                                "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0})


def _no_images(data: dict) -> None:
    data["images"], data["annotations"] = [], []


def _extra_category(data: dict) -> None:
    data["categories"].append({"id": 99, "name": "unicorn"})


def _break_json(root: Path) -> None:
    path = root / "annotations" / "instances_val.json"
    path.write_text(path.read_text()[:100])


def _delete_image(root: Path) -> None:
    (root / "val" / "000002.jpg").unlink()


def _corrupt_image(root: Path) -> None:
    (root / "val" / "000002.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")


def _corrupt_all_images(root: Path) -> None:
    for p in (root / "val").iterdir():
        p.write_bytes(b"garbage")


@pytest.mark.parametrize("break_data, extra, message", [
    (None, ["--split", "test"], r"instances_test\.json for split 'test' not found; splits with annotations under "
                                r".*: train, val"),
    (None, ["--data-root", "NOWHERE"], r"data root .*NOWHERE does not exist; make the synthetic set"),
    (_break_json, [], r"instances_val\.json is not valid JSON \(.* at line 1 column \d+\); regenerate"),
    (lambda r: edit_val_json(r, _no_categories), [], r"lacks the list\(s\) 'categories'"),
    (lambda r: edit_val_json(r, _unknown_image), [], r"1 annotations refer to image ids not in 'images' \(first: "
                                                     r"annotation 999 -> image 77\)"),
    (_delete_image, ["--strict"], r"1 of 2 images listed in .* are missing .*\(first: .*000002\.jpg\); re-download "
                                  r"them or remove them from the annotation file, or rerun without --strict to skip "
                                  r"them$"),
    (_corrupt_image, ["--strict"], r"1 of 2 images in .* cannot be decoded \(first: .*000002\.jpg: .*\); replace them"
                                   r" or remove them from the annotation file, or rerun without --strict to skip "
                                   r"them$"),
    (_corrupt_all_images, [], r"every image of split 'val' under .* is missing or undecodable"),
    (lambda r: edit_val_json(r, _no_images), [], r"split 'val' has no images"),
    (lambda r: edit_val_json(r, _extra_category), [], r"was trained for 6 classes but .* has 7; evaluate or "
                                                      r"analyse it on the dataset it was trained on"),
], ids=["missing-split", "missing-root", "malformed-json", "no-categories", "annotation-of-unknown-image",
        "missing-image-strict", "undecodable-image-strict", "all-images-undecodable", "empty-split",
        "other-classes"])
def test_bad_data_is_a_one_line_error(world, tmp_path, capsys, break_data, extra, message):
    root = copy_data(world, tmp_path / "data")
    if break_data is not None:
        break_data(root)
    extra = [str(tmp_path / a) if a == "NOWHERE" else a for a in extra]
    out = tmp_path / "out"
    argv = ["eval", "--ckpt", str(world.ckpt), "--data-root", str(root), "--out", str(out), "--device", "cpu", *extra]
    line = fails(argv, capsys)
    assert re.search(message, line), line
    assert not (out / "eval.csv").exists()


def test_degenerate_boxes_are_dropped_and_counted_not_fatal(world, tmp_path, caplog):
    root = copy_data(world, tmp_path / "data")
    bad = [[float("nan"), 2, 10, 10], [2, 2, -5, 10], [2, 2, 0, 10], [500, 500, 10, 10]]  # NaN, <0, 0, outside

    def add(data: dict) -> None:
        cat, image = data["categories"][0]["id"], data["images"][0]["id"]
        data["annotations"] += [{"id": 900 + k, "image_id": image, "category_id": cat, "bbox": box, "area": 100.0,
                                 "iscrowd": 0} for k, box in enumerate(bad)]

    edit_val_json(root, add)
    with caplog.at_level("WARNING"):
        succeeds(["eval", "--ckpt", str(world.ckpt), "--data-root", str(root), "--out", str(tmp_path / "out"),
                  "--device", "cpu"])
    assert "dropped 4 of" in caplog.text
    assert "(1 non-finite or malformed, 2 zero or negative size, 1 outside the image)" in caplog.text
    assert (tmp_path / "out" / "eval.csv").is_file()


@pytest.mark.parametrize("break_image", [_corrupt_image, _delete_image], ids=["undecodable", "missing"])
def test_bad_images_are_skipped_and_listed_by_eval(world, tmp_path, caplog, break_image):
    root = copy_data(world, tmp_path / "data")
    break_image(root)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        succeeds(["eval", "--ckpt", str(world.ckpt), "--data-root", str(root), "--out", str(out), "--device", "cpu"])
    assert "skipped 1 missing or undecodable images" in caplog.text and "000002.jpg" in caplog.text
    detections = json.loads((out / "detections_fc.json").read_text())
    assert {d["image_id"] for d in detections} <= {1}
    assert (out / "eval.csv").is_file()


# ------------------------------------------------------------------------------------------------ output folders
def test_eval_refuses_another_models_folder_unless_overwrite(world, tmp_path, capsys):
    out = tmp_path / "out"
    succeeds(["eval", "--ckpt", str(world.ckpt), "--out", str(out), "--device", "cpu"])
    before = (out / "eval.csv").read_text()
    torch.manual_seed(0)
    other = tmp_path / "double-head.pth"
    save_checkpoint(other, build_model(tiny_config("double-head", *TRAIN_SETTINGS, "model.num_classes=6",
                                                   f"data.root={world.data}")))
    line = fails(["eval", "--ckpt", str(other), "--out", str(out), "--device", "cpu"], capsys)
    assert re.search(r"out holds results of another model or configuration \(model\.[\w.]+: .* vs .*\); rerun with "
                     r"--overwrite to replace them, or choose another --out$", line), line
    assert (out / "eval.csv").read_text() == before  # untouched

    succeeds(["eval", "--ckpt", str(other), "--out", str(out), "--device", "cpu", "--overwrite"])
    assert json.loads((out / "config.json").read_text())["model"]["variant"] == "double-head"
    modes = set(pd.read_csv(out / "eval.csv")["mode"])
    assert {p.name[len("detections_"):-len(".json")] for p in out.glob("detections_*.json")} == modes


def test_train_refuses_a_folder_of_another_configuration(world, tmp_path, capsys):
    ref = world.ref_train
    line = fails(train_argv(world.data, ref, "train.lr=0.5"), capsys)
    assert "already holds a training run (model_final.pth); pass --resume to continue it or --overwrite" in line
    line = fails(train_argv(world.data, ref, "train.lr=0.5") + ["--resume"], capsys)
    assert "holds a training run (model_final.pth) of another model or configuration (train.lr: 0.02 vs 0.5)" in line
    assert read_checkpoint(world.ckpt)["config"]["train"]["lr"] == 0.02

    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    succeeds(train_argv(world.data, out, "train.lr=0.5", "train.iterations=1") + ["--overwrite"])
    state = read_checkpoint(out / "model_final.pth")
    assert state["config"]["train"]["lr"] == 0.5 and state["iteration"] == 1
    assert logged_iterations(out / "metrics.jsonl") == [1]


def test_train_data_errors_are_one_line(world, tmp_path, capsys):
    only_val = copy_data(world, tmp_path / "only-val")
    (only_val / "annotations" / "instances_train.json").unlink()
    out = tmp_path / "out"
    line = fails(train_argv(only_val, out), capsys)
    assert "instances_train.json for split 'train' not found; splits with annotations under" in line
    assert line.endswith(": val")
    line = fails(train_argv(world.data, out, "train.ims_per_batch=16"), capsys)
    assert "fewer images (8 per rank) than one batch (16); lower train.ims_per_batch" in line
    # the backbone's starting weights are a second file a run loads (safely, like checkpoints)
    line = fails(train_argv(world.data, out, f"model.backbone.weights={tmp_path / 'r18.pth'}"), capsys)
    assert "r18.pth not found; make them with 'dhanalysis pretrain" in line
    (tmp_path / "r18.pth").write_bytes(world.ckpt.read_bytes()[:1000])
    line = fails(train_argv(world.data, out, f"model.backbone.weights={tmp_path / 'r18.pth'}"), capsys)
    assert "r18.pth could not be read safely" in line
    assert not (out / "checkpoint.pth").exists()


def test_undecodable_training_image_in_a_loader_worker_is_one_line(world, tmp_path, capsys):
    root = copy_data(world, tmp_path / "data")
    for p in (root / "train").iterdir():  # whichever image the first batch draws
        p.write_bytes(b"garbage")
    line = fails(train_argv(root, tmp_path / "out", "data.num_workers=1"), capsys)
    # train has no way to skip images, so the remedy is only to fix the data
    assert re.search(r"^dhanalysis: error: image .*/train/\d+\.jpg cannot be decoded \(.*\); replace it or remove "
                     r"it from the annotation file$", line), line
    assert "DataLoader worker" not in line


@pytest.mark.parametrize("break_image, message", [
    (_delete_image, r"1 of 2 images listed in .* are missing from .* \(first: .*000002\.jpg\); re-download them or "
                    r"remove them from the annotation file, or rerun with --skip-bad-images to skip them$"),
    (_corrupt_image, r"image .*000002\.jpg cannot be decoded \(.*\); replace it or remove it from the annotation "
                     r"file, or rerun with --skip-bad-images to skip them$"),
], ids=["missing", "undecodable"])
def test_analysis_names_its_flag_for_bad_images_and_skips_them_with_it(world, tmp_path, capsys, caplog, break_image,
                                                                       message):
    root = copy_data(world, tmp_path / "data")
    break_image(root)
    out = tmp_path / "out"
    argv = ["sliding-window", "--ckpt", str(world.ckpt), "--data-root", str(root), "--out", str(out),
            "--proposals-per-gt", "50", "--no-progress", "--device", "cpu"]
    line = fails(argv, capsys)
    assert re.search(message, line), line
    with caplog.at_level("WARNING"):
        succeeds([*argv, "--skip-bad-images"])
    assert "skipped 1 missing or undecodable images" in caplog.text and "000002.jpg" in caplog.text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 1 and summary["proposals"] > 0  # the good image of two


# ------------------------------------------------------------------------------------------------ numerical faults
def test_non_finite_loss_stops_with_iteration_terms_and_last_good_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "diverged"
    argv = train_argv(world.data, out, "train.lr=1e30", "train.warmup_iters=0", "train.checkpoint_period=1")
    with one_thread():
        line = fails(argv, capsys)
    found = re.search(r"non-finite loss at iteration (\d+) \((loss_\w+=[-\w.]+(, )?)+\); kept the last good "
                      r"checkpoint (\S+); lower train\.lr or set train\.clip_grad_norm", line)
    assert found, line
    iteration, kept = int(found.group(1)), Path(found.group(4))
    assert "loss_fc_cls=" in line and kept == out / "checkpoint.pth"
    state = read_checkpoint(kept)
    assert state["iteration"] == iteration - 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (out / "model_final.pth").exists()
    assert logged_iterations(out / "metrics.jsonl") == list(range(1, iteration))


@pytest.mark.parametrize("parameter, what", [("cls_score.bias", "scores"), ("bbox_pred.bias", "regressed boxes")])
def test_analysis_refuses_nan_scores_and_boxes(world, tmp_path, capsys, parameter, what):
    state = read_checkpoint(world.ckpt)
    state["model"][f"roi_heads.branches.fc.predictor.{parameter}"].fill_(float("nan"))
    ckpt = tmp_path / "nan.pth"
    torch.save(state, ckpt)
    out = tmp_path / "out"
    line = fails(sliding_window_argv(ckpt, out), capsys)
    assert f"the fc-head gives NaN {what}; the checkpoint's weights are probably diverged" in line
    assert not (out / "sliding_window_stats.csv").exists() and not (out / "summary.json").exists()


# ------------------------------------------------------------------------------------------------ resources
def _memory_for(limit: int, monkeypatch) -> None:
    """Make every batch of boxes above ``limit`` run out of memory, as on a small GPU (whichever scoring path)."""
    from dhanalysis.probes.scoring import AdaptiveBatch

    original = AdaptiveBatch.map

    def map_within_memory(self, fn, n):
        def batch(start: int, stop: int):
            if stop - start > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return fn(start, stop)

        return original(self, batch, n)

    monkeypatch.setattr(AdaptiveBatch, "map", map_within_memory)


def test_analysis_batch_adapts_to_memory_and_gives_the_same_statistics(world, tmp_path, caplog, monkeypatch):
    _memory_for(300, monkeypatch)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        succeeds(sliding_window_argv(world.ckpt, out, "--batch-size", "2048"))
    assert "out of memory: retrying with batch size 256" in caplog.text
    assert json.loads((out / "summary.json").read_text())["batch_size_final"] == 256
    got, ref = (pd.read_csv(d / "sliding_window_stats.csv") for d in (out, world.ref_sw))
    assert list(got.columns) == list(ref.columns)
    assert_same_statistics(got, ref)  # another batch size: other kernels, the same numbers to float32 rounding


def test_analysis_without_enough_memory_names_the_flag(world, tmp_path, capsys, monkeypatch):
    _memory_for(0, monkeypatch)
    out = tmp_path / "out"
    line = fails(sliding_window_argv(world.ckpt, out, "--batch-size", "64"), capsys)
    assert "out of memory even at --batch-size 16 (the floor of the automatic halving)" in line
    assert not (out / "sliding_window_stats.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_says_so(world, tmp_path, capsys):
    for argv in (train_argv(world.data, tmp_path / "train"), ["eval", "--ckpt", str(world.ckpt)]):
        line = fails([*argv, "--device", "cuda"], capsys)
        assert "--device cuda was asked for but no CUDA GPU is visible; use --device cpu" in line
    assert not (tmp_path / "train").exists()
    # the library says it with values: a notebook user never passed --device
    from dhanalysis.engine.distributed import resolve_device
    from dhanalysis.errors import DeviceUnavailable

    with pytest.raises(DeviceUnavailable, match="device 'cuda:1' was asked for") as info:
        resolve_device("cuda:1")
    assert "--" not in str(info.value) and info.value.device == "cuda:1"


# ------------------------------------------------------------------------------------------------ the CLI itself
def test_unexpected_exceptions_keep_their_traceback_and_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    def bug(args):
        raise ZeroDivisionError("a bug, not a user error")

    monkeypatch.setattr("dhanalysis.cli.variants.run", bug)
    with pytest.raises(ZeroDivisionError):  # not swallowed: Python prints the traceback and exits 1
        main(["variants"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("dhanalysis.cli.variants.run", interrupted)
    assert main(["variants"]) == 130
    assert capsys.readouterr().err == "dhanalysis: interrupted; rerun the same command to resume\n"
