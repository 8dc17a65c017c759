"""The project's shared names, each defined once: head types and tasks, the head variants, the inference modes,
object groups and COCO's size rule, proposal sets, the COCO metrics, the dataset layout and the detector's resize
scale, and the files and chunk folders a results folder holds.

Every layer reads them from here (the model builds its branches from `VARIANTS`, the analyses group objects by
`SIZE_GROUPS`, the figures order and label by both), so this module imports nothing beyond the standard library:
`dhanalysis.figures`, which never imports torch or the model, can read it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

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
    default_mode: str  # an `INFERENCE_MODES` name
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

# Each variant's own inference mode, by variant name: what Table 1 and Table 5 report a model in.
DEFAULT_MODES: dict[str, str] = {name: v.default_mode for name, v in VARIANTS.items()}


# ------------------------------------------------------------------------------------------------ inference modes
@dataclass(frozen=True)
class InferenceMode:
    """How a trained model detects (§4.2, Table 3, Fig. 8): whose classifier scores, whose regressor places the box.

    A mode with two classifiers fuses their probabilities by ``fusion``, a key of
    `dhanalysis.model.roi_heads.FUSION_RULES` (the rule lives beside the model, its name here, so that figures and
    tables can list modes without torch).
    """

    name: str  # how configs, --modes, eval.csv's ``mode`` column and detections_<mode>.json spell it
    cls: tuple[str, ...]  # the HEAD_TYPES whose classifiers score, fused in this order when there are two
    reg: str  # the HEAD_TYPES entry whose box regressor places the boxes
    fusion: str | None  # the fusion rule of two classifiers, None for one
    label: str  # what the mode does, in the paper's words (figure titles)

    @property
    def alone(self) -> bool:
        """One head does both tasks (Fig. 8 a-b; the "conv-head alone" and "fc-head alone" of Figs. A.4-A.5)."""
        return self.cls == (self.reg,)

    @property
    def spelled(self) -> str:
        """The explicit ``<score source>-cls+<box source>-reg`` name, accepted for every mode."""
        return f"{self.fusion or self.cls[0]}-cls+{self.reg}-reg"

    @property
    def fusion_label(self) -> str:
        """Table 3's row name: the fusion method, "No fusion" for one classifier."""
        return self.fusion.capitalize() if self.fusion else "No fusion"


# In the order of Table 3 and Fig. 8; `applicable_modes` and eval list modes in this order.
INFERENCE_MODES: dict[str, InferenceMode] = {
    m.name: m
    for m in (
        InferenceMode("conv", ("conv",), "conv", None, "conv-head alone"),
        InferenceMode("fc", ("fc",), "fc", None, "fc-head alone"),
        InferenceMode("fc-cls+conv-reg", ("fc",), "conv", None, "fc-head cls + conv-head reg"),
        InferenceMode("conv-cls+fc-reg", ("conv",), "fc", None, "conv-head cls + fc-head reg"),
        InferenceMode("max", ("fc", "conv"), "conv", "max", "max fusion + conv-head reg"),
        InferenceMode("average", ("fc", "conv"), "conv", "average", "average fusion + conv-head reg"),
        InferenceMode("complementary", ("fc", "conv"), "conv", "complementary", "complementary fusion + conv-head reg"),
    )
}
# Other names a mode answers to: its spelled-out form, and "none" (the fusion rule that keeps the fc-head's scores).
MODE_ALIASES: dict[str, str] = {"none": "fc-cls+conv-reg",
                                **{m.spelled: m.name for m in INFERENCE_MODES.values() if m.spelled != m.name}}
# Table 3: the fusion rules of a model whose fc-head classifies and conv-head regresses, "no fusion" first.
FUSION_MODES = tuple(m.name for m in INFERENCE_MODES.values() if m.reg == "conv" and m.cls[0] == "fc")


