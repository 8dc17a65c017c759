"""A study's findings: the evidence of every trunk gathered from its replicates, the claims measured on it, and the
tables written (findings.csv / .md, each seed's values, the fc-vs-conv claims side by side on every trunk)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dhanalysis.study.evidence import Evidence, findings_table, load_image_sums, load_matches, write_findings
from dhanalysis.folders import write_table
from dhanalysis.study.claims import dose_response, measure_claims, per_seed_table, trunk_table
from dhanalysis.study.layout import PROTOCOL, Layout
from dhanalysis.study.plan import SINGLE_FC_RUN, StudyPlan, Trunk, analysed_models, untrained_models, width_run
from dhanalysis.vocab import DOSE_CSV, EVAL_CSV, PER_SEED_CSV, SWEEP_CSV, SWEEP_RESULTS_CSV, TRUNKS_CSV


def build_evidence(plan: StudyPlan, layout: Layout, trunk: Trunk, dataset, replicates: int,
                   with_ap: bool = True) -> Evidence:
    """Every seed's per-image sums of the analysed models (and Fig. 4's untrained heads) and, with ``with_ap``, every
    run's AP matches; a model or run a seed does not train is ``None`` at that seed."""
    seeds = list(plan.all_seeds)
    roles = {}
    for seed in seeds:
        roles.update(analysed_models(trunk, plan, seed))
        roles.update(untrained_models(trunk, plan, seed))
    sums = {}
    for model in roles:
        folders = [layout.replicate_results(trunk, seed) / model for seed in seeds]
        if any(f.is_dir() for f in folders):
            sums[model] = [load_image_sums(f, dataset.num_classes) if f.is_dir() else None for f in folders]
    matches: dict = {}
    if with_ap:
        ids = [int(i) for i in dataset.ids[:plan.eval_images]]  # evaluate() takes the first N images
        for i, seed in enumerate(seeds):
            sweeps = layout.replicate_results(trunk, seed) / "sweeps"
            for run_dir in sorted(p for p in sweeps.glob("*/*") if (p / EVAL_CSV).is_file()
                                  and p.parent.name != "table3"):
                modes = list(pd.read_csv(run_dir / EVAL_CSV)["mode"])
                for mode, m in load_matches(dataset.coco, run_dir, modes, ids).items():
                    matches.setdefault((run_dir.name, mode), [None] * len(seeds))[i] = m
    return Evidence(seeds, sums, matches, replicates)


def study_findings(plan: StudyPlan, layout: Layout, replicates: int) -> pd.DataFrame:
    """findings.csv (per claim and trunk), findings.md, the per-seed values and the two-trunk table."""
    from dhanalysis.data.coco import CocoDataset

    dataset = CocoDataset(layout.data, plan.split)
    rows: list[dict] = []
    for i, trunk in enumerate(plan.trunks):
        primary = i == 0
        evidence = build_evidence(plan, layout, trunk, dataset, replicates, with_ap=primary)
        runs = sweep_index(plan, layout, trunk) if primary else None
        grid = sweep_tables(plan, layout, trunk, "fig8") if primary else None
        strength = width_run(plan.strength_matched_width) if plan.strength_matched_width else None
        rows += measure_claims(evidence, trunk.name, PROTOCOL, runs, grid, fc_vs_conv_only=not primary,
                               strength_matched=strength)
        if primary and plan.fc_widths:
            widths = {"single-fc": (SINGLE_FC_RUN, plan.fc_width),
                      **{width_run(d): (width_run(d), d) for d in plan.fc_widths}}
            write_table(dose_response(evidence, widths, trunk.name), layout.results / Path(DOSE_CSV).stem,
                        parquet=False)
    frame = findings_table([{k: v for k, v in r.items() if k != "per_seed"} for r in rows])
    write_findings(frame, layout.results, header=findings_header(plan, layout.tag))
    write_table(per_seed_table(rows, {t.name: list(plan.all_seeds) for t in plan.trunks}), layout.results / PER_SEED_CSV,
                parquet=False)
    write_table(trunk_table(frame), layout.results / TRUNKS_CSV, parquet=False)
    return frame


def sweep_tables(plan: StudyPlan, layout: Layout, trunk: Trunk, name: str) -> pd.DataFrame:
    """One grid's ``results.csv`` of every seed of ``trunk``, with a ``seed`` column."""
    frames = []
    for seed in plan.all_seeds:
        path = layout.replicate_results(trunk, seed) / "sweeps" / name / SWEEP_RESULTS_CSV
        if path.is_file():
            frames.append(pd.read_csv(path).assign(seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sweep_index(plan: StudyPlan, layout: Layout, trunk: Trunk) -> pd.DataFrame:
    """Every grid's ``sweep.csv`` of the first seed: each run's own metadata (variant, weights, λ)."""
    sweeps = layout.replicate_results(trunk, plan.seeds[0]) / "sweeps"
    frames = [pd.read_csv(p) for p in sorted(sweeps.glob(f"*/{SWEEP_CSV}"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "variant"])


def findings_header(plan: StudyPlan, tag: str) -> str:
    d = plan.data
    n_test = d.get("num_test", 0)
    trunks = ", ".join(f"{t.name} (trained end to end as {t.variant})" for t in plan.trunks)
    return (f"# Findings of the CPU-scale reproduction ({tag})\n\n"
            f"Synthetic dataset ({d['num_train']} training / {d['num_val']} validation / {d.get('num_test', 0)} test "
            f"images, {d['image_size']} px); every number is measured on the **{plan.split}** split, which nothing "
            f"was tuned on. Protocol: {PROTOCOL} — each head trained from scratch on the frozen backbone, FPN and RPN "
            f"of a trunk: {trunks}; the fc-vs-conv claims are measured on every trunk, the rest on the first. "
            f"{len(plan.seeds)} seed(s) per model (head initialisation, data order and RoI sampling). Differences are "
            "signed so that the paper's claim is > 0; AP differences in AP points; the estimate is the mean over "
            "seeds. 95% intervals: t intervals from the seed and image variance components, each bootstrap "
            "replicate drawing the test images once for every seed and model (crossed, paired); AP rows resample the "
            f"{min(plan.eval_images or n_test, n_test)} images AP is evaluated on, the analysis rows the "
            f"{min(plan.analysis_images or n_test, n_test)} analysed images (n_images, image_set). 'holds' = the "
            "interval is above 0, 'contradicted' = below 0, else 'inconclusive'. **Holm**: the same verdicts after "
            "Holm's step-down correction over every claim row (p-values from the same t; a 'for every pair' row counts "
            "once, with the largest p-value of its pairs). Claims the paper credits to joint training with the "
            f"backbone are measured but marked 'not testable on a frozen trunk'.\n")


__all__ = ["build_evidence", "findings_header", "study_findings", "sweep_index", "sweep_tables"]
