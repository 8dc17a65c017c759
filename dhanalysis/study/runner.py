"""Running a study: every step of a `StudyPlan`, each skipped when its output exists, so a rerun resumes.

  from dhanalysis.study import FULL, run_study
  outcome = run_study(FULL, "work", "reproduction")      # what `dhanalysis reproduce` runs; a notebook can too

Steps: the synthetic dataset (train / val / test) -> backbone pretraining on box crops -> each trunk trained end to
end -> per trunk and seed, every head run trained *together* on the frozen trunk (one RoI sampling and pooling per
iteration for all heads: `engine.train.train_together`) and evaluated in every mode on the test split -> the
analysed models' sliding-window, PCC and spatial analyses on the test split -> the primary replicate's detections
analysed (`dhanalysis detections` of each analysed model, `dhanalysis compare` of Single-FC with Single-Conv) -> its
qualitative images, architecture table and figures -> the heads' parameter table -> the findings over every seed and
trunk -> the quality checks and a summary.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dhanalysis.folders import atomic_write_text, write_table
from dhanalysis.study.checks import replicate_checks
from dhanalysis.study.findings import study_findings
from dhanalysis.study.layout import PROTOCOL, Layout
from dhanalysis.study.plan import (ANALYSED, EXT_RUN, StudyPlan, Trunk, analysed_models, head_runs,
                                   untrained_models)
from dhanalysis.vocab import (DOSE_CSV, EVAL_CSV, EVALUATED_IMAGES_JSON, FINAL_CHECKPOINT, HEADS_CSV, PCC_CSV,
                              PER_CLASS_AP_CSV, SPATIAL_CORR_NPZ, STUDY_SUMMARY_JSON, VARIANTS, detections_file,
                              split_paths)

@dataclass
class Outcome:
    """Where a study wrote its results and what it found."""

    layout: Layout
    primary: Path  # the primary replicate's results tree
    findings: pd.DataFrame
    checks: dict
    seconds: float

    @property
    def results(self) -> Path:
        return self.layout.results

    @property
    def figures(self) -> Path:
        return self.layout.figures


class Steps:
    """Numbered progress lines with the elapsed minutes."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def __call__(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total} {(time.perf_counter() - self.start) / 60:5.1f} min] {text}", flush=True)


def run_study(plan: StudyPlan, work: str | Path, tag: str, device: str | None = None,
              replicates: int | None = None) -> Outcome:
    """Every step of a study of size ``plan`` under ``work`` (outputs tagged ``tag``), skipping finished ones."""
    from dhanalysis.engine.distributed import resolve_device

    layout = Layout(Path(work), tag, plan.data_dir)
    device = str(resolve_device(device))
    reps = plan.replicates_of()
    step = Steps(5 + 2 * len(plan.trunks) + 3 * len(reps) + plan.untrained_baseline)  # data, pretraining, each
    # trunk twice, each replicate thrice (heads, their evaluation, analyses), the untrained heads, the primary's
    # detections, figures, findings
    started = time.perf_counter()
    prepare_data(plan, layout, step)
    trunks = {t.name: train_trunk(plan, layout, t, device, step) for t in plan.trunks}
    for trunk, seed in reps:
        train_heads(plan, layout, trunk, seed, trunks[trunk.name], device, step)
    if plan.untrained_baseline:
        step(f"the §3 heads as initialised (Fig. 4's baseline) -> {layout.checkpoints}")
        for trunk, seed in reps:
            untrained_heads(plan, layout, trunk, seed, trunks[trunk.name])
    for trunk, seed in reps:
        analyse_replicate(plan, layout, trunk, seed, device, step)
    primary = layout.replicate_results(*reps[0])
    primary_detections(plan, layout, step)
    step(f"the primary replicate's qualitative images, architecture and figures -> {layout.figures}")
    primary_extras(plan, layout, primary, device)
    step(f"findings over {len(plan.seeds)} seed(s) and {len(plan.trunks)} trunk(s) -> {layout.results}")
    frame = study_findings(plan, layout, replicates or plan.replicates)
    render_dose_response(layout)
    checks = quality_checks(plan, layout)
    seconds = time.perf_counter() - started
    summary = {"protocol": PROTOCOL, "study": tag, "split": plan.split, "minutes_this_call": seconds / 60,
               "checks": checks, "plan": plan_record(plan)}
    atomic_write_text(layout.results / STUDY_SUMMARY_JSON, json.dumps(summary, indent=2, default=list))
    return Outcome(layout, primary, frame, checks, seconds)


