"""`dhanalysis reproduce --tiny`: the whole study at tiny size — two trunks, two seeds, heads trained together on
each frozen trunk, every evaluation and analysis on the test split, figures, findings — killed midway, resumed
without redoing finished steps; its findings equal what the result tables give when recomputed independently."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dhanalysis.study.evidence import FINDINGS_COLUMNS, load_image_sums
from dhanalysis.stats.moments import MOMENTS
from dhanalysis.study import TINY, Layout, Outcome
from dhanalysis.study.plan import ANALYSED
from dhanalysis.vocab import EVALUATED_IMAGES_JSON

from test_faults import kill_when, run_to_end

pytestmark = pytest.mark.slow
TAG = "reproduction-tiny"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("reproduce")
    argv = ["reproduce", "--tiny", "--workdir", str(work), "--device", "cpu"]
    layout = Layout(work, TAG, TINY.data_dir)
    primary = TINY.trunks[0]
    first_head = layout.runs(primary, 0) / "table1" / "single-fc-w1" / "model_final.pth"
    log = work / "log.txt"
    kill_when(argv, first_head.exists, log)  # killed after the trunks and the first seed's heads
    trunk = layout.trunk(primary) / "model_final.pth"
    before = {p: p.stat().st_mtime_ns for p in (trunk, first_head, layout.backbone)}
    run_to_end(argv, log)
    return layout, before, log


def test_resumed_study_keeps_finished_steps_and_completes(study):
    layout, before, log = study
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
    text = log.read_text()
    trunk = next(iter(before))
    assert f"{trunk} is complete" in text and "nothing to do" in text  # the resumed call skipped the trunk
    results = layout.results
    assert (results / "findings.csv").is_file() and (results / "findings.md").is_file()
    summary = json.loads((results / "reproduction_summary.json").read_text())
    assert summary["protocol"] == "shared-trunk" and summary["split"] == "test"
    assert set(summary["checks"]["replicates"]) == {f"{t.name}-trunk/seed{s}" for t in TINY.trunks
                                                    for s in TINY.all_seeds}
    fc_trunk, dh_trunk = TINY.trunks
    widths = [f"single-fc-d{d}" for d in TINY.fc_widths]
    pair = ["single-conv-w1", "single-fc-w1"]
    for seed in TINY.all_seeds:
        sweeps = layout.replicate_results(fc_trunk, seed) / "sweeps"
        section3_only = seed not in TINY.seeds  # a §3 seed: the pair and the fc widths only
        for grid, runs in (("table1", 2 if section3_only else 10), ("widths", len(widths))) + (
                () if section3_only else (("fig8", 4), ("table3", 1))):
            assert len(pd.read_csv(sweeps / grid / "sweep.csv")) == runs, (seed, grid)
        assert not section3_only or not (sweeps / "fig8").exists()
        widths_meta = pd.read_csv(sweeps / "widths" / "sweep.csv")
        assert sorted(widths_meta["run"]) == sorted(widths) and set(widths_meta["fc_dim"]) == set(TINY.fc_widths)
        for d in TINY.fc_widths:  # each width run's own fc6 width, not the plan's
            from dhanalysis.model.checkpoint import read_checkpoint
            cfg = read_checkpoint(layout.runs(fc_trunk, seed) / "widths" / f"single-fc-d{d}" / "model_final.pth")
            assert cfg["config"]["model"]["head"]["fc_dim"] == d
        # the second trunk trains the §3 pair only, and analyses it with its untrained baseline
        other = layout.replicate_results(dh_trunk, seed)
        assert sorted(pd.read_csv(other / "sweeps" / "table1" / "sweep.csv")["run"]) == pair
        assert sorted(p.name for p in other.iterdir() if p.name != "sweeps") == [
            "single-conv", "single-conv-init", "single-fc", "single-fc-init"]
    for name in ("fig2", "fig3", "fig4", "fig6", "fig7", "fig8", "figA3"):
        assert (layout.figures / f"{name}.png").is_file(), name
    heads = pd.read_csv(results / "heads_params.csv")
    both = heads.groupby("run")["head"].nunique()
    ratios = heads.dropna(subset=["fc_over_conv"])
    assert set(ratios["run"]) == set(both[both == 2].index) and len(ratios) >= 5


def test_evaluations_and_analyses_read_the_test_split(study):
    layout, _, _ = study
    test_ids = {img["id"] for img in json.loads((layout.data / "annotations" / "instances_test.json").read_text())[
        "images"]}
    primary = layout.replicate_results(TINY.trunks[0], 0)
    run = primary / "sweeps" / "table1" / "single-fc-w1"
    # which images AP covers is recorded by the evaluation itself: a tiny model may detect nothing above the score
    # threshold on some CPU's kernels, so the detections cannot be what tells
    evaluated = json.loads((run / EVALUATED_IMAGES_JSON).read_text())["image_ids"]
    assert sorted(evaluated) == sorted(test_ids)
    dets = json.loads((run / "detections_fc.json").read_text())
    assert {d["image_id"] for d in dets} <= test_ids
    sums = load_image_sums(primary / "single-fc", num_classes=6)
    assert set(sums.image_ids) == test_ids


def test_heads_of_every_seed_share_their_frozen_trunk_and_differ_by_seed(study):
    import torch

    from dhanalysis.model.checkpoint import read_checkpoint

    layout, _, _ = study
    for trunk in TINY.trunks:
        weights = read_checkpoint(layout.trunk(trunk) / "model_final.pth")["model"]
        heads = {}
        for seed in TINY.seeds:
            head = read_checkpoint(layout.runs(trunk, seed) / "table1" / "single-conv-w1" / "model_final.pth")
            assert head["config"]["train"]["freeze"] == ["backbone", "rpn"] and head["config"]["train"]["seed"] == seed
            for k, v in weights.items():
                if k.startswith(("backbone.", "rpn.")):
                    assert torch.equal(head["model"][k], v), k
            heads[seed] = head["model"]["roi_heads.branches.conv.predictor.cls_score.weight"]
        assert not torch.equal(heads[0], heads[1])


def _pcc(m: pd.Series) -> float:
    """Pearson's r of score and IoU from the moment sums, in float64 (written out, not our helper)."""
    n, sx, sxx, ss, sss, sxs = (float(m[k]) for k in ("n_s", "sum_x", "sum_x2", "sum_s", "sum_s2", "sum_xs"))
    return (n * sxs - sx * ss) / np.sqrt((n * sxx - sx * sx) * (n * sss - ss * ss))


