"""The study's regime, chosen and measured on ``val`` (never the split the claims are measured on).

The paper compares heads in a regime where the fc-head is the better recogniser (Single-FC 36.8 AP against
Single-Conv 35.9) and fc6 reduces its input 12× (12544 → 1024). A fc-vs-conv verdict measured where the conv-head
recognises better instead is confounded with recognition strength, and a schedule that has not converged compares
heads at different points of their learning. This module measures both, on the frozen trunk the heads share:

- **convergence**: each compared variant trained at the plan's schedule and at longer ones; a schedule is converged
  for a variant when its AP is within `CONVERGED_WITHIN` points of the longest schedule's;
- **recognition strength by fc width**: Single-FC at several fc6 widths (the reduction 3136 → width) against
  Single-Conv, so the Single-FC − Single-Conv AP gap is a function of the width; the §3.2 differences measured
  against that gap are the study's dose-response.

All runs of one schedule train together on the trunk (one RoI sampling and pooling per iteration for every head:
`engine.train.train_together`), one seed, evaluated on ``val``. Outputs: ``regime.csv`` (one row per run and
schedule), ``regime_convergence.csv`` and ``regime_gaps.csv``, derived from it.

Each difference in those tables carries its standard error over the val images (``*_se_images``): every run's AP on
the same bootstrap draws of the images, so a difference's replicates are paired. With one seed this is the image part
of the noise only, a lower bound on the whole: a schedule whose AP is 0.5 points from the longest one's may still be
converged when that standard error is 1 point, and the 0.3-point verdict is printed beside it, not replaced by it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dhanalysis.study.plan import FULL, StudyPlan, Trunk

CONVERGED_WITHIN = 0.3  # AP points: a schedule within this of the longest one's AP has converged
NOISE_REPLICATES = 500  # image draws behind the tables' standard errors (a standard error's own spread: ~3 %)
REGIME_CSV, CONVERGENCE_CSV, GAPS_CSV = "regime.csv", "regime_convergence.csv", "regime_gaps.csv"


@dataclass(frozen=True)
class RegimePlan:
    """What the regime pilot trains: Single-FC at each of ``fc_dims`` and Single-Conv, at each of ``schedules``
    (head iterations; learning-rate steps at the same fractions as the plan's), with one ``seed``, on ``trunk``."""

    fc_dims: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    schedules: tuple[int, ...] = (1200, 1600, 2400, 3600, 4800, 5400, 7200)
    seed: int = 0
    trunk: str = "single-fc"
    split: str = "val"
    # the study's other Table 1 runs (with the plan's head settings), each at these schedules: their convergence
    variants: tuple[str, ...] = ()
    variant_schedules: tuple[int, ...] = ()
    # what the runs are evaluated on: None, the study's val split; N, that split extended to N images (the same
    # generator and seed draw a val image from its index alone, so the first images are the study's val images, byte
    # for byte, and the rest are new), written to data/<data_dir>-val<N>. On 100 images the standard error of one
    # run's difference between schedules is 0.5-0.85 AP points: the 0.3-point rule needs about ten times the images
    val_images: int | None = None

    def describe(self) -> str:
        """What the pilot trains, in words and its own numbers (the command's help is built from it, so the help
        cannot drift from the plan)."""
        parts = []
        if self.fc_dims:
            parts.append(f"Single-FC at fc widths {_listed(self.fc_dims, '')} and Single-Conv at "
                         f"{_listed(self.schedules)} head iterations")
        if self.variants:
            parts.append(f"{_listed(self.variants, '')} at {_listed(self.variant_schedules)}")
        on = self.split if self.val_images is None else f"{self.split} extended to {self.val_images:,} images"
        return "; ".join(parts) + f" (seed {self.seed}, the {self.trunk} trunk, on {on})"

    def results(self, layout) -> Path:
        """The pilot's results folder: ``results/<study>/regime`` on the study's val split, ``regime-val<N>`` on
        the extended one (its own tables: AP on other images is another measurement)."""
        return layout.results / ("regime" if self.val_images is None else f"regime-val{self.val_images}")


def _listed(values: tuple, spec: str = ",") -> str:
    """``(a, b, c)`` as "a, b and c", each formatted with ``spec`` (default: thousands separators)."""
    words = [format(v, spec) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


REGIME = RegimePlan()
# every other variant of Table 1's weight-1.0 group at 3,600 (the earlier schedule), 5,400 and 7,200 head iterations:
# at 3,600 none was within 0.3 AP of 5,400 (Double-Conv +1.9), so the check goes one schedule longer (the conv-heads
# dominate its cost: about a seed's head phase 3.5 times)
VARIANTS_REGIME = RegimePlan(fc_dims=(), schedules=(), variants=("double-fc-w1", "double-conv-w1",
                                                                  "double-head-reverse-w1", "double-head-w1"),
                             variant_schedules=(3600, 5400, 7200))
# the schedule check of every compared run at once, the runs of one schedule trained together (one RoI sampling and
# pooling for all), at the study's fc widths: 5,400 against 7,200 chose the study's 7,200 on an earlier trunk
# (docs/reproduce.md); on the study's trunk 9,600 checks 7,200, whose runs are the study's first seed's own
ALL_SCHEDULES = (7200, 9600)
ALL_REGIME = replace(REGIME, fc_dims=tuple(sorted({*FULL.fc_widths, FULL.fc_width})), schedules=ALL_SCHEDULES,
                     variants=VARIANTS_REGIME.variants, variant_schedules=ALL_SCHEDULES, val_images=1000)
TINY_REGIME = RegimePlan(fc_dims=(16, 32), schedules=(3, 4), variants=("double-conv-w1",), variant_schedules=(4,),
                         val_images=6)
REGIMES = {"widths": REGIME, "variants": VARIANTS_REGIME, "all": ALL_REGIME}


def schedule_values(plan: StudyPlan, iterations: int) -> dict:
    """The plan's head schedule stretched to ``iterations``: the LR steps keep their fractions of the schedule and
    checkpoints keep their count."""
    base = int(plan.heads["train.iterations"])
    steps = [max(1, min(iterations - 1, round(s * iterations / base))) for s in plan.heads.get("train.steps", [])]
    period = max(1, round(int(plan.heads.get("train.checkpoint_period", base)) * iterations / base))
    return {**plan.heads, "train.iterations": iterations, "train.steps": sorted(set(steps)),
            "train.checkpoint_period": period}


def regime_runs(regime: RegimePlan, iterations: int | None = None,
                lead: int | None = None) -> list[tuple[str, dict, dict]]:
    """(run name, overrides, Table 1 run's own overrides; both ``{dotted.key: value}``) of every run schedule
    ``iterations`` trains (None: the widths' schedules): Single-FC per fc width and Single-Conv, then the other
    variants with the plan's heads.

    Single-FC at width ``lead`` (the study's own fc width) comes first. Runs trained together take their RoI
    sampling from the first model's random stream (`engine.train.train_together`), and the study's first run is
    Single-FC at its width, so with this lead a regime run at the study's schedule and seed replays the study's run
    of the same values, and a longer schedule sees the same RoIs: its difference from the study's schedule is
    paired in the sampling too."""
    from dhanalysis.engine.sweep import table1_runs

    runs: list[tuple[str, dict, dict]] = []
    if iterations is None or iterations in regime.schedules:
        single = {"model.loss.w_fc": 1.0, "model.loss.w_conv": 1.0, "model.loss.lambda_fc": 1.0,
                  "model.loss.lambda_conv": 1.0, "model.head.non_local": False}
        widths = sorted(regime.fc_dims, key=lambda d: d != lead)  # stable: the others keep their order
        runs += [(f"single-fc-d{d}", {**single, "model.variant": "single-fc", "model.head.fc_dim": d}, {})
                 for d in widths]
        runs.append(("single-conv", {**single, "model.variant": "single-conv"}, {}))
    if iterations is not None and iterations in regime.variant_schedules:
        table1 = {r.name: r for r in table1_runs()}
        runs += [(name, {"model.variant": table1[name].meta["variant"]}, dict(table1[name].overrides))
                 for name in regime.variants]
    return runs


def run_regime(plan: StudyPlan, layout, regime: RegimePlan = REGIME, device: str = "cpu") -> pd.DataFrame:
    """Train and evaluate every regime run (resuming finished ones), write the three tables under
    ``regime.results(layout)`` and return ``regime.csv``'s frame."""
    from dhanalysis.engine.train import train_together
    from dhanalysis.errors import DHError
    from dhanalysis.folders import write_table
    from dhanalysis.study.runner import Steps, evaluate_runs, evaluated_image_ids, prepare_data, train_trunk
    from dhanalysis.vocab import DEFAULT_MODES, FINAL_CHECKPOINT, VARIANTS, split_paths

    trunk = next((t for t in plan.trunks if t.name == regime.trunk), None)
    if trunk is None:
        raise DHError(f"the plan has no trunk '{regime.trunk}'; its trunks: {', '.join(t.name for t in plan.trunks)}")
    step = Steps(4)
    prepare_data(plan, layout, step)  # each step skips what is already there: the study's data and trunk are reused
    trunk_ckpt = train_trunk(plan, layout, trunk, device, step)
    on_split = replace(plan, split=regime.split)
    measured = validation_layout(plan, layout, regime)
    out = regime.results(layout)
    rows = []
    for iterations in sorted({*regime.schedules, *regime.variant_schedules}):
        runs = regime_configs(plan, layout, regime, iterations, trunk_ckpt)
        ckpts = layout.checkpoints / "regime" / f"it{iterations}"
        results = out / f"it{iterations}"
        reuse_study_runs(plan, layout, trunk, regime.seed, runs, ckpts)
        todo = [(name, cfg) for name, _, cfg in runs if not (ckpts / name / FINAL_CHECKPOINT).exists()]
        if todo:
            train_together([cfg for _, cfg in todo], [ckpts / name for name, _ in todo], resume=True, device=device)
        evaluate_runs(on_split, measured, [(ckpts / name / FINAL_CHECKPOINT, results / name, name, None)
                                         for name, _, _ in runs], device)
        for name, o, cfg in runs:
            ev = pd.read_csv(results / name / "eval.csv")
            mode = DEFAULT_MODES[o["model.variant"]]
            ev = ev[ev["mode"] == mode].iloc[0] if (ev["mode"] == mode).any() else ev.iloc[0]
            has_fc = "fc" in VARIANTS[o["model.variant"]].head_types
            rows.append({"trunk": trunk.name, "run": name, "variant": o["model.variant"],
                         "fc_dim": cfg.model.head.fc_dim if has_fc else None,  # none: no fc-head
                         "iterations": iterations, "split": regime.split,
                         "images": len(evaluated_image_ids(results / name)), "seed": regime.seed,
                         "mode": str(ev["mode"]), "AP": float(ev["AP"]), "AP50": float(ev["AP50"])})
    frame = pd.DataFrame(rows).astype({"fc_dim": "Int64"})
    frame = with_earlier_rows(frame, out / REGIME_CSV)
    convergence, gaps = regime_tables(frame, ap_replicates(frame, out, split_paths(measured.data, regime.split)[1]))
    write_table(frame, out / Path(REGIME_CSV).stem, parquet=False)
    write_table(convergence, out / Path(CONVERGENCE_CSV).stem, parquet=False)
    write_table(gaps, out / Path(GAPS_CSV).stem, parquet=False)
    return frame


def regime_configs(plan: StudyPlan, layout, regime: RegimePlan, iterations: int, trunk_ckpt: Path) -> list[tuple]:
    """(run name, overrides, config) of every run schedule ``iterations`` trains, in `regime_runs`' order (the
    lead first): the plan's heads stretched to the schedule, on the frozen trunk ``trunk_ckpt``, seed
    ``regime.seed``."""
    from dhanalysis.config import load_config, preset_path
    from dhanalysis.study.runner import common_values, run_values

    values = {**schedule_values(plan, iterations), **common_values(plan, layout), "model.backbone.weights": None,
              "train.init_from": str(trunk_ckpt), "train.freeze": ["backbone", "rpn"], "train.seed": regime.seed}
    return [(name, o, load_config(preset_path("synth/double-head-ext.yaml"),
                                  values={**run_values(values, own), **o, "name": name}))
            for name, o, own in regime_runs(regime, iterations, plan.fc_width)]


def reuse_study_runs(plan: StudyPlan, layout, trunk: Trunk, seed: int, runs: list[tuple], ckpts: Path) -> list[str]:
    """Where the study has trained, on ``trunk`` with ``seed``, every run of ``runs`` (`regime_configs`) that
    ``ckpts`` lacks, link them instead of training them again; returns the names linked.

    A regime run is the study's run when both have the same values but the name (the study's schedule, seed and
    trunk among them) and both groups have the same lead: the first model drives the RoI sampling of every model
    trained with it (`regime_runs`), so then the two compute the same bits. All or none: a run trained beside linked
    ones would be led by another model, drawing other RoIs than the runs it is compared with. ``ckpts/<run>/`` gets
    a relative link to the study's final checkpoint, so the work folder can move."""
    import os

    from dhanalysis.study.plan import head_runs
    from dhanalysis.vocab import FINAL_CHECKPOINT

    if not runs or seed not in plan.all_seeds:
        return []
    folder = layout.runs(trunk, seed)
    study = [folder / grid / r.name for grid, rs in head_runs(plan, trunk, seed).items() for r in rs]
    done = {_values(p / "config.yaml"): p for p in study if (p / FINAL_CHECKPOINT).is_file()}
    if not study or done.get(_values(runs[0][2])) != study[0]:  # another lead: other RoIs, other runs
        return []
    missing = {name: done.get(_values(cfg)) for name, _, cfg in runs if not (ckpts / name / FINAL_CHECKPOINT).exists()}
    if None in missing.values():
        return []
    for name, source in missing.items():
        link = ckpts / name / FINAL_CHECKPOINT
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(source / FINAL_CHECKPOINT, link.parent))
        print(f"{link.parent}: the study's run {source} (the same values and RoIs), linked")
    return list(missing)


def _values(cfg) -> str:
    """A config (or its saved config.yaml) as canonical YAML without its name and class count: equal for two runs of
    one recipe (a config's class count 0 means its dataset's, which training records; the data is compared)."""
    import yaml

    from dhanalysis.config import config_to_dict

    d = yaml.safe_load(cfg.read_text()) if isinstance(cfg, Path) else yaml.safe_load(yaml.safe_dump(
        config_to_dict(cfg)))
    d.pop("name", None)
    d.get("model", {}).pop("num_classes", None)
    return yaml.safe_dump(d, sort_keys=True)


def with_earlier_rows(frame: pd.DataFrame, previous: Path) -> pd.DataFrame:
    """``frame`` with the rows of ``previous`` (another regime plan's regime.csv in the same folder: the widths, the
    variants) that it does not measure again, in one order however the rows came: per schedule, Single-FC by width,
    Single-Conv, then the other variants."""
    from dhanalysis.vocab import DEFAULT_MODES

    if previous.is_file():
        old = pd.read_csv(previous)
        # rows written before regime.csv had a mode column (or a mode in every row) were read in their variant's
        # default mode, which is what they are given here
        old["mode"] = old.get("mode", pd.Series(index=old.index, dtype=object)).fillna(
            old["variant"].map(DEFAULT_MODES))
        keep = ~old.set_index(["run", "iterations"]).index.isin(frame.set_index(["run", "iterations"]).index)
        frame = pd.concat([old[keep], frame], ignore_index=True).astype({"fc_dim": "Int64"})
    order = frame["run"].map(lambda r: (0, "") if r.startswith("single-fc-d") else (1, "") if r == "single-conv"
                             else (2, r))
    return frame.assign(_o=order, _w=frame["fc_dim"].fillna(0)).sort_values(
        ["iterations", "_o", "_w"], kind="stable").drop(columns=["_o", "_w"]).reset_index(drop=True)


def ap_replicates(frame: pd.DataFrame, results: Path, ground_truth: Path, replicates: int = NOISE_REPLICATES,
                  seed: int = 0) -> np.ndarray:
    """``(len(frame), replicates)``: each row's AP on the same bootstrap draws of the images it was evaluated on.

    A row's AP is read from ``results/it<iterations>/<run>/``'s detections of its mode, matched once
    (`metrics.resampled_ap.CocoMatches`, pycocotools' AP on each draw). One draw serves every row, so a difference
    of two rows' replicates is paired: what the images the two runs share do to it is counted once.
    """
    import json

    from dhanalysis.errors import DHError
    from dhanalysis.stats.bootstrap import replicate_counts
    from dhanalysis.study.evidence import load_matches
    from dhanalysis.study.runner import evaluated_image_ids

    gt = json.loads(Path(ground_truth).read_text())
    folders = [Path(results) / f"it{int(r.iterations)}" / r.run for r in frame.itertuples()]
    images = {tuple(evaluated_image_ids(f)) for f in folders}
    if len(images) != 1:  # paired draws need one image set: a run evaluated on other images is not comparable
        raise DHError(f"the regime's runs under {results} were evaluated on {len(images)} different image sets; "
                      "delete their eval.csv files and rerun `dhanalysis reproduce --regime` to evaluate them again")
    ids = list(images.pop())
    draws = replicate_counts(len(ids), replicates, seed)
    out = np.empty((len(frame), replicates))
    for i, (folder, mode) in enumerate(zip(folders, frame["mode"])):
        out[i] = load_matches(gt, folder, [mode], ids)[mode].ap_replicates(draws)[:, 0]
    return out


def _se_points(replicates: np.ndarray) -> np.ndarray:
    """Per row, the standard deviation of replicates in AP points (NaN where fewer than two are finite)."""
    finite = np.isfinite(replicates).sum(axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(finite >= 2, 100 * np.nanstd(replicates, axis=1, ddof=1), np.nan)


def validation_layout(plan: StudyPlan, layout, regime: RegimePlan):
    """The layout whose data the pilot is evaluated on: the study's, or one whose val split is the study's extended
    to ``regime.val_images`` (written on first use: about 10 ms an image)."""
    if regime.val_images is None:
        return layout
    from dhanalysis.data.synth import make_synth_dataset

    extended = replace(layout, data_dir=f"{layout.data_dir}-val{regime.val_images}")
    make_synth_dataset(extended.data, **{**plan.data, "num_train": 0, "num_test": 0, "num_val": regime.val_images})
    return extended


def regime_tables(frame: pd.DataFrame, replicates: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(convergence, gaps) from ``regime.csv``'s rows (and, where given, each row's AP on shared image draws:
    `ap_replicates`, rows as ``frame``'s).

    convergence: per run and schedule, its AP against the longest schedule's, in AP points, and whether it is within
    `CONVERGED_WITHIN` (empty for the run's longest schedule itself, which nothing longer measures). gaps: per fc
    width and schedule, Single-FC − Single-Conv AP (and AP50) in points — positive is the paper's order (the fc-head
    the better recogniser). With ``replicates``, each difference's standard error over the images
    (``delta_se_images``, ``gap_AP_se_images``; one seed, so training noise is not in it).
    """
    frame = frame.reset_index(drop=True)
    longest = frame.groupby("run")["iterations"].transform("max")  # each run's own longest schedule
    final = frame[frame["iterations"] == longest].set_index("run")["AP"]
    conv = frame.assign(AP_longest=frame["run"].map(final), longest=longest)
    conv["delta_points"] = 100 * (conv["AP_longest"] - conv["AP"])
    # the longest schedule has nothing longer to be measured against: its convergence is unknown, not "yes"
    conv["converged"] = (conv["delta_points"].abs() <= CONVERGED_WITHIN).astype(object).where(
        conv["iterations"] < longest, None)
    columns = ["trunk", "run", "variant", "fc_dim", "iterations", "AP", "longest", "AP_longest", "delta_points",
               "converged"]
    single_conv = frame[frame["variant"] == "single-conv"]
    fc = frame[frame["variant"] == "single-fc"]
    conv_row = fc["iterations"].map(pd.Series(single_conv.index, index=single_conv["iterations"]))
    gaps = fc.assign(conv_AP=conv_row.map(frame["AP"]), conv_AP50=conv_row.map(frame["AP50"]))
    gaps["gap_AP_points"] = 100 * (gaps["AP"] - gaps["conv_AP"])
    gaps["gap_AP50_points"] = 100 * (gaps["AP50"] - gaps["conv_AP50"])
    gaps["paper_order"] = gaps["gap_AP_points"] >= 0
    gap_columns = ["trunk", "fc_dim", "iterations", "AP", "conv_AP", "gap_AP_points", "AP50", "conv_AP50",
                   "gap_AP50_points", "paper_order"]
    if replicates is not None:
        final_row = frame["run"].map(pd.Series(frame.index[frame["iterations"] == longest],
                                               index=frame.loc[frame["iterations"] == longest, "run"]))
        se = _se_points(replicates[final_row.to_numpy()] - replicates)
        conv["delta_se_images"] = np.where(conv["iterations"] < longest, se, np.nan)
        columns.insert(columns.index("delta_points") + 1, "delta_se_images")
        has_conv = conv_row.notna().to_numpy()
        gap_se = np.full(len(fc), np.nan)
        gap_se[has_conv] = _se_points(replicates[fc.index[has_conv]]
                                      - replicates[conv_row[has_conv].astype(int).to_numpy()])
        gaps["gap_AP_se_images"] = gap_se
        gap_columns.insert(gap_columns.index("gap_AP_points") + 1, "gap_AP_se_images")
    return conv[columns], gaps[gap_columns].reset_index(drop=True)