def plan_record(plan: StudyPlan) -> dict:
    from dataclasses import asdict

    return asdict(plan)


def prepare_data(plan: StudyPlan, layout: Layout, step: Steps) -> None:
    """The synthetic dataset and the crop-pretrained ResNet-18 (the local stand-in for ImageNet weights)."""
    from dhanalysis.data.synth import make_synth_dataset
    from dhanalysis.engine.pretrain import pretrain_backbone

    step(f"synthetic dataset (train / val / {plan.split}) -> {layout.data}")
    make_synth_dataset(layout.data, **plan.data)
    step(f"pretrain the ResNet-18 on box crops -> {layout.backbone}")
    if not layout.backbone.exists():
        pretrain_backbone(layout.data, "train", layout.backbone, progress=True, **plan.pretrain)


def common_values(plan: StudyPlan, layout: Layout) -> dict:
    return {"data.root": str(layout.data), **plan.model}


def train_trunk(plan: StudyPlan, layout: Layout, trunk: Trunk, device: str, step: Steps) -> Path:
    """The trunk's detector trained end to end (the paper's protocol) and its AP on the test split."""
    from dhanalysis.config import load_config, preset_path
    from dhanalysis.engine.train import train

    step(f"the {trunk.name} trunk, trained end to end -> {layout.trunk(trunk)}")
    values = {**plan.trunk_schedule, **trunk.overrides, **common_values(plan, layout), "name": f"{trunk.name}-trunk",
              "model.backbone.weights": str(layout.backbone)}
    path = train(load_config(preset_path(f"synth/{trunk.variant}.yaml"), values=values), layout.trunk(trunk),
                 resume=True, device=device)
    step(f"COCO AP of the {trunk.name} trunk on {plan.split} -> {layout.trunk_results(trunk) / EVAL_CSV}")
    evaluate_run(plan, layout, path, layout.trunk_results(trunk), f"{trunk.name}-trunk", device)
    return path


def evaluate_run(plan: StudyPlan, layout: Layout, ckpt: Path, out: Path, name: str, device: str,
                 modes: list[str] | None = None) -> None:
    """Every mode's AP (and detections) of one checkpoint on the plan's split, unless already there."""
    if (out / EVAL_CSV).exists():
        return
    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.engine.evaluate import evaluate
    from dhanalysis.model.checkpoint import load_checkpoint

    dataset = CocoDataset(layout.data, plan.split)
    evaluate(load_checkpoint(ckpt, map_location=device), dataset, modes, device, max_images=plan.eval_images,
             out=out, name=name, progress=False)


def evaluate_runs(plan: StudyPlan, layout: Layout, runs: list[tuple[Path, Path, str, list[str] | None]],
                  device: str) -> None:
    """The runs of one trunk without an ``eval.csv``, evaluated together: the trunk runs once per image for all of
    them (`engine.evaluate.evaluate_together`); ``runs``: (checkpoint, output folder, name, modes or None)."""
    todo = [r for r in runs if not (r[1] / EVAL_CSV).exists()]
    if not todo:
        return
    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.engine.evaluate import evaluate_together
    from dhanalysis.model.checkpoint import load_checkpoint

    models = [load_checkpoint(ckpt, map_location=device) for ckpt, *_ in todo]
    dataset = CocoDataset(layout.data, plan.split)
    evaluate_together(models, dataset, [modes for *_, modes in todo], device, max_images=plan.eval_images,
                      outs=[out for _, out, _, _ in todo], names=[name for _, _, name, _ in todo], progress=False)


def run_values(values: dict, overrides: dict) -> dict:
    """A run's whole values: the plan's head ``values`` with the run's own ``overrides`` over them (its own win, e.g.
    a width run's fc6)."""
    return {**{k: v for k, v in values.items() if k not in overrides}, **overrides}