CSV_REL = 1e-5  # findings.csv keeps six significant digits (float_format %.6g): a relative error up to 5e-6


def test_findings_equal_an_independent_recomputation_from_the_tables(study):
    """Estimates are the mean over seeds of per-seed differences: recomputed here from each replicate's
    sliding_window_stats.csv (PCC) and eval.csv (pycocotools' AP), and the Holm column from statsmodels."""
    from statsmodels.stats.multitest import multipletests

    layout, _, _ = study
    findings = pd.read_csv(layout.results / "findings.csv")
    assert list(findings.columns) == list(FINDINGS_COLUMNS)
    assert {"pcc-windows-all", "regression-conv-better", "spatial-fc-more-sensitive",
            "spatial-fc-more-sensitive-control", "table1-w2-reverse-worst", "table3-complementary-vs-none",
            "fig8-unfocused-tasks-help", "fig8-two-heads-beat-one", "fig8-fusion-adds", "fig8-peak"} <= set(
        findings["claim"])
    assert (findings["protocol"] == "shared-trunk").all()
    # the §3 pair has every seed, the rest the first ones: a comparison uses the seeds all its models have
    n_seeds = findings.set_index(["claim", "trunk"])["n_seeds"]
    assert (n_seeds.xs("pcc-windows-all", level="claim") == len(TINY.all_seeds)).all()
    assert n_seeds[("table1-double-fc-beats-single-fc", TINY.trunks[0].name)] == len(TINY.seeds)
    assert n_seeds[("fig6-single-conv-scores", TINY.trunks[0].name)] == len(TINY.seeds)
    per_seed = pd.read_csv(layout.results / "findings_per_seed.csv")
    for trunk in TINY.trunks:
        # each alignment measure's row, recomputed from the tables the analyses wrote: pooled and positives-only
        # PCC from the per-bin moments, the within-object ρ as the mean over objects of the object table's values
        for claim, measure in (("pcc-windows-all", "pooled"), ("pcc-windows-all-positive", "positive"),
                               ("pcc-windows-all-object", "object")):
            want = []
            for seed in TINY.all_seeds:
                rep = layout.replicate_results(trunk, seed)
                values = {}
                for model, head in (("single-fc", "fc"), ("single-conv", "conv")):
                    stats = pd.read_csv(rep / model / "sliding_window_stats.csv")
                    stats = stats[stats["head"] == head]
                    if measure == "object":
                        objects = pd.read_csv(rep / model / "sliding_window_objects.csv")
                        values[model] = objects.loc[objects["head"] == head, "spearman"].dropna().mean()
                    else:
                        part = stats if measure == "pooled" else stats[stats["bin"] >= 10]
                        values[model] = _pcc(part[list(MOMENTS)].sum())
                want.append(values["single-fc"] - values["single-conv"])
                got = per_seed.query("claim == @claim and trunk == @trunk.name and seed == @seed")["value"]
                if np.isfinite(want[-1]):
                    assert float(got.iloc[0]) == pytest.approx(want[-1], rel=1e-6, abs=1e-9), (claim, seed)
            row = findings.query("claim == @claim and trunk == @trunk.name").iloc[0]
            assert row["alignment"] == {"pooled": "pooled_pcc", "positive": "positive_pcc",
                                        "object": "object_spearman"}[measure]
            if np.isfinite(want).all():
                assert row["ours"] == pytest.approx(np.mean(want), rel=CSV_REL, abs=1e-9)
    # an AP claim: 100 × (AP(Double-FC) − AP(Single-FC)) in each seed's eval.csv, averaged over seeds
    want = []
    for seed in TINY.seeds:
        sweeps = layout.replicate_results(TINY.trunks[0], seed) / "sweeps" / "table1"
        ap = {run: pd.read_csv(sweeps / run / "eval.csv").set_index("mode").loc["fc", "AP"]
              for run in ("double-fc-w1", "single-fc-w1")}
        want.append(100 * (ap["double-fc-w1"] - ap["single-fc-w1"]))
    row = findings.query("claim == 'table1-double-fc-beats-single-fc'").iloc[0]
    assert row["ours"] == pytest.approx(np.mean(want), abs=1e-6)
    # Holm over the claim rows that are claims of their own
    family = findings[findings["verdict"].isin(["holds", "contradicted", "inconclusive"]) & (findings["role"] ==
                                                                                             "claim")]
    rejected = multipletests(family["p_value"].to_numpy(), alpha=0.05, method="holm")[0]
    want = [v if r and v != "inconclusive" else "inconclusive" for v, r in zip(family["verdict"], rejected)]
    assert family["verdict_holm"].tolist() == want
    # "for every pair" holds only if every component holds, and its components are shipped; the row shows its
    # weakest pair's own estimate and interval, and the paper's magnitude is tested by a row of its own
    for claim, magnitude in (("fig8-two-heads-beat-one", 0.9), ("fig8-fusion-adds", 0.4)):
        parts = findings[findings["claim"].str.startswith(claim + "@")]
        whole = findings[findings["claim"] == claim].iloc[0]
        assert len(parts) >= 1 and (parts["role"] == "component").all()
        assert (whole["verdict"] == "holds") == (parts["verdict"] == "holds").all()
        if whole["verdict"] != "not measured":
            weakest = parts[np.isclose(parts["ci_low"], whole["ci_low"])]
            assert len(weakest) >= 1
            assert whole["ours"] == pytest.approx(weakest["ours"].iloc[0]) and \
                whole["ci_high"] == pytest.approx(weakest["ci_high"].iloc[0])
            # the magnitude row: its own weakest pair against +magnitude (the one that decides its verdict)
            big = findings[findings["claim"] == f"{claim}-magnitude"].iloc[0]
            shown = parts[np.isclose(parts["ours"], big["ours"]) & np.isclose(parts["ci_low"], big["ci_low"]) &
                          np.isclose(parts["ci_high"], big["ci_high"])]
            assert len(shown) >= 1
            assert (big["verdict"] == "holds") == (parts["ci_low"] > magnitude).all()
            assert (big["verdict"] == "contradicted") == (parts["ci_high"] < magnitude).any()
    # Fig. 4 against the untrained heads: the baseline and what training adds beyond it
    rows = findings.set_index(["claim", "trunk"])
    for trunk in TINY.trunks:
        base = rows.loc[("spatial-untrained-baseline", trunk.name)]
        trained = rows.loc[("spatial-fc-more-sensitive", trunk.name)]
        beyond = rows.loc[("spatial-fc-more-sensitive-beyond-structure", trunk.name)]
        assert np.isfinite(base["ours"]) and beyond["ours"] == pytest.approx(trained["ours"] - base["ours"],
                                                                            rel=CSV_REL, abs=1e-6)
    # the strength-matched Single-FC's §3.2 rows, and the dose-response over the fc widths
    strong = f"@single-fc-d{TINY.strength_matched_width}"
    assert {f"pcc-windows-all{strong}", f"pcc-windows-all-positive{strong}"} <= set(findings["claim"])
    dose = pd.read_csv(layout.results / "dose_response.csv")
    assert set(dose["fc_dim"]) == {TINY.fc_width, *TINY.fc_widths}
    gaps = dose[dose["quantity"] == "ap_gap"].set_index("role")["ours"]
    ap = {}
    for seed in TINY.seeds + TINY.section3_seeds:
        sweeps = layout.replicate_results(TINY.trunks[0], seed) / "sweeps"
        for run, grid, mode in (("single-conv-w1", "table1", "conv"), ("single-fc-d16", "widths", "fc")):
            ap.setdefault(run, []).append(pd.read_csv(sweeps / grid / run / "eval.csv").set_index("mode").loc[
                mode, "AP"])
    assert gaps["single-fc-d16"] == pytest.approx(100 * (np.mean(ap["single-fc-d16"]) -
                                                         np.mean(ap["single-conv-w1"])), abs=1e-4)
    # per-image sums (the bootstrap's input) add up to the statistics tables of the same folders
    primary = layout.replicate_results(TINY.trunks[0], 0)
    for name in ANALYSED:
        sums = load_image_sums(primary / name, num_classes=6)
        stats = pd.read_csv(primary / name / "sliding_window_stats.csv")
        for i, head in enumerate(sums.window_heads):
            got = sums.window[:, i].sum(axis=(0, 1, 2, 3))
            want = stats[stats["head"] == head][list(MOMENTS)].sum().to_numpy(float)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_two_trunk_table_and_frozen_trunk_claims(study):
    layout, _, _ = study
    table = pd.read_csv(layout.results / "findings_by_trunk.csv")
    assert "pcc-windows-all" in set(table["claim"]) and "table1-w1-reverse-worst" not in set(table["claim"])
    for trunk in TINY.trunks:
        assert f"{trunk.name}_verdict" in table.columns
    depends = table[f"{TINY.trunks[0].name}_verdict"] != table[f"{TINY.trunks[1].name}_verdict"]
    assert (table["depends_on_trunk"] == depends).all()
    findings = pd.read_csv(layout.results / "findings.csv")
    a2 = findings[findings["section"].str.startswith("A.2")]
    assert len(a2) == 2 and set(a2["verdict"]) <= {"not testable on a frozen trunk", "not measured"}


