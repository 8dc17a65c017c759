"""The project's shared names, each defined once: head types and tasks, the head variants, object groups, proposal
sets, the COCO metrics, the dataset layout, and the files and chunk folders a results folder holds.

Every layer reads them from here (the model builds its branches from `VARIANTS`, the analyses group objects by
`SIZE_GROUPS`, the figures order and label by both), so this module imports nothing beyond the standard library:
`dhanalysis.figures`, which never imports torch or the model, can read it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

# ------------------------------------------------------------------------------------------------ heads and tasks
HEAD_TYPES = ("fc", "conv")  # the two head types of §2 (Fig. 1), in the order every table and figure lists them
TASKS = ("cls", "reg")  # classification, bounding-box regression


@dataclass(frozen=True)
class BranchSpec:
    """One head of a variant and the task it focuses on; `dhanalysis.model.variants` turns it into loss weights."""

    name: str  # stable module name, model.roi_heads.branches[name]: analyses look weights up by it
    head: str  # a HEAD_TYPES entry
    focus: str | None  # a TASKS entry, or None: both tasks with equal weight
    balanced: bool = False  # focused task weighted by λ of this head type, the other by 1 - λ (Eq. 2-3)

    @property
    def focused_tasks(self) -> tuple[str, ...]:
        """The tasks this branch is trained for when λ = 1: its focus, or both."""
        return TASKS if self.focus is None else (self.focus,)


@dataclass(frozen=True)
class Variant:
    """One of the paper's head structures (Fig. 1, Table 1) as data: which head does which task."""

    name: str  # how configs, folder names and the CLI spell it
    label: str  # the paper's name, for figures and tables
    branches: tuple[BranchSpec, ...]
    default_mode: str  # inference mode (`dhanalysis.model.variants.parse_mode`)
    summary: str
    lambda_fc: float = 1.0  # defaults written into the variant's configs
    lambda_conv: float = 1.0

    @property
    def head_types(self) -> tuple[str, ...]:
        """The head types the variant builds, in `HEAD_TYPES` order."""
        return tuple(h for h in HEAD_TYPES if any(b.head == h for b in self.branches))

    @property
    def focused_tasks(self) -> tuple[tuple[str, str], ...]:
        """(head type, task) pairs its branches focus on: the arrows of Fig. 1, the weighted columns of Table 1."""
        return tuple((b.head, task) for b in self.branches for task in b.focused_tasks)


# In the paper's order (Table 1, then Double-Head-Ext); tables and legends list models in this order.
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("single-fc", "Single-FC", (BranchSpec("fc", "fc", None),), "fc",
                "FPN baseline: one 2-fc head does both tasks"),
        Variant("single-conv", "Single-Conv", (BranchSpec("conv", "conv", None),), "conv",
                "one conv-head does both tasks"),
        Variant(
            "double-fc",
            "Double-FC",
            (BranchSpec("fc_cls", "fc", "cls"), BranchSpec("fc_reg", "fc", "reg")),
            "fc",
            "two identical fc-heads: one classifies, one regresses",
        ),
        Variant(
            "double-conv",
            "Double-Conv",
            (BranchSpec("conv_cls", "conv", "cls"), BranchSpec("conv_reg", "conv", "reg")),
            "conv",
            "two identical conv-heads: one classifies, one regresses",
        ),
        Variant(
            "double-head",
            "Double-Head",
            (BranchSpec("fc", "fc", "cls", balanced=True), BranchSpec("conv", "conv", "reg", balanced=True)),
            "fc-cls+conv-reg",
            "fc-head classifies, conv-head regresses (λ_fc = λ_conv = 1)",
        ),
        Variant(
            "double-head-reverse",
            "Double-Head-Reverse",
            (BranchSpec("fc", "fc", "reg"), BranchSpec("conv", "conv", "cls")),
            "conv-cls+fc-reg",
            "the tasks swapped: fc-head regresses, conv-head classifies",
        ),
        Variant(
            "double-head-ext",
            "Double-Head-Ext",
            (BranchSpec("fc", "fc", "cls", balanced=True), BranchSpec("conv", "conv", "reg", balanced=True)),
            "complementary",
            "Double-Head plus unfocused-task supervision and complementary fusion (λ_fc = 0.7, λ_conv = 0.8)",
            lambda_fc=0.7,
            lambda_conv=0.8,
        ),
    )
}

# ------------------------------------------------------------------------------------------------ object groups
# COCO's size groups by annotation area in original-image pixels (the ``area`` field; COCOeval's params.areaRng):
# small < 32², medium 32²-96², large ≥ 96².
SIZE_GROUPS = ("small", "medium", "large")
SMALL_MAX_AREA = 32**2
LARGE_MIN_AREA = 96**2
# Class difficulty: terciles of the classes ranked by a reference model's per-class AP, highest first (App. A.1).
DIFFICULTY_GROUPS = ("easy", "medium", "hard")