def find_mode(cls: str, reg: str) -> str | None:
    """The mode in which head ``cls`` alone classifies and head ``reg`` regresses (None when there is none)."""
    return next((m.name for m in INFERENCE_MODES.values() if m.cls == (cls,) and m.reg == reg), None)


# Figs. A.4-A.5 read one Double-Head-Ext three ways: the conv-head alone, the fc-head alone, both as the variant fuses.
QUALITATIVE_MODES = (find_mode("conv", "conv"), find_mode("fc", "fc"), VARIANTS["double-head-ext"].default_mode)


def lookup_mode(name: str) -> InferenceMode | None:
    """The mode a name (or an alias) stands for, None when unknown (`dhanalysis.model.variants.parse_mode` raises)."""
    return INFERENCE_MODES.get(MODE_ALIASES.get(name, name))


# ------------------------------------------------------------------------------------------------ object groups
# COCO's size groups by annotation area in original-image pixels (the ``area`` field; COCOeval's params.areaRng):
# small < 32², medium 32²-96², large ≥ 96².
SIZE_GROUPS = ("small", "medium", "large")
SMALL_MAX_AREA = 32**2
LARGE_MIN_AREA = 96**2


def size_index(area: Any) -> Any:
    """COCO size group of each area as an index into `SIZE_GROUPS`: a number, or elementwise for a numpy array or
    torch tensor ``(N,)`` (the one rule every layer groups objects by)."""
    return (area >= SMALL_MAX_AREA) * 1 + (area >= LARGE_MIN_AREA) * 1


def size_group(area: float) -> str:
    """COCO's size group of one annotation area in pixels: small < 32², medium < 96², large otherwise."""
    return SIZE_GROUPS[int(size_index(area))]


# COCOeval's area ranges (params.areaRng) by label: ``ALL_SIZES`` takes every area (COCOeval's 0 to 1e10), then the
# size groups. The ranges are closed at both ends, so COCOeval evaluates an area on a shared bound in both groups
# (`size_index` names the larger one). The one statement of "all", read by every COCO evaluation.
ALL_SIZES = "all"
AREA_RANGES = {ALL_SIZES: (0.0, 1e10), **dict(zip(SIZE_GROUPS, ((0.0, float(SMALL_MAX_AREA)),
                                                                (float(SMALL_MAX_AREA), float(LARGE_MIN_AREA)),
                                                                (float(LARGE_MIN_AREA), 1e10))))}

# Class difficulty: terciles of the classes ranked by a reference model's per-class AP, highest first (App. A.1).
DIFFICULTY_GROUPS = ("easy", "medium", "hard")

# ------------------------------------------------------------------------------------------------ proposal sets
# The boxes a PCC is measured on (§3.2, Fig. 3): the sliding windows around each object, the model's own RPN
# proposals, and its detections after NMS (the last two come from the model, so they are streamed per image).
PREDEFINED, RPN_PROPOSALS, DETECTIONS = "predefined", "rpn", "detections"
PROPOSAL_SETS = (PREDEFINED, RPN_PROPOSALS, DETECTIONS)
MODEL_PROPOSAL_SETS = (RPN_PROPOSALS, DETECTIONS)
# What pcc.csv's ``measure`` column holds (`dhanalysis.metrics.measures` defines each), the paper's pooled PCC first:
# its positives-only form, rank correlation within each object, the IoU NMS loses by the ranking, and the pooled PCC's
# decomposition over IoU bins. A table without the column holds the pooled PCC alone.
ALIGNMENT_MEASURES = ("pooled_pcc", "positive_pcc", "object_spearman", "object_kendall", "nms_gap", "nms_near_best",
                      "curve_pcc", "explained_share", "within_bin")
ALIGNMENT_MEASURE_LABELS = {
    "pooled_pcc": "PCC, all boxes (paper)", "positive_pcc": "PCC, positives only",
    "object_spearman": "Spearman within objects", "object_kendall": "Kendall within objects",
    "nms_gap": "NMS: best − top-scored IoU", "nms_near_best": "NMS: top-scored within 0.05 of best",
    "curve_pcc": "corr(IoU, bin-mean score)", "explained_share": "score variance explained by IoU bin",
    "within_bin": "within-bin rest"}