def test_ship_copies_small_results_only_and_writes_pages_from_the_tables(study, tmp_path):
    from dhanalysis.study.ship import (CHECKS_END, CHECKS_START, README_END, README_START, alignment_section,
                                       checks_section, dose_section, findings_section, read_section,
                                       readme_findings, ship)

    layout, _, _ = study
    frame = pd.read_csv(layout.results / "findings.csv")
    outcome = Outcome(layout, layout.replicate_results(TINY.trunks[0], 0), frame, {}, 0.0)
    dest = tmp_path / "shipped"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{CHECKS_START}\nold numbers\n{CHECKS_END}\nbetween\n{README_START}\nstale, "
                      f"hand-written\n{README_END}\nafter\n")
    ship(outcome, dest, readme)
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert (dest / "findings.md").is_file() and (dest / "figures" / "fig2.png").is_file()
    assert (dest / "sweeps" / "table1" / "results.csv").is_file() and (dest / "findings_per_seed.csv").is_file()
    assert len(list(dest.glob("replicates/*-trunk/seed*/sweeps/table1/results.csv"))) == len(TINY.trunks) * len(
        TINY.all_seeds)
    # the dose-response table and figure, and the index page's sections written from the tables
    assert (dest / "dose_response.csv").is_file() and (dest / "figures" / "dose_response.png").is_file()
    page = (dest / "README.md").read_text()
    assert alignment_section(frame) in page and dose_section(pd.read_csv(dest / "dose_response.csv")) in page
    assert not [p for p in files if p.suffix in (".pt", ".pth") or "chunks" in p.parts or p.name.startswith(
        "detections_") and p.name != "detections_summary.json"]
    # the detections analyses' small tables, without the per-detection table or the per-detection curves
    analysed = layout.detections(TINY.trunks[0], 0)
    for folder in (p for p in analysed.iterdir() if p.is_dir()):
        shipped = {p.name for p in (dest / "detections" / folder.name).iterdir()}
        summary = "compare_summary.json" if (folder / "compare.csv").is_file() else "detections_summary.json"
        assert summary in shipped and not shipped & {"detections.csv", "detections.parquet", "det_f1_curve.csv",
                                                      "det_analyze_pr.csv"}, folder.name
        assert shipped <= {p.name for p in folder.iterdir()}
    assert "`detections/`" in page
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    records = [p for p in files if p.suffix in (".json", ".csv")]
    assert records and not [p for p in records if str(layout.work.resolve()) in p.read_text()]
    config = json.loads((dest / "single-fc" / "config.json").read_text())
    assert config["data"]["root"] == "data/synth-tiny"
    text = readme.read_text()
    assert "stale" not in text and "old numbers" not in text and text.endswith(f"{README_END}\nafter\n")
    summary = json.loads((dest / "reproduction_summary.json").read_text())
    assert read_section(readme, CHECKS_START, CHECKS_END) == checks_section(summary)
    assert readme_findings(readme) == findings_section(pd.read_csv(dest / "findings.csv"))
    contradicted = frame[(frame["verdict"] == "contradicted") & (frame["role"] != "component")]
    assert all(f"{r.section}: {r.statement}" in text for r in contradicted.itertuples())



