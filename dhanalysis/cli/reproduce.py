"""The CPU-scale reproduction of the paper on the synthetic dataset: trained detectors, every analysis, the claims.

  dhanalysis reproduce                          # the whole study (~2 h on two cores), resumable
  dhanalysis reproduce --ship docs/reproduction # ... then copy its small results there (tables, figures, findings)
  dhanalysis reproduce --tiny                   # a minutes-long version with tiny models (what the tests run)

Protocol (every result says which): one detector (Single-FC, ResNet-18-FPN from the crop-pretrained ResNet-18) is
trained end to end — the paper's protocol, 'end-to-end' — and its backbone, FPN and RPN become the shared, frozen
trunk on which every head variant is trained from scratch — 'shared-trunk' (dhanalysis/engine/trunk.py): the
variants see the same features and proposals, which isolates the heads, the paper's question.

Steps, each skipped when its output exists (rerun the same command after an interruption):
  1. synthetic dataset            data/synth
  2. backbone pretraining         checkpoints/reproduction/resnet18-synth.pth
  3. the trunk, end to end        checkpoints/reproduction/trunk
  4. Table 1's ten runs and Fig. 8's λ grid on the trunk      checkpoints/reproduction/{table1,fig8}/<run>
  5. COCO AP of every run in every mode                       results/reproduction/sweeps/{table1,fig8,table3}
  6. sliding-window, PCC and spatial correlation of the models §3, Figs. 6-7 and A.3 analyse: Single-FC,
     Single-Conv, Double-FC and Double-Conv (weight 1.0, Table 1's middle group) and Double-Head-Ext
     (λ 0.7 / 0.8)                                            results/reproduction/<model>
  7. the images where Double-Head-Ext's heads disagree (Figs. A.4, A.5)   results/reproduction/double-head-ext
  8. figures and tables                                       figures/reproduction
  9. findings, claim by claim with 95% bootstrap intervals    results/reproduction/findings.{csv,md}
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dhanalysis.folders import atomic_write_text
from dhanalysis.vocab import (ARCHITECTURE_CSV, CONFIG_JSON, EVAL_CSV, FINDINGS_CSV, FINDINGS_MD, PCC_CSV,
                              PCC_STATS_CSV, PCC_SUMMARY_JSON, PER_CLASS_AP_CSV, QUALITATIVE_CSV,
                              QUALITATIVE_IMAGES_CSV, SLIDING_WINDOW_STATS_CSV, SLIDING_WINDOW_SUMMARY_JSON,
                              SPATIAL_CORR_NPZ, SPATIAL_SUMMARY_JSON, SWEEP_RESULTS_CSV)


@dataclass(frozen=True)
class StudyPlan:
    """Sizes of one reproduction."""

    data: dict
    pretrain: dict
    trunk: tuple[str, ...]  # overrides of configs/synth/single-fc.yaml for the end-to-end trunk
    heads: tuple[str, ...]  # overrides of every head run on the trunk
    lambda_fc: tuple[float, ...]
    lambda_conv: tuple[float, ...]
    proposals_per_gt: int
    analysis_images: int | None
    eval_images: int | None
    replicates: int
    model: tuple[str, ...] = ()  # overrides of every model, trunk included (the tiny plans shrink them)
    table1: tuple[str, ...] | None = None  # Table 1 runs to train (None: all ten)
    fig8_pairs: tuple[tuple[float, float], ...] | None = None  # (λ_fc, λ_conv) pairs to train (None: the whole grid)
    data_dir: str = "synth"  # data/<data_dir> under the work folder


FULL = StudyPlan(
    data={"num_train": 600, "num_val": 100, "image_size": 320},
    pretrain={"iterations": 600, "crop_size": 48},
    trunk=("train.iterations=1500", "train.steps=[1100,1400]", "train.warmup_iters=50", "train.checkpoint_period=100",
           "train.log_period=20", "train.clip_grad_norm=10"),
    heads=("train.iterations=1200", "train.lr=0.02", "train.steps=[900,1120]", "train.warmup_iters=50",
           "train.checkpoint_period=200", "train.log_period=50", "train.clip_grad_norm=10", "data.num_workers=0"),
    lambda_fc=(0.5, 0.7, 1.0),
    lambda_conv=(0.5, 0.8, 1.0),
    proposals_per_gt=2000,
    analysis_images=100,
    eval_images=None,
    replicates=1000,
)
# the tiny study also shrinks the models (every run, trunk included, so the trunk fits the heads)
TINY_MODEL = ("model.min_size=96", "model.max_size=96", "model.backbone.fpn_channels=16", "model.head.fc_dim=32",
              "model.head.conv_dim=32", "model.head.bottleneck_dim=8", "model.head.non_local_dim=16",
              "model.head.num_blocks=3",
              "model.rpn.pre_nms_top_n_test=50", "model.rpn.post_nms_top_n_test=30",
              "model.rpn.pre_nms_top_n_train=60", "model.rpn.post_nms_top_n_train=40",
              "model.box_batch_size_per_image=32")

TINY = StudyPlan(
    data={"num_train": 16, "num_val": 4, "image_size": 96},
    pretrain={"iterations": 4, "crop_size": 32, "batch_size": 16},
    trunk=("train.iterations=6", "train.steps=[5]", "train.warmup_iters=2", "train.checkpoint_period=3",
           "train.ims_per_batch=2", "train.log_period=2", "data.num_workers=0"),
    heads=("train.iterations=4", "train.steps=[3]", "train.warmup_iters=1", "train.checkpoint_period=2",
           "train.ims_per_batch=2", "train.log_period=2", "data.num_workers=0"),
    lambda_fc=(0.7, 1.0),
    lambda_conv=(0.8, 1.0),
    proposals_per_gt=200,
    analysis_images=4,
    eval_images=None,
    replicates=50,
    model=TINY_MODEL,
    data_dir="synth-tiny",
)
# analysed model -> (grid, run) it is; names as `dhanalysis.analysis.findings` expects them
ANALYSED = {"single-fc": ("table1", "single-fc-w1"), "single-conv": ("table1", "single-conv-w1"),
            "double-fc": ("table1", "double-fc-w1"), "double-conv": ("table1", "double-conv-w1"),
            "double-head-ext": ("fig8", "lfc0.7-lconv0.8")}
EXT_RUN, VANILLA_RUN = "lfc0.7-lconv0.8", "lfc1-lconv1"
PROTOCOL = "shared-trunk"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=".", help="where data/, checkpoints/, results/ and figures/ go")
    parser.add_argument("--tiny", action="store_true", help="tiny data and models: the whole pipeline in minutes")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--ship", metavar="DIR", help="afterwards, copy the small results (tables, figures, findings) "
                        "to DIR, e.g. docs/reproduction")
    parser.add_argument("--replicates", type=int, help="bootstrap replicates of the findings (default 1000)")


class _Steps:
    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def __call__(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total} {(time.perf_counter() - self.start) / 60:5.1f} min] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    plan = TINY if args.tiny else FULL
    tag = "reproduction-tiny" if args.tiny else "reproduction"
    outcome = run_study(plan, Path(args.workdir), tag, args.device, args.replicates or plan.replicates)
    print_summary(outcome)
    if args.ship:
        ship(outcome.results, outcome.figures, Path(args.ship))
    return 0


@dataclass
class Outcome:
    """Where a study wrote its results and what it found."""

    results: Path
    figures: Path
    findings: object  # the findings table (pandas DataFrame)
    checks: dict
    seconds: float


def run_study(plan: StudyPlan, work: Path, tag: str, device: str | None = None,
              replicates: int | None = None) -> Outcome:
    """Every step of a study of size ``plan`` under ``work`` (outputs tagged ``tag``), skipping finished ones."""
    from dhanalysis.analysis.groups import load_difficulty
    from dhanalysis.analysis.pcc import compute_pcc
    from dhanalysis.analysis.runner import RunOptions, load_models
    from dhanalysis.analysis.spatial import compute_spatial_corr
    from dhanalysis.config import load_config, preset_path
    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.data.synth import make_synth_dataset
    from dhanalysis.engine.distributed import resolve_device
    from dhanalysis.engine.evaluate import evaluate
    from dhanalysis.engine.pretrain import pretrain_backbone
    from dhanalysis.engine.sweep import fig8_runs, run_sweep, table1_runs, table3_runs, write_index
    from dhanalysis.engine.train import FINAL, train
    from dhanalysis.model.checkpoint import load_checkpoint

    replicates = replicates or plan.replicates
    work = Path(work)
    data_root = work / "data" / plan.data_dir
    ckpts, results, figures = work / "checkpoints" / tag, work / "results" / tag, work / "figures" / tag
    sweeps = results / "sweeps"
    table1 = [r for r in table1_runs() if plan.table1 is None or r.name in plan.table1]
    fig8 = [r for r in fig8_runs(plan.lambda_fc, plan.lambda_conv)
            if plan.fig8_pairs is None or (r.meta["lambda_fc"], r.meta["lambda_conv"]) in plan.fig8_pairs]
    grids = {"table1": table1, "fig8": fig8}
    trained = {r.name: ckpts / grid / r.name / FINAL for grid, rs in grids.items() for r in rs}
    device = str(resolve_device(device))
    step = _Steps(8 + len(trained) + len(ANALYSED))
    started = time.perf_counter()

    step(f"synthetic dataset -> {data_root}")
    make_synth_dataset(data_root, **plan.data)
    backbone = ckpts / "resnet18-synth.pth"
    step(f"pretrain the ResNet-18 on box crops (the local stand-in for ImageNet weights) -> {backbone}")
    if not backbone.exists():
        pretrain_backbone(data_root, "train", backbone, progress=True, **plan.pretrain)

    common = [f"data.root={data_root}", *plan.model]
    step(f"the trunk: Single-FC trained end to end (the paper's protocol) -> {ckpts / 'trunk'}")
    trunk_cfg = load_config(preset_path("synth/single-fc.yaml"), [*plan.trunk, *common, "name=trunk",
                                                                   f"model.backbone.weights={backbone}"])
    trunk = train(trunk_cfg, ckpts / "trunk", resume=True, device=device)
    dataset = CocoDataset(data_root, "val")
    out = results / "trunk-end-to-end"
    step(f"COCO AP of the trunk in every mode -> {out / EVAL_CSV}")
    if not (out / EVAL_CSV).exists():
        evaluate(load_checkpoint(trunk, map_location=device), dataset, None, device, max_images=plan.eval_images,
                 out=out, name="trunk", progress=False)

    # every head run trains on the frozen trunk, then is evaluated in every mode (the sweeps of engine/sweep.py)
    heads = [*plan.heads, *common, "model.backbone.weights=null", f"train.init_from={trunk}",
             "train.freeze=[backbone, rpn]"]
    for grid, rs in grids.items():
        run_sweep(grid, preset_path("synth/double-head-ext.yaml"), sweeps / grid, heads, device,
                  max_images=plan.eval_images, runs=rs, checkpoints=ckpts / grid, eval_progress=False, log=step)
    table3 = sweeps / "table3" / "fusion"
    table3.mkdir(parents=True, exist_ok=True)
    for f in (EVAL_CSV, PER_CLASS_AP_CSV):
        shutil.copyfile(sweeps / "fig8" / EXT_RUN / f, table3 / f)
    write_index(table3_runs(), "table3", sweeps / "table3")

    reference = sweeps / "table1" / "single-fc-w1" / PER_CLASS_AP_CSV
    difficulty = load_difficulty(reference)
    options = RunOptions(chunk_size=1, progress=False)  # one image per chunk: the findings bootstrap over images
    for name, (grid, run_name) in ANALYSED.items():
        folder = results / name
        step(f"sliding-window, PCC and spatial correlation of {name} ({grid}/{run_name}) -> {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        for f in (EVAL_CSV, PER_CLASS_AP_CSV):
            shutil.copyfile(sweeps / grid / run_name / f, folder / f)
        if (folder / PCC_CSV).exists() and (folder / SPATIAL_CORR_NPZ).exists():
            continue
        for model_run in load_models([trained[run_name]], out=folder, max_images=plan.analysis_images,
                                     device=device):
            if not (folder / PCC_CSV).exists():
                compute_pcc(model_run, proposals_per_gt=plan.proposals_per_gt, difficulty=difficulty,
                            difficulty_from=str(reference), options=options)
            if not (folder / SPATIAL_CORR_NPZ).exists():
                compute_spatial_corr(model_run, options=options)

    ext_folder = results / "double-head-ext"
    step(f"where the heads disagree (Figs. A.4, A.5) -> {ext_folder / QUALITATIVE_CSV}")
    if not (ext_folder / QUALITATIVE_IMAGES_CSV).exists():
        from dhanalysis.analysis.qualitative import disagreements, write_disagreements

        ext = load_checkpoint(trained[EXT_RUN], map_location=device)
        write_disagreements(*disagreements(ext, dataset, device, max_images=plan.eval_images), ext_folder)

    step(f"figures and tables -> {figures}")
    from dhanalysis.analysis.architecture import write_architecture

    write_architecture(load_checkpoint(trained[EXT_RUN]), results / "double-head-ext")
    render_figures(results, figures)

    step(f"findings, claim by claim ({replicates} bootstrap replicates over images) -> {results / FINDINGS_MD}")
    frame = compute_findings(results, dataset, replicates, plan.eval_images)
    from dhanalysis.analysis.findings import write_findings

    seconds = time.perf_counter() - started
    write_findings(frame, results, header=findings_header(plan, tag))
    checks = quality_checks(results)
    summary = {"protocol": PROTOCOL, "study": tag, "minutes_this_call": seconds / 60, "checks": checks,
               "plan": {k: v for k, v in plan.__dict__.items()}}
    atomic_write_text(results / "reproduction_summary.json", json.dumps(summary, indent=2, default=list))
    step("summary")
    return Outcome(results, figures, frame, checks, seconds)


def render_figures(results: Path, figures: Path) -> list[Path]:
    """Every figure and table the study's results allow, as files (no window opens)."""
    import matplotlib

    matplotlib.use("Agg")
    from dhanalysis.figures.render import render_all

    return render_all(results, figures)


