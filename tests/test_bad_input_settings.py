"""Bad numeric settings and flags are refused before any work: a config value out of its key's range (from a YAML
file or --set alike), a numeric flag out of range, a pair of flags that contradict each other, and a sweep's or a
study's flags that would fail only at the end. Each refusal is one line naming the key or flag, exit code 2, and
nothing written (tests/refusals.py).

The functions that start the work (training's loop, pretraining, a sweep's runs, a study) are replaced by ones that
fail the case, so a refusal that comes too late fails fast instead of training for minutes or, with a batch of -2
images, looping forever.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import pytest
import yaml

from dhanalysis.cli import main
from dhanalysis.config import (RANGES, Config, config_from_dict, config_to_dict, load_config, preset_path, presets,
                               replace)
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.errors import DHError

from refusals import refused
from test_faults import train_argv

EXT = str(preset_path("synth/double-head-ext.yaml"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """One tiny dataset for every case that names one: a refusal must not owe itself to missing data."""
    root = tmp_path_factory.mktemp("bad-settings") / "data"
    make_synth_dataset(root, num_train=8, num_val=2, image_size=96)
    return root


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Where each command's work starts, a failure: reaching it means the bad input was not refused in time."""

    def started(*args, **kwargs):
        raise AssertionError("the command started its work instead of refusing the input")

    for target in ("dhanalysis.engine.train._train_group", "dhanalysis.engine.pretrain.pretrain_backbone",
                   "dhanalysis.engine.sweep.run_sweep", "dhanalysis.study.runner.run_study", "dhanalysis.study.ship.ship"):
        monkeypatch.setattr(target, started)


def config_file(tmp_path: Path, **train: object) -> Path:
    """The Single-FC synthetic preset with some train.* values replaced, as a user's own YAML file."""
    cfg = yaml.safe_load(preset_path("synth/single-fc.yaml").read_text())
    cfg["train"].update(train)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------------------------------------ train
TRAIN_SETS = {
    "ims_per_batch_negative": ("train.ims_per_batch=-2", "'train.ims_per_batch' must be an integer >= 1, got -2"),
    "checkpoint_period_zero": ("train.checkpoint_period=0", "'train.checkpoint_period' must be an integer >= 1, got 0"),
    "lr_negative": ("train.lr=-1", "'train.lr' must be a finite number > 0, got -1"),
    "lr_nan": ("train.lr=.nan", "'train.lr' must be a finite number > 0, got nan"),
    "iterations_zero": ("train.iterations=0", "'train.iterations' must be an integer >= 1, got 0"),
    "steps_zero": ("train.steps=[0, 4]", "'train.steps' must be a list of integers >= 1, got [0, 4]"),
}


@pytest.mark.parametrize("fault", list(TRAIN_SETS))
def test_train_refuses_a_set_value_out_of_range(fault, data, tmp_path, capsys):
    setting, words = TRAIN_SETS[fault]
    out = tmp_path / "out"
    message = refused(train_argv(data, out, setting), capsys, out, data)
    assert words in message and f"--set {setting.split('=')[0]}=VALUE" in message


@pytest.mark.parametrize("fault, values, words", [
    ("ims_per_batch_negative", {"ims_per_batch": -2}, "'train.ims_per_batch' must be an integer >= 1, got -2"),
    ("lr_nan", {"lr": float("nan")}, "'train.lr' must be a finite number > 0, got nan"),
])
def test_train_refuses_a_config_file_value_out_of_range(fault, values, words, data, tmp_path, capsys):
    path = config_file(tmp_path, **values)
    out = tmp_path / "out"
    argv = ["train", "--config", path, "--out", out, "--device", "cpu", "--set", f"data.root={data}"]
    assert words in refused(argv, capsys, out, data, path)