# What stage of a detector's post-processing a results file holds: after the per-class NMS and the per-image top-k
# (what detectors report), or before them (several boxes per object, as within-object ranking measures need).
AFTER_NMS, BEFORE_NMS = "after_nms", "before_nms"
DETECTION_STAGES = (AFTER_NMS, BEFORE_NMS)
STAGE_NOT_STATED = "not stated"  # a results file with neither a sidecar nor a stage its user gave

# ------------------------------------------------------------------------------------------------ metrics
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval's stats[0:6], stored as fractions


# ------------------------------------------------------------------------------------------------ dataset layout
def split_paths(root: str | PurePath, split: str) -> tuple[Path, Path]:
    """``(image_dir, ann_file)`` of a COCO-format split: ``root/<split>/`` and
    ``root/annotations/instances_<split>.json`` (COCO's own layout; the synthetic and VOC sets are written in it)."""
    root = Path(root)
    return root / split, root / "annotations" / f"instances_{split}.json"


def resize_scale(height: float, width: float, min_size: float, max_size: float) -> float:
    """The scale an image (``height``, ``width``) is resized by so its short side is ``min_size`` unless its long side
    would pass ``max_size``: the one the detector's resize (torchvision's ``GeneralizedRCNNTransform``) picks, and
    the one the data pipeline's `Resize` and the model's resize conventions compute."""
    return min(min_size / min(height, width), max_size / max(height, width))


# ------------------------------------------------------------------------------------------------ result files
# What the commands write into a model's results folder and what figures, findings and reproduce read back. A table
# ``x.csv`` has a twin ``x.parquet`` when pyarrow is installed (`table_files`).
CONFIG_JSON = "config.json"  # the model's config: whose results the folder holds
EVAL_CSV = "eval.csv"  # eval: one row per inference mode, `METRICS`
PER_CLASS_AP_CSV = "per_class_ap.csv"  # eval: AP per class and mode (ranks class difficulty)
EVALUATED_IMAGES_JSON = "evaluated_images.json"  # eval: the image ids AP was measured on, whatever was detected
# eval: which stage its detections files hold, and the thresholds (named outside the detections_<mode>.json pattern,
# which lists the modes)
DETECTIONS_INFO_JSON = "eval_stage.json"
SLIDING_WINDOW_STATS_CSV = "sliding_window_stats.csv"  # sliding-window: sufficient statistics per bin
SLIDING_WINDOW_SUMMARY_JSON = "summary.json"  # sliding-window: what produced the statistics, counts
RAW_SAMPLE_CSV = "raw_sample.csv"  # sliding-window: a sample of raw (proposal, head) rows
SLIDING_WINDOW_OBJECTS_CSV = "sliding_window_objects.csv"  # sliding-window: one row per (object, head)
PCC_CSV = "pcc.csv"  # pcc: one PCC per (head, proposal set, group)
PCC_STATS_CSV = "pcc_stats.csv"  # pcc: the moments behind pcc.csv
PCC_OBJECTS_CSV = "pcc_objects.csv"  # pcc: one row per (object, head, rpn / detection set)
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
DETECTIONS_CALIBRATION_CSV = "det_calibration.csv"  # D-ECE / LaECE reliability per score bin, with the binning
DETECTIONS_LRP_CSV = "det_lrp.csv"  # oLRP and its components per class (TPAMI LRP, tau 0.5), moLRP
DETECTIONS_MEASURES_CSV = "det_measures.csv"  # every alignment measure per score field, as pcc.csv
DETECTIONS_RECALL_CSV = "det_recall.csv"  # COCO's average recall per area range and max detections, per class
DETECTIONS_THRESHOLDS_CSV = "det_thresholds.csv"  # precision / recall / F1 at the score threshold and the best-F1 one
DETECTIONS_F1_CURVE_CSV = "det_f1_curve.csv"  # precision / recall / F1 against the score threshold
DETECTIONS_CONFUSION_CSV = "det_confusion.csv"  # classes x classes plus background (ultralytics' counting)
# every table `dhanalysis detections` writes, each as CSV; those in DETECTIONS_PARQUET also as Parquet where pyarrow is
# present (the per-detection table, the one large enough to want it)
DETECTIONS_TABLES = (DETECTIONS_CSV, DETECTIONS_ALIGNMENT_CSV, DETECTIONS_ALIGNMENT_BINS_CSV,
                     DETECTIONS_ALIGNMENT_HIST_CSV, DETECTIONS_ORACLE_CSV, DETECTIONS_TIDE_CSV, DETECTIONS_ANALYZE_CSV,
                     DETECTIONS_ANALYZE_PR_CSV, DETECTIONS_CALIBRATION_CSV, DETECTIONS_MEASURES_CSV,
                     DETECTIONS_RECALL_CSV, DETECTIONS_THRESHOLDS_CSV, DETECTIONS_F1_CURVE_CSV,
                     DETECTIONS_CONFUSION_CSV, DETECTIONS_LRP_CSV)
