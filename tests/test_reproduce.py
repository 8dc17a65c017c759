"""`dhanalysis reproduce --tiny`: the whole study at tiny size — trunk, heads on the trunk, every evaluation and
analysis, figures, findings — killed midway, resumed without redoing finished steps, and its findings consistent
with the result tables they come from."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dhanalysis.analysis.findings import FINDINGS_COLUMNS, load_image_sums
from dhanalysis.analysis.stats import MOMENTS
from dhanalysis.cli.reproduce import ANALYSED, ship

from test_faults import kill_when, run_to_end

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("reproduce")
    argv = ["reproduce", "--tiny", "--workdir", str(work), "--device", "cpu"]
    ckpts = work / "checkpoints" / "reproduction-tiny"
    first_head = ckpts / "table1" / "single-fc-w1" / "model_final.pth"
    log = work / "log.txt"
    kill_when(argv, first_head.exists, log)  # killed after the trunk and the first head run
    trunk = ckpts / "trunk" / "model_final.pth"
    before = {p: p.stat().st_mtime_ns for p in (trunk, first_head, ckpts / "resnet18-synth.pth")}
    run_to_end(argv, log)
    return work, before, log


def test_resumed_study_keeps_finished_steps_and_completes(study):
    work, before, log = study
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
    text = log.read_text()
    trunk = next(iter(before))
    assert f"{trunk} is complete" in text and "nothing to do" in text  # the resumed call skipped the trunk
    results = work / "results" / "reproduction-tiny"
    assert (results / "findings.csv").is_file() and (results / "findings.md").is_file()
    summary = json.loads((results / "reproduction_summary.json").read_text())
    assert summary["protocol"] == "shared-trunk" and "gt_class_score" in summary["checks"]
    for grid, runs in (("table1", 10), ("fig8", 4), ("table3", 1)):
        assert len(pd.read_csv(results / "sweeps" / grid / "sweep.csv")) == runs
    figures = work / "figures" / "reproduction-tiny"
    for name in ("fig2", "fig3", "fig4", "fig6", "fig7", "fig8", "figA3"):
        assert (figures / f"{name}.png").is_file(), name


def test_heads_share_the_frozen_trunk(study):
    import torch

    from dhanalysis.model.checkpoint import read_checkpoint

    work, _, _ = study
    ckpts = work / "checkpoints" / "reproduction-tiny"
    trunk = read_checkpoint(ckpts / "trunk" / "model_final.pth")["model"]
    for grid, run in (("table1", "single-conv-w1"), ("fig8", "lfc0.7-lconv0.8")):
        head = read_checkpoint(ckpts / grid / run / "model_final.pth")
        assert head["config"]["train"]["freeze"] == ["backbone", "rpn"]
        for k, v in trunk.items():
            if k.startswith(("backbone.", "rpn.")):
                assert torch.equal(head["model"][k], v), k


def test_findings_are_consistent_with_their_intervals_and_tables(study):
    work, _, _ = study
    results = work / "results" / "reproduction-tiny"
    findings = pd.read_csv(results / "findings.csv")
    assert list(findings.columns) == list(FINDINGS_COLUMNS)
    assert {"pcc-windows-all", "regression-conv-better", "spatial-fc-more-sensitive", "table1-w2-reverse-worst",
            "table3-complementary-vs-none", "fig8-unfocused-tasks-help", "fig8-peak"} <= set(findings["claim"])
    measured = findings[findings["ci_low"].notna()]
    assert len(measured) >= 10
    for r in measured.itertuples():
        assert r.ci_low <= r.ours + 1e-9 or r.ci_high >= r.ours - 1e-9
        expected = "holds" if r.ci_low > 0 else "contradicted" if r.ci_high < 0 else "inconclusive"
        assert r.verdict == expected, r.claim
    assert (findings["protocol"] == "shared-trunk").all()

    # per-image sums (the bootstrap's input) add up to the statistics tables of the same folders
    for name in ANALYSED:
        sums = load_image_sums(results / name, num_classes=6)
        stats = pd.read_csv(results / name / "sliding_window_stats.csv")
        for i, head in enumerate(sums.window_heads):
            got = sums.window[:, i].sum(axis=(0, 1, 2, 3))
            want = stats[stats["head"] == head][list(MOMENTS)].sum().to_numpy(float)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
        assert len(sums.image_ids) == 4


def test_ship_copies_small_results_only(study, tmp_path):
    work, _, _ = study
    dest = tmp_path / "shipped"
    ship(work / "results" / "reproduction-tiny", work / "figures" / "reproduction-tiny", dest)
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert (dest / "findings.md").is_file() and (dest / "figures" / "fig2.png").is_file()
    assert (dest / "sweeps" / "table1" / "results.csv").is_file()
    assert not [p for p in files if p.suffix in (".pt", ".pth") or "chunks" in p.parts or p.name.startswith(
        "detections_")]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    # provenance ships relative to the work folder: no path of this machine in any shipped record
    records = [p for p in files if p.suffix in (".json", ".csv")]
    assert records and not [p for p in records if str(work.resolve()) in p.read_text()]
    config = json.loads((dest / "single-fc" / "config.json").read_text())
    assert config["data"]["root"] == "data/synth-tiny"