def findings_header(plan: StudyPlan, tag: str) -> str:
    return (f"# Findings of the CPU-scale reproduction ({tag})\n\n"
            f"Synthetic dataset ({plan.data['num_train']} training / {plan.data['num_val']} validation images, "
            f"{plan.data['image_size']} px). Protocol: {PROTOCOL} — every head trained from scratch on the frozen "
            "backbone, FPN and RPN of one end-to-end Single-FC. Differences are signed so that the paper's claim is "
            "> 0; AP differences in AP points. 95% intervals: bootstrap over validation images (paired). "
            "'holds' = the interval is above 0, 'contradicted' = below 0, else 'inconclusive'.\n")


def compute_findings(results: Path, dataset, replicates: int, eval_images: int | None = None):
    """findings.csv's table from the study's result folders."""
    import pandas as pd

    from dhanalysis.analysis.findings import (ANALYSIS_MODELS, Study, analysis_claims, ap_claims, ap_scale_rows,
                                              fig8_peak, findings_table, load_image_sums, load_matches)

    sums = {}
    for name in ANALYSIS_MODELS:
        if (results / name).is_dir():
            sums[name] = load_image_sums(results / name, dataset.num_classes)
    matches = {}
    for grid_dir in sorted((results / "sweeps").glob("*")):
        if grid_dir.name == "table3":
            continue
        for run_dir in sorted(p for p in grid_dir.iterdir() if (p / EVAL_CSV).is_file()):
            evals = pd.read_csv(run_dir / EVAL_CSV)
            ids = [int(i) for i in dataset.ids[:eval_images]]  # evaluate() takes the first N images
            for mode, m in load_matches(dataset.coco, run_dir, list(evals["mode"]), ids).items():
                matches[(run_dir.name, mode)] = m
    study = Study(sums, matches, PROTOCOL, replicates)
    rows = analysis_claims(study) + ap_scale_rows(ap_claims(study, EXT_RUN, VANILLA_RUN))
    fig8 = results / "sweeps" / "fig8" / SWEEP_RESULTS_CSV
    if fig8.is_file():
        rows.append(fig8_peak(pd.read_csv(fig8), PROTOCOL))
    return findings_table(rows)


