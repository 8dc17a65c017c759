"""Sweeps list the paper's ablation runs, skip finished ones, and index their results."""

from __future__ import annotations

import shlex

import pandas as pd
import pytest

from dhanalysis.cli import build_parser, main
from dhanalysis.config import config_to_dict, load_config, parse_override, preset_path
from dhanalysis.engine.sweep import GRIDS, fig8_runs, grid_runs, set_flags, table1_runs, table2_runs, write_index
from dhanalysis.model.variants import effective_loss_weights


def test_table1_runs_reproduce_the_paper_weights():
    runs = {r.name: r for r in table1_runs()}
    assert len(runs) == 10
    # e.g. the bottom-group Double-Head: fc-head cls 2.0, conv-head reg 2.5, nothing else
    cfg = load_config(preset_path("synth/double-head.yaml"), values=runs["double-head-w2"].overrides)
    w = {k: v for k, v in effective_loss_weights(cfg.model.variant, cfg.model.loss).items() if v}
    assert w == {("fc", "cls"): 2.0, ("conv", "reg"): 2.5}
    cfg = load_config(preset_path("synth/double-head.yaml"), values=runs["double-head-reverse-w1"].overrides)
    w = {k: v for k, v in effective_loss_weights(cfg.model.variant, cfg.model.loss).items() if v}
    assert w == {("fc", "reg"): 1.0, ("conv", "cls"): 1.0}


def test_table2_and_fig8_grids():
    t2 = table2_runs()
    assert [(r.meta["K"], r.meta["non_local"]) for r in t2] == [(0, False)] + [(k, False) for k in range(1, 8)] + [
        (3, True), (5, True), (7, True)]
    f8 = fig8_runs()
    assert len(f8) == 36 and {r.meta["lambda_fc"] for r in f8} == {0.5, 0.6, 0.7, 0.8, 0.9, 1.0}


def test_index_joins_finished_runs(tmp_path):
    runs = grid_runs("fig8")[:3]
    (tmp_path / runs[0].name).mkdir()
    pd.DataFrame([{"model": runs[0].name, "mode": "complementary", "AP": 0.4, "AP50": 0.6, "AP75": 0.4, "APs": 0.1,
                   "APm": 0.3, "APl": 0.5}]).to_csv(tmp_path / runs[0].name / "eval.csv", index=False)
    results = write_index(runs, "fig8", tmp_path)
    assert len(pd.read_csv(tmp_path / "sweep.csv")) == 3
    assert list(results["run"]) == [runs[0].name] and results["lambda_fc"].item() == 0.5


def test_emit_torchrun_commands(tmp_path):
    assert main(["sweep", "--grid", "table2", "--config", "configs/coco/r50/double-head.yaml", "--out",
                 str(tmp_path), "--emit-torchrun", "8"]) == 0
    lines = (tmp_path / "commands.sh").read_text().splitlines()[2:]
    assert len(lines) == 11
    assert all(line.startswith("torchrun --nproc_per_node 8 -m dhanalysis train") for line in lines)
    assert "--set model.head.num_blocks=5 --set model.head.non_local=true" in lines[-2]