def train_heads(plan: StudyPlan, layout: Layout, trunk: Trunk, seed: int, trunk_ckpt: Path, device: str,
                step: Steps) -> None:
    """Every head run of one (trunk, seed), trained together on the frozen trunk, then evaluated on the test split."""
    from dhanalysis.config import load_config, preset_path
    from dhanalysis.engine.sweep import write_index
    from dhanalysis.engine.train import train_together

    grids = head_runs(plan, trunk, seed)
    runs = [(grid, r) for grid, rs in grids.items() for r in rs]
    ckpts, results = layout.runs(trunk, seed), layout.replicate_results(trunk, seed)
    step(f"{len(runs)} head runs of {layout.replicate(trunk, seed).name}, trained together -> {ckpts}")
    values = {**plan.heads, **common_values(plan, layout), "model.backbone.weights": None,
              "train.init_from": str(trunk_ckpt), "train.freeze": ["backbone", "rpn"], "train.seed": seed}
    todo = [(g, r) for g, r in runs if not (ckpts / g / r.name / FINAL_CHECKPOINT).exists()]
    if todo:
        cfgs = [load_config(preset_path("synth/double-head-ext.yaml"),
                            values={**run_values(values, r.overrides), "name": r.name}) for _, r in todo]
        train_together(cfgs, [ckpts / g / r.name for g, r in todo], resume=True, device=device)
    step(f"COCO AP of every mode of {len(runs)} runs on {plan.split}, evaluated together -> {results / 'sweeps'}")
    evaluate_runs(plan, layout, [(ckpts / g / r.name / FINAL_CHECKPOINT, results / "sweeps" / g / r.name, r.name,
                                  list(r.modes) or None) for g, r in runs], device)
    for grid, rs in grids.items():
        if rs:
            write_index(rs, grid, results / "sweeps" / grid)
    if any(r.name == EXT_RUN for r in grids.get("fig8", [])):
        table3(results / "sweeps")


def table3(sweeps: Path) -> None:
    """Table 3 is the λ (0.7, 0.8) model's fusion rules: its evaluation, indexed as the table3 grid."""
    from dhanalysis.engine.sweep import table3_runs, write_index

    out = sweeps / "table3" / "fusion"
    out.mkdir(parents=True, exist_ok=True)
    for f in (EVAL_CSV, PER_CLASS_AP_CSV):
        shutil.copyfile(sweeps / "fig8" / EXT_RUN / f, out / f)
    write_index(table3_runs(), "table3", sweeps / "table3")


def untrained_heads(plan: StudyPlan, layout: Layout, trunk: Trunk, seed: int, trunk_ckpt: Path) -> None:
    """Checkpoints of the §3 pair with their heads as initialised by ``seed`` on the trunk (no training):
    ``<replicate>/untrained/<role>/model_final.pth``."""
    from dhanalysis.config import load_config, preset_path
    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.engine.train import untrained_checkpoint

    models = untrained_models(trunk, plan, seed)
    if not models:
        return
    num_classes = CocoDataset(layout.data, "train").num_classes
    values = {**plan.heads, **common_values(plan, layout), "model.backbone.weights": None,
              "train.init_from": str(trunk_ckpt), "train.freeze": ["backbone", "rpn"], "train.seed": seed}
    runs = {r.name: r for rs in head_runs(plan, trunk, seed).values() for r in rs}
    for role, (_, run) in models.items():
        r = runs[run]
        cfg = load_config(preset_path("synth/double-head-ext.yaml"),
                          values={**run_values(values, r.overrides), "name": role})
        untrained_checkpoint(cfg, num_classes, layout.runs(trunk, seed) / "untrained" / role / FINAL_CHECKPOINT)


def analyse_replicate(plan: StudyPlan, layout: Layout, trunk: Trunk, seed: int, device: str, step: Steps) -> None:
    """Sliding-window, PCC and spatial correlation of the replicate's analysed models, one image per chunk (the
    findings bootstrap over images), on the test split."""
    from dhanalysis.metrics.groups import load_difficulty
    from dhanalysis.probes.pcc import compute_pcc
    from dhanalysis.probes.harness import RunOptions, load_models
    from dhanalysis.probes.spatial import compute_spatial_corr

    results, ckpts = layout.replicate_results(trunk, seed), layout.runs(trunk, seed)
    models = analysed_models(trunk, plan, seed)
    step(f"analyses of {', '.join(models)} in {layout.replicate(trunk, seed).name} -> {results}")
    reference = results / "sweeps" / Path(*ANALYSED["single-fc"]) / PER_CLASS_AP_CSV
    difficulty = load_difficulty(reference) if reference.is_file() else None
    options = RunOptions(chunk_size=1, progress=False)
    for name, (grid, run) in models.items():
        folder = results / name
        folder.mkdir(parents=True, exist_ok=True)
        for f in (EVAL_CSV, PER_CLASS_AP_CSV):
            shutil.copyfile(results / "sweeps" / grid / run / f, folder / f)
        if (folder / PCC_CSV).exists() and (folder / SPATIAL_CORR_NPZ).exists():
            continue
        for model_run in load_models([ckpts / grid / run / FINAL_CHECKPOINT], out=folder,
                                     max_images=plan.analysis_images, device=device, split=plan.split,
                                     data_root=layout.data):
            if not (folder / PCC_CSV).exists():
                compute_pcc(model_run, proposals_per_gt=plan.proposals_per_gt, difficulty=difficulty,
                            difficulty_from=str(reference) if difficulty else None, options=options)
            if not (folder / SPATIAL_CORR_NPZ).exists():
                compute_spatial_corr(model_run, options=options)
    for role in untrained_models(trunk, plan, seed):  # Fig. 4's baseline: the spatial analysis alone
        folder = results / role
        if (folder / SPATIAL_CORR_NPZ).exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for model_run in load_models([ckpts / "untrained" / role / FINAL_CHECKPOINT], out=folder,
                                     max_images=plan.analysis_images, device=device, split=plan.split,
                                     data_root=layout.data):
            compute_spatial_corr(model_run, options=options)