def quality_checks(results: Path) -> dict:
    """The numbers the reproduction must reach (issue: detectors that learned), measured."""
    import pandas as pd

    from dhanalysis.analysis.stats import bin_summary

    checks: dict = {}
    t1 = results / "sweeps" / "table1" / SWEEP_RESULTS_CSV
    if t1.is_file():
        table = pd.read_csv(t1)
        from dhanalysis.analysis.findings import DEFAULT_MODES

        own = table[[m == DEFAULT_MODES[v] for m, v in zip(table["mode"], table["variant"])]]
        checks["default_mode_AP50"] = {r.run: round(float(r.AP50), 4) for r in own.itertuples()}
        sfc = own[own["run"] == "single-fc-w1"]
        if len(sfc):
            checks["single_fc"] = {"AP": round(float(sfc["AP"].iloc[0]), 4), "AP50": round(float(sfc["AP50"].iloc[0]),
                                                                                           4)}
    trunk = results / "trunk-end-to-end" / EVAL_CSV
    if trunk.is_file():
        row = pd.read_csv(trunk).iloc[0]
        checks["trunk_end_to_end"] = {"AP": round(float(row["AP"]), 4), "AP50": round(float(row["AP50"]), 4)}
    scores = {}
    for stats in sorted(results.glob(f"*/{SLIDING_WINDOW_STATS_CSV}")):
        s = bin_summary(pd.read_csv(stats), ["model", "head"])
        for (model, head), part in s.groupby(["model", "head"]):
            part = part.dropna(subset=["score_mean"])
            if part.empty:
                continue
            w = part["n"]

            def mean(mask):
                return float((part.loc[mask, "score_mean"] * w[mask]).sum() / w[mask].sum()) if w[mask].sum() else None

            scores[f"{stats.parent.name}/{head}"] = {"iou>=0.9": mean(part["iou_lo"] >= 0.9 - 1e-9),
                                                     "iou<0.3": mean(part["iou_hi"] <= 0.3 + 1e-9)}
    checks["gt_class_score"] = scores
    return checks