# ------------------------------------------------------------------------------------------------ proposal sets
# The boxes a PCC is measured on (§3.2, Fig. 3): the sliding windows around each object, the model's own RPN
# proposals, and its detections after NMS (the last two come from the model, so they are streamed per image).
PREDEFINED, RPN_PROPOSALS, DETECTIONS = "predefined", "rpn", "detections"
PROPOSAL_SETS = (PREDEFINED, RPN_PROPOSALS, DETECTIONS)
MODEL_PROPOSAL_SETS = (RPN_PROPOSALS, DETECTIONS)

# ------------------------------------------------------------------------------------------------ metrics
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval's stats[0:6], stored as fractions


# ------------------------------------------------------------------------------------------------ dataset layout
def split_paths(root: str | PurePath, split: str) -> tuple[Path, Path]:
    """``(image_dir, ann_file)`` of a COCO-format split: ``root/<split>/`` and
    ``root/annotations/instances_<split>.json`` (COCO's own layout; the synthetic and VOC sets are written in it)."""
    root = Path(root)
    return root / split, root / "annotations" / f"instances_{split}.json"


# ------------------------------------------------------------------------------------------------ result files
# What the commands write into a model's results folder and what figures, findings and reproduce read back. A table
# ``x.csv`` has a twin ``x.parquet`` when pyarrow is installed (`table_files`).
CONFIG_JSON = "config.json"  # the model's config: whose results the folder holds
EVAL_CSV = "eval.csv"  # eval: one row per inference mode, `METRICS`
PER_CLASS_AP_CSV = "per_class_ap.csv"  # eval: AP per class and mode (ranks class difficulty)
SLIDING_WINDOW_STATS_CSV = "sliding_window_stats.csv"  # sliding-window: sufficient statistics per bin
SLIDING_WINDOW_SUMMARY_JSON = "summary.json"  # sliding-window: what produced the statistics, counts
RAW_SAMPLE_CSV = "raw_sample.csv"  # sliding-window: a sample of raw (proposal, head) rows
PCC_CSV = "pcc.csv"  # pcc: one PCC per (head, proposal set, group)
PCC_STATS_CSV = "pcc_stats.csv"  # pcc: the moments behind pcc.csv
PCC_SUMMARY_JSON = "pcc_summary.json"
SPATIAL_CORR_NPZ = "spatial_corr.npz"  # spatial-corr: the (S², S²) maps of Fig. 4
SPATIAL_CORR_CSV = "spatial_corr.csv"  # spatial-corr: the same maps as a tidy table
SPATIAL_SUMMARY_JSON = "spatial_summary.json"
QUALITATIVE_CSV = "qualitative.csv"  # detections where the heads disagree (Figs. A.4, A.5)
QUALITATIVE_IMAGES_CSV = "qualitative_images.csv"
ARCHITECTURE_CSV = "architecture.csv"  # the head blocks drawn in Fig. 5
# detections (any detector's results file): the per-detection table and what follows from it
DETECTIONS_CSV = "detections.csv"  # one row per detection: matches, IoUs, size, TIDE error
DETECTIONS_ALIGNMENT_CSV = "det_alignment.csv"  # score-IoU correlations with bootstrap intervals
DETECTIONS_ALIGNMENT_BINS_CSV = "det_alignment_bins.csv"  # score mean / std per IoU bin
DETECTIONS_ALIGNMENT_HIST_CSV = "det_alignment_hist.csv"  # (IoU, score) 2-D histogram
DETECTIONS_ORACLE_CSV = "det_oracle_ap.csv"  # AP with real, IoU and score x IoU scores
DETECTIONS_TIDE_CSV = "det_tide.csv"  # TIDE's error breakdown
DETECTIONS_ANALYZE_CSV = "det_analyze.csv"  # COCO analyze(): AP of each curve per class
DETECTIONS_ANALYZE_PR_CSV = "det_analyze_pr.csv"  # COCO analyze(): the curves
DETECTIONS_CALIBRATION_CSV = "det_calibration.csv"  # reliability per score bin at IoU 0.5 / 0.75
DETECTIONS_SUMMARY_JSON = "detections_summary.json"
# the resumable analyses' per-image chunks: <results folder>/chunks/<analysis>/
CHUNKS_DIR = "chunks"
SLIDING_WINDOW_CHUNKS, PCC_CHUNKS, SPATIAL_CORR_CHUNKS = "sliding_window", "pcc", "spatial_corr"
# a sweep folder
SWEEP_CSV = "sweep.csv"  # the run index: grid, run and the grid's settings
SWEEP_RESULTS_CSV = "results.csv"  # the index joined with every run's eval.csv rows
# a reproduction
FINDINGS_CSV = "findings.csv"
FINDINGS_MD = "findings.md"


def table_files(csv_name: str) -> tuple[str, str]:
    """A table's two files, ``x.csv`` and ``x.parquet``: together they are what rewriting or deleting it touches."""
    return csv_name, PurePath(csv_name).with_suffix(".parquet").name


def detections_file(mode: str) -> str:
    """eval's COCO-format detections of one inference mode; ``detections_file("*")`` is their glob pattern."""
    return f"detections_{mode}.json"