# the paired comparison of the primary replicate's detections: (A, B), the difference is B - A (§3's pair)
DETECTIONS_PAIR = ("single-fc", "single-conv")


def primary_detections(plan: StudyPlan, layout: Layout, step: Steps) -> Path:
    """`dhanalysis detections` of each analysed model's detections file (its variant's default mode) on the plan's
    split, and `dhanalysis compare` of `DETECTIONS_PAIR`, for the primary replicate: ``<role>/`` and
    ``<a>-vs-<b>/`` under `Layout.detections`, with the plan's bootstrap replicates. A folder already holding the
    same analysis is read back, not recomputed (the analyses claim their folders), so a rerun resumes; a model that
    detected nothing has no folder (an empty results file is not an analysis), and then no comparison is made."""
    from dhanalysis.metrics.compare import compute_compare
    from dhanalysis.metrics.detections import compute_detections

    trunk, seed = plan.replicates_of()[0]
    out = layout.detections(trunk, seed)
    files = analysed_detections(plan, layout, trunk, seed)
    a, b = DETECTIONS_PAIR
    step(f"detections of {', '.join(files) or 'no model'} analysed, {b} compared with {a}, on {plan.split} -> {out}")
    found = {role: path for role, path in files.items() if json.loads(path.read_text())}
    for role in (r for r in files if r not in found):
        print(f"  {role}: no detections in {files[role].name}, nothing to analyse", flush=True)
    if not found:
        return out
    out.mkdir(parents=True, exist_ok=True)
    gt = evaluated_ground_truth(plan, layout, next(iter(found.values())).parent, out)
    for role, path in found.items():
        compute_detections(gt, path, out / role, replicates=plan.replicates, progress=_quiet)
    if a in found and b in found:
        compute_compare(gt, [found[a], found[b]], out / f"{a}-vs-{b}", names=[a, b], num_replicates=plan.replicates,
                        progress=_quiet)
    return out


def _quiet(_: str) -> None:
    """The analyses' progress lines, left out of the study's own."""


def analysed_detections(plan: StudyPlan, layout: Layout, trunk: Trunk, seed: int) -> dict[str, Path]:
    """role -> eval's detections file of each of `ANALYSED`'s models that trained on ``trunk`` at ``seed``, in the
    default inference mode of its variant (the variant its analysed folder's config.json names)."""
    from dhanalysis.results import discover_models

    results = layout.replicate_results(trunk, seed)
    roles = {role: gr for role, gr in analysed_models(trunk, plan, seed).items() if role in ANALYSED}
    models = discover_models(results, list(roles))
    return {role: results / "sweeps" / grid / run / detections_file(VARIANTS[models[role].variant].default_mode)
            for role, (grid, run) in roles.items() if role in models and models[role].variant in VARIANTS}


def evaluated_image_ids(run: Path) -> list[int]:
    """The ids of the images eval recorded in a run's results folder (its evaluated_images.json), sorted."""
    return sorted(json.loads((Path(run) / EVALUATED_IMAGES_JSON).read_text())["image_ids"])