def print_summary(outcome: Outcome) -> None:
    results, figures, frame, checks = outcome.results, outcome.figures, outcome.findings, outcome.checks
    print(f"\nstudy finished ({outcome.seconds / 60:.1f} min in this call)")
    print(f"  results: {results}\n  figures: {figures}\n  findings: {results / FINDINGS_MD}")
    if "trunk_end_to_end" in checks:
        print(f"  trunk (Single-FC, end to end): AP {checks['trunk_end_to_end']['AP']:.3f}, AP50 "
              f"{checks['trunk_end_to_end']['AP50']:.3f}")
    if "single_fc" in checks:
        print(f"  Single-FC (shared trunk): AP {checks['single_fc']['AP']:.3f}, AP50 {checks['single_fc']['AP50']:.3f}")
    for run, ap50 in checks.get("default_mode_AP50", {}).items():
        print(f"  {run:24s} AP50 {ap50:.3f}")
    for key, s in checks.get("gt_class_score", {}).items():
        hi, lo = s["iou>=0.9"], s["iou<0.3"]
        print(f"  {key:24s} mean score: IoU >= 0.9 {hi if hi is None else round(hi, 3)}, IoU < 0.3 "
              f"{lo if lo is None else round(lo, 3)}")
    print("\nfindings:")
    for r in frame.itertuples():
        ours = f"{r.ours:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if r.ci_low == r.ci_low else f"{r.ours}"
        print(f"  {r.claim:44s} {ours:34s} {r.verdict}")