def test_primary_detections_are_analysed_and_compared_once(study):
    """The primary replicate's detections/: `detections` of each analysed model's default-mode file (or nothing, for
    a tiny model that detected nothing), `compare` of Single-FC with Single-Conv; none of its folders is read as a
    model's; a second call recomputes nothing."""
    from dhanalysis.metrics.detections import compute_detections
    from dhanalysis.results import discover_models
    from dhanalysis.study.runner import Steps, primary_detections
    from dhanalysis.vocab import DEFAULT_MODES

    layout, _, log = study
    trunk = TINY.trunks[0]
    primary, folder = layout.replicate_results(trunk, 0), layout.detections(trunk, 0)
    assert folder.parent == primary and "detections" not in discover_models(primary)
    assert "detections of single-fc, single-conv" in log.read_text()
    # the study's figure pass draws the paper's figures; the detections' own read these folders (the notebook's), so
    # it does not log them as missing
    assert "Detections: " not in log.read_text() and (layout.figures / "fig4.png").is_file()
    gt = layout.data / "annotations" / "instances_test.json"
    for role, (grid, run) in ANALYSED.items():
        dets = primary / "sweeps" / grid / run / f"detections_{DEFAULT_MODES[role]}.json"
        if not json.loads(dets.read_text()):
            assert not (folder / role).exists(), role
            continue
        summary = json.loads((folder / role / "detections_summary.json").read_text())
        assert summary["run"]["results"]["name"] == dets.name and summary["run"]["replicates"] == TINY.replicates
        assert summary["stage"] == "after_nms" and summary["images"] == len(json.loads(gt.read_text())["images"])
        # the same numbers as the analysis run here on the same files, without a folder
        fresh = compute_detections(gt, dets, replicates=TINY.replicates, progress=lambda _: None)
        assert summary["coco"]["AP"] == pytest.approx(fresh.summary["coco"]["AP"], abs=1e-12)
    pair = folder / "single-fc-vs-single-conv"
    if (folder / "single-fc").is_dir() and (folder / "single-conv").is_dir():
        compared = json.loads((pair / "compare_summary.json").read_text())
        assert compared["names"] == {"a": "single-fc", "b": "single-conv"} and compared["replicates"] == TINY.replicates
        table = pd.read_csv(pair / "compare.csv").set_index("metric")
        for role, side in (("single-fc", "a"), ("single-conv", "b")):
            ap = json.loads((folder / role / "detections_summary.json").read_text())["coco"]["AP"]
            assert table.loc["AP", side] == pytest.approx(ap, abs=1e-9)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    primary_detections(TINY, layout, Steps(1))
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before