@pytest.mark.parametrize("fault, flags, words", [
    ("ims_per_batch_flag_zero", ["--ims-per-batch", "0"], "argument --ims-per-batch: must be an integer >= 1, got 0"),
    ("ims_per_batch_flag_negative", ["--ims-per-batch", "-2"], "argument --ims-per-batch: must be an integer >= 1"),
    ("resume_with_overwrite", ["--resume", "--overwrite"],
     "--resume continues the run in --out and --overwrite discards it; pass one of them"),
])
def test_train_refuses_bad_flags(fault, flags, words, data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_final.pth").write_bytes(b"a finished run that --overwrite would delete")
    assert words in refused(train_argv(data, out) + flags, capsys, out, data)


# ------------------------------------------------------------------------------------------------ pretrain
@pytest.mark.parametrize("fault, flags, flag", [
    ("iterations_zero", ["--iterations", "0"], "--iterations"),
    ("iterations_negative", ["--iterations", "-3"], "--iterations"),
    ("crop_size_negative", ["--crop-size", "-8"], "--crop-size"),
    ("crop_size_zero", ["--crop-size", "0"], "--crop-size"),
    ("batch_size_zero", ["--batch-size", "0"], "--batch-size"),
    ("batch_size_too_small", ["--batch-size", "3"], "--batch-size"),
    ("lr_negative", ["--lr", "-0.1"], "--lr"),
    ("lr_zero", ["--lr", "0"], "--lr"),
    ("lr_nan", ["--lr", "nan"], "--lr"),
    ("iterations_not_a_number", ["--iterations", "many"], "--iterations"),
])
def test_pretrain_refuses_numeric_flags_out_of_range(fault, flags, flag, data, tmp_path, capsys):
    out = tmp_path / "r18.pth"
    argv = ["pretrain", "--data-root", data, "--out", out, *flags]
    message = refused(argv, capsys, out, data)
    assert message.startswith(f"argument {flag}: must be ")


# ------------------------------------------------------------------------------------------------ other commands
@pytest.mark.parametrize("argv, words", [
    (["params", "--config", EXT, "--depth", "-1"], "argument --depth: must be an integer >= 0, got -1"),
    (["params", "--config", EXT, "--num-classes", "0"], "argument --num-classes: must be an integer >= 1"),
    (["params", "--config", EXT, "--set", "model.head.num_blocks=0"],
     "'model.head.num_blocks' must be an integer >= 1, got 0"),
    (["variants", "--set", "model.loss.lambda_fc=1.5"], "'model.loss.lambda_fc' must be a number in [0, 1], got 1.5"),
    (["detections", "--gt", "gt.json", "--results", "dets.json", "--out", "out", "--calibration-bins", "equal-mass"],
     "argument --calibration-bins: invalid choice: 'equal-mass'"),
], ids=["params-depth", "params-num-classes", "params-set", "variants-set", "detections-calibration-bins"])
def test_other_commands_refuse_numeric_input_out_of_range(argv, words, capsys):
    assert words in refused(argv, capsys)


# ------------------------------------------------------------------------------------------------ sweep
@pytest.mark.parametrize("fault, flags, words", [
    ("emit_torchrun_zero", ["--emit-torchrun", "0"], "argument --emit-torchrun: must be an integer >= 1, got 0"),
    ("emit_torchrun_negative", ["--emit-torchrun", "-2"], "argument --emit-torchrun: must be an integer >= 1"),
    ("max_images_zero", ["--max-images", "0"], "argument --max-images: must be an integer >= 1, got 0"),
    ("only_unknown_run", ["--only", "lfc0.7-lconv0.8", "--only", "K3"], "--only K3 names no run of grid fig8"),
    ("set_out_of_range", ["--set", "train.lr=-1"], "'train.lr' must be a finite number > 0, got -1"),
    ("set_unknown_key", ["--set", "train.lrate=0.1"], "unknown config key 'train.lrate'"),
    ("ckpt_of_a_trained_grid", ["--ckpt", "x.pth"], "--ckpt is read by --grid table3 only"),
    ("max_images_with_emit", ["--emit-torchrun", "8", "--max-images", "5"], "--max-images is not passed"),
    ("device_with_emit", ["--emit-torchrun", "8", "--device", "cpu"], "--device is not passed"),
    ("unknown_device", ["--device", "tpu"], "unknown device 'tpu'"),
    ("out_is_a_file", ["--out", "{tmp}/file"], "--out {tmp}/file is a file"),
])
def test_sweep_checks_every_flag_before_the_first_run(fault, flags, words, tmp_path, capsys):
    out = tmp_path / "sweep"
    (tmp_path / "file").write_text("not a folder")
    argv = ["sweep", "--grid", "fig8", "--config", EXT, "--out", out, *(f.format(tmp=tmp_path) for f in flags)]
    assert words.format(tmp=tmp_path) in refused(argv, capsys, tmp_path)


@pytest.mark.parametrize("fault, flags, words", [
    ("missing_ckpt", ["--ckpt", "{tmp}/nothing.pth"], "--ckpt {tmp}/nothing.pth does not exist"),
    ("config_for_table3", ["--ckpt", "{tmp}/nothing.pth", "--config", EXT], "table3 evaluates --ckpt only"),
    ("set_for_table3", ["--ckpt", "{tmp}/nothing.pth", "--set", "train.lr=0.1"], "table3 trains nothing"),
])
def test_sweep_table3_checks_its_checkpoint_first(fault, flags, words, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--grid", "table3", "--out", out, *(f.format(tmp=tmp_path) for f in flags)]
    assert words.format(tmp=tmp_path) in refused(argv, capsys, out)


def test_sweep_emits_only_the_runs_of_only(tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", "fig8", "--config", EXT, "--out", str(out), "--emit-torchrun", "2",
                 "--only", "lfc0.7-lconv0.8"]) == 0
    lines = (out / "commands.sh").read_text().splitlines()[2:]
    assert len(lines) == 1 and "--nproc_per_node 2 " in lines[0] and "lfc0.7-lconv0.8" in lines[0]


# ------------------------------------------------------------------------------------------------ reproduce, demo
NO_MARKERS = "# A README\n\nNo generated findings section here.\n"


@pytest.mark.parametrize("fault, flags, words", [
    ("replicates_negative", ["--replicates", "-5"], "argument --replicates: must be an integer >= 2, got -5"),
    ("replicates_one", ["--replicates", "1"], "argument --replicates: must be an integer >= 2, got 1"),
    ("readme_without_markers", ["--ship", "{tmp}/shipped", "--readme", "{tmp}/README.md"],
     "--readme {tmp}/README.md has no findings section for --ship to regenerate"),
    ("readme_missing", ["--ship", "{tmp}/shipped", "--readme", "{tmp}/NOPE.md"],
     "--readme {tmp}/NOPE.md does not exist"),
    ("readme_without_ship", ["--readme", "{tmp}/README.md"], "--readme names the README that --ship regenerates"),
    ("ship_is_a_file", ["--ship", "{tmp}/README.md", "--readme", "none"], "--ship {tmp}/README.md is a file"),
    ("workdir_is_a_file", ["--workdir", "{tmp}/README.md"], "--workdir {tmp}/README.md is a file"),
    ("unknown_device", ["--device", "gpu0"], "unknown device 'gpu0'"),
    ("regime_with_readme", ["--regime", "--ship", "{tmp}/shipped", "--readme", "{tmp}/README.md"],
     "--regime ships the regime tables only and regenerates no README"),
])
def test_reproduce_checks_every_flag_before_the_study(fault, flags, words, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(NO_MARKERS)
    work, shipped = tmp_path / "work", tmp_path / "shipped"
    argv = ["reproduce", "--tiny", "--workdir", work, "--device", "cpu", *(f.format(tmp=tmp_path) for f in flags)]
    assert words.format(tmp=tmp_path) in refused(argv, capsys, work, shipped, readme)


def test_reproduce_ship_needs_the_readme_it_regenerates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no README.md here: --ship would regenerate nothing, hours later
    work = tmp_path / "work"
    message = refused(["reproduce", "--tiny", "--workdir", work, "--device", "cpu", "--ship", "shipped"], capsys,
                      tmp_path)
    assert "--readme README.md does not exist" in message and "--readme none" in message


@pytest.mark.parametrize("fault, flags, words", [
    ("workdir_is_a_file", ["--workdir", "{tmp}/file"], "--workdir {tmp}/file is a file"),
    ("unknown_device", ["--device", "gpu0"], "unknown device 'gpu0'"),
])
def test_demo_checks_its_flags_before_the_study(fault, flags, words, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    argv = ["demo", "--quick", *(f.format(tmp=tmp_path) for f in flags)]
    assert words.format(tmp=tmp_path) in refused(argv, capsys, tmp_path)


# ------------------------------------------------------------------------------------------------ Ctrl-C
@pytest.mark.parametrize("module, argv, words", [
    ("train", ["train", "--config", EXT, "--out", "o"], "rerun it with --resume (without --overwrite)"),
    ("evaluate", ["eval", "--ckpt", "m.pth"], "evaluation does not resume; it starts over"),
    ("pretrain", ["pretrain"], "pretraining does not resume; it starts over"),
    ("sliding_window", ["sliding-window"], "rerun the same command to resume after the last finished chunk"),
    ("sweep", ["sweep", "--grid", "fig8"], "finished runs are skipped and the interrupted one continues"),
    ("reproduce", ["reproduce"], "finished steps are skipped and training continues from its last checkpoint"),
    ("demo", ["demo"], "finished steps are skipped and training continues from its last checkpoint"),
])
def test_ctrl_c_says_what_this_command_needs_to_go_on(module, argv, words, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"dhanalysis.cli.{module}.run", interrupted)
    capsys.readouterr()
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("dhanalysis: interrupted; ") and err.count("\n") == 1 and words in err, err


# ------------------------------------------------------------------------------------------------ the range table
def _numeric_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of every int, float or list-of-numbers field of a config dataclass, recursively."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _numeric_keys(tp, f"{prefix}{f.name}.")
            continue
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if item in (int, float):
            keys.append(f"{prefix}{f.name}")
    return keys


def test_every_numeric_key_has_a_range():
    assert sorted(_numeric_keys(Config)) == sorted(RANGES)


def test_defaults_and_every_preset_lie_in_range():
    Config()  # the defaults
    config_from_dict(config_to_dict(Config()))
    for name in presets():
        load_config(name)


def _outside(key: str) -> list:
    """Values just outside the key's range (NaN too, for numbers)."""
    b = RANGES[key]
    values = []
    if b.low is not None:
        values.append(b.low if b.low_open else b.low - 1)
    if b.high is not None:
        values.append(b.high if b.high_open else b.high + 1)
    if b.kind is float:
        values += [float("nan"), float("inf")]
    return [[v] if isinstance(getattr_path(Config(), key), tuple) else v for v in values]


def _edges(key: str) -> list:
    """The closed ends of the key's range: values it must accept."""
    b = RANGES[key]
    values = [v for v, is_open in ((b.low, b.low_open), (b.high, b.high_open)) if v is not None and not is_open]
    values = [b.kind(v) for v in values] or [b.kind(1)]
    return [[v] if isinstance(getattr_path(Config(), key), tuple) else v for v in values]


def getattr_path(obj: object, key: str) -> object:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_key_refuses_values_outside_its_range_and_accepts_its_edges(key):
    for value in _edges(key):
        assert getattr_path(load_config(None, values={key: value}), key) == (tuple(value) if isinstance(value, list)
                                                                            else value)
    for value in _outside(key):
        with pytest.raises(DHError) as info:
            load_config(None, values={key: value})
        message = str(info.value)
        shown = value[0] if isinstance(value, list) else value
        assert f"config key '{key}' must be " in message and f"--set {key}=VALUE" in message, message
        assert RANGES[key].describe(plural=isinstance(value, list)) in message, message
        got = message.split(", got ", 1)[1]
        if isinstance(shown, float) and math.isnan(shown):
            assert got.startswith(("nan", "[nan")), message
        else:
            assert got.lstrip("[").startswith(f"{shown:g}" if isinstance(shown, float) else str(shown)), message
        assert "\n" not in message


def test_lists_that_need_items_refuse_an_empty_list():
    with pytest.raises(DHError, match=r"'model.rpn.anchor_sizes' must be a non-empty list of integers >= 1, got \[\]"):
        load_config(None, ["model.rpn.anchor_sizes=[]"])
    assert load_config(None, ["model.rpn.anchor_strides=[]", "train.steps=[]"]).train.steps == ()


def test_a_null_number_is_refused():
    with pytest.raises(DHError, match="'train.iterations' must be an integer >= 1, got None"):
        load_config(None, ["train.iterations=null"])


def test_every_way_of_building_a_config_checks_ranges(tmp_path):
    with pytest.raises(DHError, match="'train.gamma' must be a number in"):
        replace(Config(), ["train.gamma=0"])
    stored = config_to_dict(Config())
    stored["data"]["hflip_prob"] = 2.0
    with pytest.raises(DHError, match="'data.hflip_prob' must be a number in"):
        config_from_dict(stored)  # a checkpoint's stored config
    with pytest.raises(DHError, match="'train.momentum' must be a number in"):
        load_config(config_file(tmp_path, momentum=1.0))


def test_library_training_checks_configs_built_in_code(tmp_path):
    from dhanalysis.engine.train import scale_schedule, train

    cfg = Config()
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ims_per_batch=-2))
    out = tmp_path / "out"
    with pytest.raises(DHError, match="'train.ims_per_batch' must be an integer >= 1, got -2"):
        train(bad, out, device="cpu")
    with pytest.raises(DHError, match="resume=True continues the run in the folder and overwrite=True discards it"):
        train(cfg, out, resume=True, overwrite=True, device="cpu")
    assert not out.exists()
    with pytest.raises(DHError, match="at least 1, got 0"):
        scale_schedule(cfg, 0)
    small = load_config(None, ["train.steps=[1, 3]", "train.ims_per_batch=2", "train.iterations=4"])
    assert scale_schedule(small, 8).train.steps == (1, 1)  # a step never rounds down to iteration 0


@pytest.mark.parametrize("device", ["cuda:abc", "cuda0", "gpu"])
def test_a_malformed_device_is_one_line(device, data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_argv(data, out)
    argv[argv.index("--device") + 1] = device
    message = refused(argv, capsys, out)
    assert f"unknown device '{device}'" in message


def test_output_cut_short_by_its_reader_ends_quietly(capsys, monkeypatch):
    """`dhanalysis sweep --list --grid fig8 | head -1`: the reader closes the pipe; no traceback, exit 0."""
    import io
    import os

    spare = os.dup(1)  # the CLI points the closed stream's descriptor at /dev/null: give it one of its own

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

        def fileno(self):
            return spare

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    try:
        assert main(["sweep", "--list", "--grid", "fig8"]) == 0
    finally:
        os.close(spare)
    assert "Traceback" not in capsys.readouterr().err