SHIPPED_TABLES = (EVAL_CSV, PCC_CSV, SLIDING_WINDOW_STATS_CSV, SPATIAL_CORR_NPZ, SLIDING_WINDOW_SUMMARY_JSON,
                  PCC_SUMMARY_JSON, SPATIAL_SUMMARY_JSON, CONFIG_JSON, PER_CLASS_AP_CSV, PCC_STATS_CSV,
                  ARCHITECTURE_CSV)


def ship(results: Path, figures: Path, dest: Path) -> None:
    """Copy what a reader needs (tables, findings, PNG figures; no checkpoints, chunks or detections) to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    work = results.resolve().parents[1]
    for f in (FINDINGS_CSV, FINDINGS_MD, "reproduction_summary.json"):
        if (results / f).is_file():
            copy_portable(results / f, dest / f, work)
    for folder in sorted(p for p in results.iterdir() if p.is_dir() and p.name != "sweeps"):
        for f in SHIPPED_TABLES:
            if (folder / f).is_file():
                (dest / folder.name).mkdir(exist_ok=True)
                copy_portable(folder / f, dest / folder.name / f, work)
    for index in sorted((results / "sweeps").glob("*/*.csv")):
        target = dest / "sweeps" / index.parent.name
        target.mkdir(parents=True, exist_ok=True)
        copy_portable(index, target / index.name, work)
    (dest / "figures").mkdir(exist_ok=True)
    for png in sorted(figures.glob("*.png")):
        if png.stat().st_size > 2**20:  # the photographic Figs. A.4-A.5: a 256-colour palette keeps them small
            from PIL import Image

            with Image.open(png) as im:
                im.convert("RGB").quantize(256).save(dest / "figures" / png.name, optimize=True)
        else:
            shutil.copyfile(png, dest / "figures" / png.name)
    for md in sorted(figures.glob("*.md")):
        shutil.copyfile(md, dest / "figures" / md.name)
    (dest / "README.md").write_text(shipped_readme(results, dest))
    print(f"shipped the results to {dest}")


def copy_portable(src: Path, dst: Path, work: Path) -> None:
    """Copy ``src``; in JSON records and CSV tables, paths inside the study's work folder become relative to it, so
    the shipped provenance (data root, checkpoints, run folders) reads the same on every machine."""
    if src.suffix not in (".json", ".csv"):
        shutil.copyfile(src, dst)
        return
    atomic_write_text(dst, src.read_text().replace(f"{work}/", ""))


def shipped_readme(results: Path, dest: Path) -> str:
    """The index page of the shipped results: how they were made, the checks, the findings, the figures."""
    summary = json.loads((results / "reproduction_summary.json").read_text())
    checks = summary.get("checks", {})
    lines = ["# The CPU-scale reproduction, as shipped", "",
             "Regenerate everything here with `dhanalysis reproduce --ship docs/reproduction` (from nothing: data, "
             "pretraining and every model; resumable). Protocol: **shared-trunk** — one Single-FC trained end to "
             "end (the paper's protocol), then every head variant trained from scratch on its frozen backbone, FPN "
             "and RPN. Model folders hold the result tables of the analysed models; `sweeps/` the AP tables of "
             "every run (Table 1, Fig. 8's λ grid, Table 3); `figures/` the paper's figures drawn from them.", ""]
    if "single_fc" in checks:
        lines += [f"Single-FC (shared trunk): box AP {checks['single_fc']['AP']:.3f}, AP50 "
                  f"{checks['single_fc']['AP50']:.3f} on the validation split.", ""]
    if "trunk_end_to_end" in checks:
        lines += [f"The trunk's own Single-FC (end to end, the paper's protocol): box AP "
                  f"{checks['trunk_end_to_end']['AP']:.3f}, AP50 {checks['trunk_end_to_end']['AP50']:.3f}.", ""]
    if checks.get("default_mode_AP50"):
        lines += ["| run | AP50 (default mode) |", "|---|---|"]
        lines += [f"| {run} | {ap50:.3f} |" for run, ap50 in checks["default_mode_AP50"].items()]
        lines.append("")
    if checks.get("gt_class_score"):
        lines += ["Mean ground-truth-class score of the sliding windows:", "",
                  "| model / head | IoU ≥ 0.9 | IoU < 0.3 |", "|---|---|---|"]
        for key, v in checks["gt_class_score"].items():
            hi, lo = v.get("iou>=0.9"), v.get("iou<0.3")
            lines.append(f"| {key} | {'–' if hi is None else f'{hi:.3f}'} | {'–' if lo is None else f'{lo:.3f}'} |")
        lines.append("")
    findings = dest / FINDINGS_MD
    if findings.is_file():
        lines += [findings.read_text(), ""]
    figures = sorted((dest / "figures").glob("*.png"))
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    return "\n".join(lines) + "\n"