def test_quality_targets_are_read_at_the_worst_replicate(study):
    """The README's quality checks take each target at its worst replicate and run: recomputed here from every
    replicate's own Table 1 results.csv (default mode of each variant) and sliding-window statistics."""
    from dhanalysis.study.checks import target_rows
    from dhanalysis.vocab import DEFAULT_MODES

    layout, _, _ = study
    summary = json.loads((layout.results / "reproduction_summary.json").read_text())
    rows = {r["name"]: r for r in target_rows(summary["checks"])}
    ap50, sfc = [], []
    for trunk, seed in TINY.replicates_of():
        table = pd.read_csv(layout.replicate_results(trunk, seed) / "sweeps" / "table1" / "results.csv")
        default = table[[DEFAULT_MODES[v] == m for v, m in zip(table["variant"], table["mode"])]]
        ap50 += list(default["AP50"])
        sfc += list(default.loc[default["run"] == "single-fc-w1", "AP"])
    assert rows["default_mode_AP50"]["worst"] == pytest.approx(min(ap50), abs=1e-4)
    assert rows["single_fc_AP"]["worst"] == pytest.approx(min(sfc), abs=1e-4)
    assert rows["single_fc_AP"]["met"] == (min(sfc) >= 0.5)
    lows = []
    for stats in layout.results.glob("*-trunk/seed*/*/sliding_window_stats.csv"):
        frame = pd.read_csv(stats)
        low = frame[frame["bin"] < 6]  # 20 bins of 0.05: IoU < 0.3
        for _, part in low.groupby("head"):
            lows.append(float(part["sum_s"].sum() / part["n_s"].sum()))
    assert lows and rows["score_iou_lo"]["worst"] == pytest.approx(max(lows), rel=1e-6)


