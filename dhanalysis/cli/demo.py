"""The whole pipeline on the synthetic dataset, on CPU: data, training, evaluation, analyses, figures, summary.

  dhanalysis demo            # the full demo (about a quarter of an hour on two cores)
  dhanalysis demo --quick    # tiny data and models, for tests and a first look

Steps: make data/synth; pretrain a ResNet-18 on its box crops (the local stand-in for ImageNet weights); train
Single-FC, Single-Conv, Double-FC, Double-Conv, Double-Head and Double-Head-Ext with the CPU presets (plus two more
Double-Head-Ext λ settings for Fig. 8's grid); evaluate every inference mode of each; run the sliding-window, PCC
and spatial-correlation analyses; index the ablations; render every figure and table; print where each output is
and what it found. Every step resumes: rerun the same command after an interruption.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoModel:
    name: str
    preset: str  # configs/synth/<preset>.yaml
    overrides: tuple[str, ...] = ()


# the six variants of the demo, plus the corners of a 2×2 λ grid for Fig. 8 (Double-Head is λ = (1, 1), Ext is
# (0.7, 0.8); the other two corners add one unfocused task each)
MODELS = (
    DemoModel("single-fc", "single-fc"),
    DemoModel("single-conv", "single-conv"),
    DemoModel("double-fc", "double-fc"),
    DemoModel("double-conv", "double-conv"),
    DemoModel("double-head", "double-head"),
    DemoModel("double-head-ext", "double-head-ext"),
    DemoModel("ext-lfc0.7-lconv1", "double-head-ext", ("model.loss.lambda_fc=0.7", "model.loss.lambda_conv=1.0")),
    DemoModel("ext-lfc1-lconv0.8", "double-head-ext", ("model.loss.lambda_fc=1.0", "model.loss.lambda_conv=0.8")),
)
FIG8_RUNS = {"double-head": (1.0, 1.0), "double-head-ext": (0.7, 0.8), "ext-lfc0.7-lconv1": (0.7, 1.0),
             "ext-lfc1-lconv0.8": (1.0, 0.8)}


@dataclass(frozen=True)
class Plan:
    """Sizes of one demo flavour."""

    data: dict
    pretrain: dict
    train: tuple[str, ...]
    proposals_per_gt: int
    analysis_images: int
    eval_images: int


FULL = Plan(
    data={"num_train": 600, "num_val": 100, "image_size": 320},
    pretrain={"iterations": 100, "crop_size": 48},
    train=("train.iterations=40", "train.steps=[30,36]", "train.warmup_iters=10", "train.checkpoint_period=20",
           "train.clip_grad_norm=10"),
    proposals_per_gt=1000,
    analysis_images=12,
    eval_images=50,
)
QUICK = Plan(
    data={"num_train": 24, "num_val": 6, "image_size": 128},
    pretrain={"iterations": 4, "crop_size": 32, "batch_size": 16},
    train=("train.iterations=6", "train.steps=[5]", "train.warmup_iters=2", "train.checkpoint_period=3",
           "train.ims_per_batch=2", "model.min_size=128", "model.max_size=128", "model.head.fc_dim=64",
           "model.head.conv_dim=32", "model.head.bottleneck_dim=16", "model.head.non_local_dim=16",
           "model.backbone.fpn_channels=32", "data.num_workers=0", "train.log_period=2", "train.clip_grad_norm=10"),
    proposals_per_gt=300,
    analysis_images=6,
    eval_images=6,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny data and models, for tests and a first look")
    parser.add_argument("--workdir", default=".", help="where data/, checkpoints/, results/ and figures/ go")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="start again instead of resuming")


class _Steps:
    """Numbered progress lines with elapsed time: the demo's outer progress display."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def __call__(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total} {time.perf_counter() - self.start:6.0f}s] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    import logging

    from dhanalysis.cli import main as cli
    from dhanalysis.config import load_config
    from dhanalysis.data.synth import make_synth_dataset
    from dhanalysis.engine.pretrain import pretrain_backbone
    from dhanalysis.engine.train import train
    from dhanalysis.errors import DHError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    plan = QUICK if args.quick else FULL
    tag = "demo-quick" if args.quick else "demo"
    work = Path(args.workdir)
    data_root = work / "data" / ("synth-quick" if args.quick else "synth")
    ckpt_root, results, figures = work / "checkpoints" / tag, work / "results" / tag, work / "figures" / tag
    if args.overwrite:
        for folder in (ckpt_root, results, figures):
            shutil.rmtree(folder, ignore_errors=True)
    step = _Steps(4 + 3 * len(MODELS) + 2)
    started = time.perf_counter()

    step(f"synthetic dataset -> {data_root}")
    make_synth_dataset(data_root, **plan.data)

    backbone = ckpt_root / "resnet18-synth.pth"
    step(f"pretrain the ResNet-18 on box crops (the stand-in for ImageNet weights) -> {backbone}")
    if not backbone.exists():
        pretrain_backbone(data_root, "train", backbone, progress=True, **plan.pretrain)

    def call(argv: list[str]) -> None:
        code = cli(argv)
        if code:
            raise DHError(f"demo step 'dhanalysis {' '.join(argv[:1])}' failed (exit {code}); rerun to resume")

    ckpts: dict[str, Path] = {}
    for m in MODELS:
        step(f"train {m.name} -> {ckpt_root / m.name}")
        overrides = [*plan.train, *m.overrides, f"name={m.name}", f"data.root={data_root}",
                     f"model.backbone.weights={backbone}"]
        cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "synth" / f"{m.preset}.yaml", overrides)
        ckpts[m.name] = train(cfg, ckpt_root / m.name, resume=True, device=args.device)

    for m in MODELS:
        step(f"evaluate every mode of {m.name} -> {results / m.name / 'eval.csv'}")
        if not (results / m.name / "eval.csv").exists():
            call(["eval", "--ckpt", str(ckpts[m.name]), "--out", str(results / m.name), "--device", args.device,
                  "--max-images", str(plan.eval_images)])

    reference = results / "single-fc" / "per_class_ap.csv"
    common = ["--max-images", str(plan.analysis_images), "--proposals-per-gt", str(plan.proposals_per_gt),
              "--device", args.device, "--no-progress"]
    for m in MODELS:
        step(f"sliding-window, PCC and spatial correlation of {m.name} -> {results / m.name}")
        out = ["--ckpt", str(ckpts[m.name]), "--out", str(results / m.name)]
        call(["pcc", *out, *common, "--difficulty-from", str(reference)])
        call(["spatial-corr", *out, "--max-images", str(plan.analysis_images), "--device", args.device,
              "--no-progress"])

    step(f"ablation indexes (Tables 1-3, Fig. 8) and architecture -> {results / 'sweeps'}")
    write_demo_sweeps(results)
    from dhanalysis.analysis.architecture import write_architecture
    from dhanalysis.model.checkpoint import load_checkpoint

    write_architecture(load_checkpoint(ckpts["double-head-ext"]), results / "double-head-ext")

    step(f"figures and tables -> {figures}")
    call(["figures", "--results", str(results), "--out", str(figures)])

    print_summary(results, figures, time.perf_counter() - started)
    return 0