DETECTIONS_PARQUET = (DETECTIONS_CSV,)
DETECTIONS_SUMMARY_JSON = "detections_summary.json"
# compare (two detectors' results files on one ground truth): one row per metric, the difference with its paired
# bootstrap interval, p-value and Holm verdict; the summary (the folder's record) last
COMPARE_CSV = "compare.csv"
COMPARE_SUMMARY_JSON = "compare_summary.json"
# the one page of a results folder (`dhanalysis.figures.report`): headline numbers, figures, definitions, protocol
REPORT_HTML = "report.html"
# the resumable analyses' per-image chunks: <results folder>/chunks/<analysis>/
CHUNKS_DIR = "chunks"
SLIDING_WINDOW_CHUNKS, PCC_CHUNKS, SPATIAL_CORR_CHUNKS = "sliding_window", "pcc", "spatial_corr"
# a training run's folder: the finished run's weights (what every command's --ckpt reads)
FINAL_CHECKPOINT = "model_final.pth"
# a sweep folder
SWEEP_CSV = "sweep.csv"  # the run index: grid, run and the grid's settings
SWEEP_RESULTS_CSV = "results.csv"  # the index joined with every run's eval.csv rows
# a reproduction (`dhanalysis.study`): the findings, their companions, and the study's record
FINDINGS_CSV = "findings.csv"
FINDINGS_MD = "findings.md"
PER_SEED_CSV = "findings_per_seed.csv"  # each seed's value of every claim
TRUNKS_CSV = "findings_by_trunk.csv"  # the fc-vs-conv claims side by side on every trunk
DOSE_CSV = "dose_response.csv"  # the §3.2 differences against the Single-FC − Single-Conv AP gap, per fc width
HEADS_CSV = "heads_params.csv"  # every trained head's conv / fc weights
STUDY_SUMMARY_JSON = "reproduction_summary.json"  # the plan, the quality checks per trunk and replicate
# the primary replicate's `dhanalysis detections` of each analysed model and `dhanalysis compare` of a pair: one folder
# each, one level below the replicate's results tree (so no results reader takes them for model folders)
DETECTIONS_DIR = "detections"


def table_files(csv_name: str) -> tuple[str, str]:
    """A table's two files, ``x.csv`` and ``x.parquet``: together they are what rewriting or deleting it touches."""
    return csv_name, PurePath(csv_name).with_suffix(".parquet").name


def detections_file(mode: str) -> str:
    """eval's COCO-format detections of one inference mode; ``detections_file("*")`` is their glob pattern."""
    return f"detections_{mode}.json"
