"""One row per analysis (`dhanalysis.results.RESULTS`): every row's command is in the parser and its help names the
files the row declares; a small run of each cheap command writes exactly the declared files; every figure a row
names is in the figures table, and every figure declared from an analysis's files is named by a row. A new row is
tested for free."""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from pathlib import Path

import pytest

from dhanalysis.cli import COMMANDS, PIPELINES, SETUP, main
from dhanalysis.results import RESULTS

COMMAND_ROWS = [o for o in RESULTS.values() if o.command]


def test_row_commands_are_unique_and_apart_from_the_other_commands():
    names = [o.command for o in COMMAND_ROWS]
    assert len(names) == len(set(names)) and not set(names) & (set(SETUP) | set(PIPELINES))
    assert all(o.command_module and o.help for o in COMMAND_ROWS)


@pytest.mark.parametrize("row", COMMAND_ROWS, ids=lambda o: o.analysis)
def test_row_command_is_in_the_parser_and_its_help_names_its_outputs(row, capsys):
    assert COMMANDS[row.command] == (row.command_module, row.help)
    module = importlib.import_module(row.command_module)
    assert callable(module.add_arguments) and callable(module.run)
    assert main(["--help"]) == 0
    assert row.help in " ".join(capsys.readouterr().out.split())
    assert main([row.command, "--help"]) == 0
    text = capsys.readouterr().out
    for name in row.files:
        if name.endswith(".parquet") and name.replace(".parquet", ".csv") in row.files:
            continue  # a Parquet twin goes with its CSV
        assert name.split("*")[0] in text, f"`dhanalysis {row.command} --help` does not name {name}"


def _file_figures() -> dict:
    import dhanalysis.figures as package

    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        found.update(getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "FILE_FIGURES", {}))
    return found


@pytest.mark.parametrize("row", [o for o in RESULTS.values() if o.figures], ids=lambda o: o.analysis)
def test_every_figure_a_row_names_is_in_the_figures_table(row):
    from dhanalysis.figures.render import FIGURES, TABLE_CAPTIONS

    assert [k for k in row.figures if k not in FIGURES and k not in TABLE_CAPTIONS] == []


def test_every_figure_of_an_analysis_files_is_named_by_a_row_and_drawn():
    from dhanalysis.figures.render import FIGURES

    declared = _file_figures()
    named = {k for o in RESULTS.values() for k in o.figures}
    assert declared and set(declared) <= named
    assert all(FIGURES[k][0] == spec.title for k, spec in declared.items())


def test_a_file_figure_names_its_rows_command_when_its_files_are_missing(tmp_path):
    from dhanalysis.figures.render import FIGURES, Results

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "eval.csv").write_text("model,mode,AP\n")
    res = Results(tmp_path)
    for key, spec in _file_figures().items():
        row = next(o for o in RESULTS.values() if key in o.figures)
        assert FIGURES[key][1](res) == f"needs {', '.join(spec.files)} (dhanalysis {row.command})"


# ------------------------------------------------------------------------------------------------ small runs
def _detections_argv(tmp_path: Path, out: Path) -> list[str]:
    from test_detections import make_dets, make_gt, write

    gt = make_gt(1, images=6, classes=2)
    gt_path, det_path = write(tmp_path, gt, make_dets(gt, 1))
    return ["detections", "--gt", str(gt_path), "--results", str(det_path), "--out", str(out), "--bootstrap", "0"]


def _compare_argv(tmp_path: Path, out: Path) -> list[str]:
    from test_detections import make_dets, make_gt, write

    gt = make_gt(2, images=6, classes=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gt_path, a = write(tmp_path / "a", gt, make_dets(gt, 2))
    _, b = write(tmp_path / "b", gt, make_dets(gt, 3))
    return ["compare", "--gt", str(gt_path), "--results", str(a), "--results", str(b), "--out", str(out),
            "--replicates", "9"]


def _tiny_model(tmp_path: Path) -> Path:
    import torch

    from dhanalysis.data.synth import make_synth_dataset
    from dhanalysis.model import build_model, save_checkpoint
    from helpers import tiny_config

    data = tmp_path / "data"
    make_synth_dataset(data, num_train=1, num_val=2, image_size=64, seed=0)
    torch.manual_seed(0)
    cfg = tiny_config("double-head-ext", "model.num_classes=6", "model.min_size=64", "model.max_size=64",
                      f"data.root={data}")
    save_checkpoint(tmp_path / "m.pth", build_model(cfg))
    return tmp_path / "m.pth"


def _probe_argv(command: str, *extra: str):
    def argv(tmp_path: Path, out: Path) -> list[str]:
        return [command, "--ckpt", str(_tiny_model(tmp_path)), "--out", str(out), *extra]

    return argv


# the cheap runs: a command -> its arguments for a tiny case (tmp folder, output folder)
SMALL_RUNS = {
    "detections": _detections_argv,
    "compare": _compare_argv,
    "eval": _probe_argv("eval"),
    "sliding-window": _probe_argv("sliding-window", "--proposals-per-gt", "150", "--raw-sample", "1", "--no-progress"),
    "spatial-corr": _probe_argv("spatial-corr", "--no-progress"),
}


@pytest.mark.parametrize("row", COMMAND_ROWS, ids=lambda o: o.analysis)
def test_a_small_run_writes_exactly_the_declared_files(row, tmp_path):
    if row.command not in SMALL_RUNS:
        pytest.skip(f"no run of `dhanalysis {row.command}` takes seconds")
    out = tmp_path / "out"
    assert main(SMALL_RUNS[row.command](tmp_path, out)) == 0
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    # a model's analyses also write its config.json; detections and compare their folder's report page
    declared = (*row.files, *RESULTS["model"].files, *RESULTS["report"].files)
    assert [f for f in written if not any(fnmatch.fnmatch(f, d) for d in declared)] == []
    parquet = importlib.util.find_spec("pyarrow") is not None
    missing = [d for d in row.files if (parquet or not d.endswith(".parquet"))
               and not any(fnmatch.fnmatch(f, d) for f in written)]
    assert missing == []