def write_demo_sweeps(results: Path) -> None:
    """Index the demo's models as the sweeps of Tables 1-3 and Fig. 8, so the figures read them like real sweeps."""
    from dhanalysis.engine.sweep import Run, write_index

    sweeps = results / "sweeps"

    def index(grid: str, runs: list[Run], sources: dict[str, str]) -> None:
        for run in runs:
            dst = sweeps / grid / run.name
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results / sources[run.name] / "eval.csv", dst / "eval.csv")
        write_index(runs, grid, sweeps / grid)

    table1 = [
        Run("single-fc-w1", (), {"variant": "single-fc", "w_fc": 1.0, "w_conv": 1.0, "group": "single"}),
        Run("single-conv-w1", (), {"variant": "single-conv", "w_fc": 1.0, "w_conv": 1.0, "group": "single"}),
        *(Run(f"{v}-w2", (), {"variant": v, "w_fc": 2.0, "w_conv": 2.5, "group": "double, ω_fc=2.0, ω_conv=2.5"})
          for v in ("double-fc", "double-conv", "double-head")),
    ]
    index("table1", table1, {r.name: r.meta["variant"] for r in table1})
    table2 = [Run("K0", (), {"K": 0, "non_local": False}), Run("K3", (), {"K": 3, "non_local": False})]
    index("table2", table2, {"K0": "single-fc", "K3": "double-head"})
    fig8 = [Run(f"lfc{lf:g}-lconv{lc:g}", (), {"lambda_fc": lf, "lambda_conv": lc}) for lf, lc in FIG8_RUNS.values()]
    index("fig8", fig8, {f"lfc{lf:g}-lconv{lc:g}": name for name, (lf, lc) in FIG8_RUNS.items()})
    index("table3", [Run("fusion", (), {})], {"fusion": "double-head-ext"})