def test_regime_pilot_trains_on_the_trunk_and_measures_on_val(study, tmp_path):
    """The regime pilot (study/regime.py) reuses the study's trunk, evaluates every run on ``val`` only (the study's
    val images and more from the same generator: TINY_REGIME extends the split), and its convergence and gap tables
    equal a recomputation from the runs' eval.csv files."""
    from dhanalysis.model.checkpoint import read_checkpoint
    from dhanalysis.study.regime import TINY_REGIME, run_regime
    from dhanalysis.vocab import DEFAULT_MODES

    layout, _, _ = study
    frame = run_regime(TINY, layout, TINY_REGIME, device="cpu")
    extended = layout.work / "data" / f"{layout.data_dir}-val{TINY_REGIME.val_images}"
    val_ids = sorted(img["id"] for img in json.loads((extended / "annotations" / "instances_val.json").read_text())[
        "images"])
    study_val = json.loads((layout.data / "annotations" / "instances_val.json").read_text())["images"]
    assert len(val_ids) == TINY_REGIME.val_images > len(study_val)
    for name in (img["file_name"] for img in study_val):  # the study's val images come first, unchanged
        assert (extended / "val" / name).read_bytes() == (layout.data / "val" / name).read_bytes()
    assert set(frame["images"]) == {TINY_REGIME.val_images}
    out = TINY_REGIME.results(layout)
    # the widths and Single-Conv at every schedule; the other variants (with the plan's heads) at theirs
    runs = {it: ["single-conv", *[f"single-fc-d{d}" for d in TINY_REGIME.fc_dims]] for it in TINY_REGIME.schedules}
    for it in TINY_REGIME.variant_schedules:
        runs.setdefault(it, []).extend(TINY_REGIME.variants)
    assert len(frame) == sum(len(r) for r in runs.values())
    ap = {}
    for it, names in runs.items():
        for run in names:
            folder = out / f"it{it}" / run
            assert json.loads((folder / EVALUATED_IMAGES_JSON).read_text())["image_ids"] == val_ids
            ev = pd.read_csv(folder / "eval.csv").set_index("mode")
            variant = frame[frame["run"] == run]["variant"].iloc[0]
            ap[it, run] = ev.loc[DEFAULT_MODES[variant], "AP"]  # each variant's own default mode
            state = read_checkpoint(layout.checkpoints / "regime" / f"it{it}" / run / "model_final.pth")
            assert state["iteration"] == it
            assert state["config"]["model"]["variant"] == variant
    conv = pd.read_csv(out / "regime_convergence.csv")
    for row in conv.itertuples():
        longest = max(it for it, names in runs.items() if row.run in names)  # the run's own longest schedule
        assert row.delta_points == pytest.approx(100 * (ap[longest, row.run] - ap[row.iterations, row.run]), abs=1e-9)
        if row.iterations == longest:
            assert pd.isna(row.converged)  # nothing longer to measure it against
        else:
            assert bool(row.converged) == (abs(row.delta_points) <= 0.3)
    gaps = pd.read_csv(out / "regime_gaps.csv")
    for row in gaps.itertuples():
        want = 100 * (ap[row.iterations, f"single-fc-d{row.fc_dim}"] - ap[row.iterations, "single-conv"])
        assert row.gap_AP_points == pytest.approx(want, abs=1e-9)
    # resumable: a second call trains nothing and gives the same table
    pd.testing.assert_frame_equal(run_regime(TINY, layout, TINY_REGIME, device="cpu"), frame)
    # --ship copies the three tables as written
    from dhanalysis.cli.reproduce import ship_regime

    shipped = ship_regime(out, tmp_path / "docs")
    assert [p.name for p in shipped] == ["regime.csv", "regime_convergence.csv", "regime_gaps.csv"]
    assert all(p.parent == tmp_path / "docs" / out.name for p in shipped)
    assert all(p.read_bytes() == (out / p.name).read_bytes() for p in shipped)