def exactly(a, b) -> bool:
    """Equal with the same types all the way down (1.0 is not 1, True is not "true")."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(exactly(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(exactly(x, y) for x, y in zip(a, b))
    return a == b


def test_every_grid_value_survives_its_set_flag():
    """What a torchrun line carries (`set_flags`) reads back, through the command line's parser, as the run's own
    value: float stays float, a bool a bool."""
    for grid in GRIDS:
        for run in grid_runs(grid):
            flags = set_flags(run.overrides)
            assert len(flags) == len(run.overrides)
            for (key, value), flag in zip(run.overrides.items(), flags):
                keys, parsed = parse_override(flag)
                assert ".".join(keys) == key and exactly(parsed, value), (run.name, flag)


USER_SETS = ["train.iterations=7", "model.loss.w_fc=3.0", "model.head.num_blocks=2", "model.variant=single-conv"]


@pytest.mark.parametrize("base", ["configs/synth/double-head-ext.yaml", "configs/coco/r50/single-fc.yaml"])
def test_emitted_torchrun_lines_build_the_runs_configs(base, tmp_path, monkeypatch):
    """Each trained run's config as `run_sweep` builds it equals the one its --emit-torchrun line builds through
    `dhanalysis train`'s parser, the user's --set flags included (the run's own values win over them in both)."""
    import dhanalysis.engine.train as engine_train
    from dhanalysis.engine.sweep import run_sweep

    class Built(Exception):
        pass

    swept = {}

    def capture(cfg, out, **kwargs):
        swept[out.name] = config_to_dict(cfg)
        raise Built

    monkeypatch.setattr(engine_train, "train", capture)
    parser = build_parser("train")
    for grid in ("table1", "table2", "fig8"):
        out = tmp_path / grid
        sets = [f"--set={s}" for s in USER_SETS]
        assert main(["sweep", "--grid", grid, "--config", base, "--out", str(out), "--emit-torchrun", "2", *sets]) == 0
        lines = (out / "commands.sh").read_text().splitlines()[2:]
        runs = grid_runs(grid)
        assert len(lines) == len(runs)
        for run, line in zip(runs, lines):
            with pytest.raises(Built):
                run_sweep(grid, base, out, USER_SETS, device="cpu", runs=[run], log=lambda text: None)
            argv = shlex.split(line.split(" && ")[0])
            args = parser.parse_args(argv[argv.index("dhanalysis") + 1:])
            emitted = config_to_dict(load_config(args.config, args.overrides))
            emitted["name"] = swept[run.name]["name"]  # `dhanalysis train` names a run after its --config file
            assert exactly(emitted, swept[run.name]), run.name
            model = swept[run.name]["model"]  # the run's values win over the user's flags; those it leaves apply
            assert (model["variant"], model["loss"]["w_fc"]) == (run.overrides["model.variant"],
                                                                  run.overrides["model.loss.w_fc"])
            assert swept[run.name]["train"]["iterations"] == 7


# Bases that differ from what the grids hold fixed: Ext's λ = (0.7, 0.8) and non-local blocks, Single-FC's ω = 1.
BASES = ("configs/coco/r50/double-head-ext.yaml", "configs/coco/r50/single-fc.yaml", "configs/synth/double-head.yaml")


def resolved(base: str, run) -> tuple:
    m = load_config(preset_path(base), values=run.overrides).model
    return (m.variant, m.head.num_blocks, m.head.non_local, m.loss.w_fc, m.loss.w_conv, m.loss.lambda_fc,
            m.loss.lambda_conv)


@pytest.mark.parametrize("base", BASES)
def test_table1_runs_resolve_to_the_papers_models(base):
    k = load_config(preset_path(base)).model.head.num_blocks  # Table 1 keeps the base's K (5 on COCO)
    expected = {f"{v}-w1": (v, k, False, 1.0, 1.0, 1.0, 1.0) for v in ("single-fc", "single-conv")}
    for v in ("double-fc", "double-conv", "double-head-reverse", "double-head"):
        expected[f"{v}-w1"] = (v, k, False, 1.0, 1.0, 1.0, 1.0)
        expected[f"{v}-w2"] = (v, k, False, 2.0, 2.5, 1.0, 1.0)
    assert {r.name: resolved(base, r) for r in table1_runs()} == expected


@pytest.mark.parametrize("base", BASES)
def test_table2_runs_resolve_to_the_papers_models(base):
    expected = {"K0": ("single-fc", load_config(preset_path(base)).model.head.num_blocks, False, 1.0, 1.0, 1.0, 1.0)}
    expected |= {f"K{k}": ("double-head", k, False, 2.0, 2.5, 1.0, 1.0) for k in range(1, 8)}
    expected |= {f"K{k}-nl": ("double-head", k, True, 2.0, 2.5, 1.0, 1.0) for k in (3, 5, 7)}
    assert {r.name: resolved(base, r) for r in table2_runs()} == expected


@pytest.mark.parametrize("base", BASES)
def test_fig8_runs_resolve_to_the_papers_models(base):
    k = load_config(preset_path(base)).model.head.num_blocks
    runs = fig8_runs()
    got = {r.name: resolved(base, r) for r in runs}
    expected = {f"lfc{lf:g}-lconv{lc:g}": ("double-head-ext", k, True, 2.0, 2.5, lf, lc)
                for lf in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0) for lc in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)}
    assert got == expected


@pytest.mark.slow
def test_table3_evaluates_the_given_model_without_training(tmp_path):
    """The Table 3 sweep evaluates the checkpoint it is given (nothing is trained) in the paper's four rows: no
    fusion, max, average, complementary; its AP is that checkpoint's, evaluated directly."""
    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.data.synth import make_synth_dataset
    from dhanalysis.engine.evaluate import evaluate
    from dhanalysis.engine.sweep import run_sweep
    from dhanalysis.figures.ablation import table3
    from dhanalysis.model import build_model, save_checkpoint
    from dhanalysis.model.checkpoint import load_checkpoint

    from helpers import tiny_config

    make_synth_dataset(tmp_path / "data", num_train=1, num_val=1, image_size=64, seed=0)
    cfg = tiny_config("double-head-ext", f"data.root={tmp_path / 'data'}", "model.num_classes=6",
                      "model.score_thresh=0.0", "model.min_size=64", "model.max_size=64")
    ckpt = tmp_path / "ext.pth"
    save_checkpoint(ckpt, build_model(cfg))
    results = run_sweep("table3", ckpt, tmp_path / "sweep", device="cpu", eval_progress=False, log=lambda line: None)
    assert not list(tmp_path.rglob("model_final.pth"))  # nothing trained
    assert list(table3(results)["fusion method"]) == ["No fusion", "Max", "Average", "Complementary"]
    model = load_checkpoint(ckpt)
    direct, _ = evaluate(model, CocoDataset(tmp_path / "data", "val"), list(results["mode"]), progress=False)
    pd.testing.assert_frame_equal(results[["mode", "AP", "AP50"]].reset_index(drop=True),
                                  direct[["mode", "AP", "AP50"]].reset_index(drop=True))