def print_summary(results: Path, figures: Path, seconds: float) -> None:
    """Where everything is, and what the analyses found, in the paper's terms."""
    import pandas as pd

    from dhanalysis.analysis.stats import bin_summary

    print(f"\ndemo finished in {seconds / 60:.1f} min")
    print(f"  checkpoints: {results.parent.parent / 'checkpoints' / results.name}")
    print(f"  results:     {results}  (eval.csv, per_class_ap.csv, sliding_window_stats.csv, pcc.csv, "
          "spatial_corr.npz per model; sweeps/)")
    print(f"  figures:     {figures}")
    evals = pd.concat([pd.read_csv(p) for p in sorted(results.glob("*/eval.csv"))], ignore_index=True)
    best = evals.sort_values("AP", ascending=False).groupby("model").head(1).sort_values("model")
    print("\nCOCO box AP (best mode of each model):")
    for row in best.itertuples():
        print(f"  {row.model:20s} {row.mode:16s} AP {100 * row.AP:5.1f}  AP50 {100 * row.AP50:5.1f}")

    def pcc_of(model: str, head: str) -> float | None:
        path = results / model / "pcc.csv"
        if not path.exists():
            return None
        df = pd.read_csv(path)
        sel = df[(df["head"] == head) & (df["proposal_set"] == "predefined") & (df["group"] == "all")]
        return float(sel["pcc"].iloc[0]) if len(sel) else None

    def reg_above(model: str, head: str, threshold: float = 0.4) -> float | None:
        path = results / model / "sliding_window_stats.csv"
        if not path.exists():
            return None
        summary = bin_summary(pd.read_csv(path), by=["model", "head"])
        sel = summary[(summary["head"] == head) & (summary["iou_lo"] >= threshold)].dropna(subset=["reg_iou_mean"])
        return float((sel["reg_iou_mean"] * sel["n"]).sum() / sel["n"].sum()) if len(sel) else None

    print("\nWhat the analyses found (Single-FC's fc-head vs Single-Conv's conv-head, paper §3):")
    fc, conv = pcc_of("single-fc", "fc"), pcc_of("single-conv", "conv")
    if fc is not None and conv is not None:
        better = "fc-head" if fc > conv else "conv-head"
        print(f"  PCC of score and proposal IoU: fc-head {fc:.3f}, conv-head {conv:.3f} -> the {better}'s scores "
              "follow IoU more closely (paper: the fc-head's)")
    fc_r, conv_r = reg_above("single-fc", "fc"), reg_above("single-conv", "conv")
    if fc_r is not None and conv_r is not None:
        better = "conv-head" if conv_r > fc_r else "fc-head"
        print(f"  mean regressed IoU for proposals above IoU 0.4: fc-head {fc_r:.3f}, conv-head {conv_r:.3f} -> the "
              f"{better} regresses better (paper: the conv-head)")
    ext = evals[evals["model"] == "double-head-ext"].set_index("mode")["AP"]
    if {"fc-cls+conv-reg", "complementary"} <= set(ext.index):
        print(f"  Double-Head-Ext AP: fc-cls+conv-reg {100 * ext['fc-cls+conv-reg']:.1f}, complementary fusion "
              f"{100 * ext['complementary']:.1f} (paper Table 3: fusion adds 0.6)")
    summary = {"seconds": seconds, "results": str(results), "figures": str(figures)}
    (results / "demo_summary.json").write_text(json.dumps(summary, indent=2))