def test_regime_reuses_the_study_runs_it_would_replay(study, tmp_path):
    """At the study's schedule and seed the regime's runs are the study's: its group is led by Single-FC at the
    study's width, as the study's own group is, so it draws the study's RoIs. Trained again in a fresh folder they
    give the study's heads (to float32 noise; another lead, another RoI stream, moves them by the learning rate's
    order), so the pilot links the study's checkpoints instead of training them twice."""
    import torch

    from dhanalysis.engine.train import train_together
    from dhanalysis.model.checkpoint import read_checkpoint
    from dhanalysis.study.regime import TINY_REGIME, regime_configs, run_regime

    layout, _, _ = study
    run_regime(TINY, layout, TINY_REGIME, device="cpu")  # resumes what the pilot's other test trained
    it = TINY.heads["train.iterations"]
    assert it in TINY_REGIME.schedules and it in TINY_REGIME.variant_schedules
    trunk = TINY.trunks[0]
    seed0 = layout.runs(trunk, 0)
    same = {f"single-fc-d{TINY.fc_width}": "table1/single-fc-w1", "single-conv": "table1/single-conv-w1",
            **{f"single-fc-d{d}": f"widths/single-fc-d{d}" for d in TINY_REGIME.fc_dims if d != TINY.fc_width},
            **{v: f"table1/{v}" for v in TINY_REGIME.variants}}
    linked = layout.checkpoints / "regime" / f"it{it}"
    for regime_run, study_run in same.items():
        assert (linked / regime_run / "model_final.pth").samefile(seed0 / study_run / "model_final.pth")
    runs = regime_configs(TINY, layout, TINY_REGIME, it, layout.trunk(trunk) / "model_final.pth")
    assert {name for name, _, _ in runs} == set(same)
    assert runs[0][0] == f"single-fc-d{TINY.fc_width}"
    rotated = runs[1:] + runs[:1]  # the same runs led by another model: another RoI stream
    for order, out in ((runs, tmp_path / "lead"), (rotated, tmp_path / "rotated")):
        train_together([cfg for _, _, cfg in order], [out / name for name, _, _ in order], device="cpu")
    moved = {}
    for regime_run, study_run in same.items():
        theirs = read_checkpoint(seed0 / study_run / "model_final.pth")["model"]
        heads = [k for k in theirs if k.startswith("roi_heads.")]
        assert heads, "no head parameters to compare"
        ours, other = (read_checkpoint(out / regime_run / "model_final.pth")["model"]
                       for out in (tmp_path / "lead", tmp_path / "rotated"))
        for k in heads:  # float32 noise of the conv-heads' BatchNorm statistics (up to ~30) stays below 1e-4
            torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-4, msg=f"{regime_run}: {k}")
        moved[regime_run] = max(float((other[k] - theirs[k]).abs().max()) for k in heads)
    assert max(moved.values()) > 1e-3, moved  # the lead is what makes them the same runs
