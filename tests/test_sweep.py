"""Sweeps list the paper's ablation runs, skip finished ones, and index their results."""

from __future__ import annotations

import pandas as pd

from dhanalysis.cli import main
from dhanalysis.engine.sweep import fig8_runs, grid_runs, table1_runs, table2_runs, write_index
from dhanalysis.model.variants import effective_loss_weights
from dhanalysis.config import load_config

from helpers import ROOT


def test_table1_runs_reproduce_the_paper_weights():
    runs = {r.name: r for r in table1_runs()}
    assert len(runs) == 10
    # e.g. the bottom-group Double-Head: fc-head cls 2.0, conv-head reg 2.5, nothing else
    cfg = load_config(ROOT / "configs/synth/double-head.yaml", list(runs["double-head-w2"].overrides))
    w = {k: v for k, v in effective_loss_weights(cfg.model.variant, cfg.model.loss).items() if v}
    assert w == {("fc", "cls"): 2.0, ("conv", "reg"): 2.5}
    cfg = load_config(ROOT / "configs/synth/double-head.yaml", list(runs["double-head-reverse-w1"].overrides))
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