def evaluated_ground_truth(plan: StudyPlan, layout: Layout, run: Path, out: Path) -> Path:
    """The ground truth the detections files answer: the split's annotation file, or, where the plan evaluates its
    first ``eval_images`` only, that file cut to the images eval recorded in ``run`` (its evaluated_images.json),
    written to ``out``: the images never shown to a model are not its misses."""
    ann = split_paths(layout.data, plan.split)[1]
    if plan.eval_images is None:
        return ann
    ids = set(evaluated_image_ids(run))
    gt = json.loads(ann.read_text())
    cut = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
           "annotations": [an for an in gt["annotations"] if an["image_id"] in ids]}
    path = out / f"{ann.stem}_evaluated.json"
    atomic_write_text(path, json.dumps(cut))
    return path


def primary_extras(plan: StudyPlan, layout: Layout, primary: Path, device: str) -> None:
    """Figs. A.4-A.5's images, Fig. 5's architecture table, the heads' parameters and every figure, of the primary
    replicate (the first trunk's first seed)."""
    from dhanalysis.probes.architecture import write_architecture
    from dhanalysis.model.checkpoint import load_checkpoint

    trunk, seed = plan.replicates_of()[0]
    ext_ckpt = layout.runs(trunk, seed) / "fig8" / EXT_RUN / FINAL_CHECKPOINT
    ext_folder = primary / "double-head-ext"
    if ext_ckpt.exists():
        from dhanalysis.vocab import QUALITATIVE_IMAGES_CSV

        if not (ext_folder / QUALITATIVE_IMAGES_CSV).exists():
            from dhanalysis.probes.qualitative import disagreements, write_disagreements
            from dhanalysis.data.coco import CocoDataset

            dataset = CocoDataset(layout.data, plan.split)
            write_disagreements(*disagreements(load_checkpoint(ext_ckpt, map_location=device), dataset, device,
                                               max_images=plan.eval_images), ext_folder)
        write_architecture(load_checkpoint(ext_ckpt), ext_folder)
    write_table(head_parameters(plan, layout), layout.results / HEADS_CSV, parquet=False)
    render_figures(primary, layout.figures)


def render_dose_response(layout: Layout) -> Path | None:
    """The dose-response figure (`figures.study.dose_response`) from the study's ``dose_response.csv``, if any."""
    table = layout.results / DOSE_CSV
    if not table.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dhanalysis.figures.study import dose_response
    from dhanalysis.figures.style import save_figure

    fig = dose_response(pd.read_csv(table))
    path = save_figure(fig, layout.figures, "dose_response", formats=("png",))[0]
    plt.close(fig)
    return path


def head_parameters(plan: StudyPlan, layout: Layout) -> pd.DataFrame:
    """Every trained head's conv/fc weights (`model.params.branch_table`), one row per run and branch."""
    from dhanalysis.model.checkpoint import load_checkpoint
    from dhanalysis.model.params import branch_table

    trunk, seed = plan.replicates_of()[0]
    frames = []
    for grid, runs in head_runs(plan, trunk).items():
        for r in runs:
            ckpt = layout.runs(trunk, seed) / grid / r.name / FINAL_CHECKPOINT
            if ckpt.exists():
                model = load_checkpoint(ckpt)
                frames.append(branch_table(model).assign(grid=grid, run=r.name, variant=model.config.model.variant))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return table[["grid", "run", "variant", *[c for c in table.columns if c not in ("grid", "run", "variant")]]]


def render_figures(results: Path, figures: Path) -> list[Path]:
    """The paper's figures and tables that the results allow, as files (no window opens). The detections analyses'
    own figures read their folders under ``detections/`` (the detections notebook draws them), so this pass does
    not look for them in the replicate's folder and log them as missing."""
    import matplotlib

    matplotlib.use("Agg")
    from dhanalysis.figures.render import PAPER_FIGURES, TABLE_CAPTIONS, render_all

    return render_all(results, figures, only=[*PAPER_FIGURES, *TABLE_CAPTIONS])


def quality_checks(plan: StudyPlan, layout: Layout) -> dict:
    """The numbers a study's detectors must reach (detectors that learned), measured per trunk and seed."""
    checks: dict = {"split": plan.split, "trunks": {}, "replicates": {}}
    for trunk in plan.trunks:
        path = layout.trunk_results(trunk) / EVAL_CSV
        if path.is_file():
            row = pd.read_csv(path).iloc[0]
            checks["trunks"][trunk.name] = {"AP": round(float(row["AP"]), 4), "AP50": round(float(row["AP50"]), 4)}
    for trunk, seed in plan.replicates_of():
        replicate = layout.replicate(trunk, seed)
        checks["replicates"][replicate.name] = {**replicate_checks(layout.replicate_results(trunk, seed)),
                                                **replicate.fields()}
    return checks
