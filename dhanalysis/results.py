"""What a model's results folder holds, declared once: one row per analysis (`Outputs`: its name, its command, the
files it writes, the figures and tables drawn from them), in one registry (`RESULTS`); and `ResultsTree`, the one
reader of a results folder.

Every list of result files derives from it, so they cannot drift apart: what ``overwrite`` deletes when a folder
changes model (`result_paths`), what one analysis deletes when it starts again (`owned_paths`), what marks a folder
as a model's results (`MODEL_MARKERS`), and what a shipped reproduction keeps (`shipped_files`). The command line
builds the analyses' subcommands from the rows (`dhanalysis.cli.COMMANDS`), and the tests check each row against its
command's help, what a run of it writes and the figures table. A new analysis adds one `Outputs` row here (its file
names written in the row) and is covered by all of them.

Torch-free: figures, findings and the reproduction read it. numpy and pandas are imported where a table is read,
so the registry costs the command line nothing at start-up (every command's parser is built from it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dhanalysis.vocab import (ARCHITECTURE_CSV, CHUNKS_DIR, COMPARE_CSV, COMPARE_SUMMARY_JSON, CONFIG_JSON,
                              DETECTIONS_ANALYZE_PR_CSV, DETECTIONS_CSV, DETECTIONS_F1_CURVE_CSV,
                              DETECTIONS_INFO_JSON, DETECTIONS_PARQUET, DETECTIONS_SUMMARY_JSON, DETECTIONS_TABLES,
                              EVAL_CSV, EVALUATED_IMAGES_JSON, PCC_CHUNKS, PCC_CSV, PCC_OBJECTS_CSV, PCC_STATS_CSV,
                              PCC_SUMMARY_JSON, PER_CLASS_AP_CSV, QUALITATIVE_CSV, QUALITATIVE_IMAGES_CSV,
                              RAW_SAMPLE_CSV, REPORT_HTML, SLIDING_WINDOW_CHUNKS, SLIDING_WINDOW_OBJECTS_CSV,
                              SLIDING_WINDOW_STATS_CSV, SLIDING_WINDOW_SUMMARY_JSON, SPATIAL_CORR_CHUNKS,
                              SPATIAL_CORR_CSV, SPATIAL_CORR_NPZ, SPATIAL_SUMMARY_JSON, SWEEP_RESULTS_CSV, VARIANTS,
                              detections_file, table_files)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DOUBLE_HEAD_PREFERENCE = ("double-head-ext", "double-head")  # of several two-head models, whose results come first
# `dhanalysis detections`' tables that grow with the number of detections: a shipped reproduction leaves them out
DETECTIONS_UNSHIPPED = (DETECTIONS_CSV, DETECTIONS_ANALYZE_PR_CSV, DETECTIONS_F1_CURVE_CSV)


@dataclass(frozen=True)
class Outputs:
    """What one analysis writes into the results folder it shares with the others."""

    analysis: str  # the key's "analysis" entry, e.g. "sliding-window"
    files: tuple[str, ...]  # every file it writes (names or glob patterns), summary included: what restarting deletes
    summary: str | None = None  # written last; its "run" entry is the key, so it is also the analysis's record
    chunks: str | None = None  # its resumable partial sums, chunks/<chunks>
    what: str = "results"  # how errors name its results, e.g. "sliding-window results"
    shipped: tuple[str, ...] = ()  # the files a shipped reproduction keeps (small, portable; no raw rows or paths)
    marks_model: bool = True  # its files show a folder is a model's (architecture.csv may sit in a results root)
    command: str | None = None  # its `dhanalysis` subcommand; None: written by another (reproduce) or a library call
    help: str = ""  # the command's one line in `dhanalysis --help`
    # the module defining the command (``add_arguments(parser)``, ``run(args)``, its docstring the command's help),
    # imported only when the command runs: a cli module, or the analysis module itself
    command_module: str | None = None
    figures: tuple[str, ...] = ()  # what `dhanalysis figures` draws from its files: keys of its figures and tables


RESULTS: dict[str, Outputs] = {
    o.analysis: o
    for o in (
        Outputs("model", (CONFIG_JSON,), summary=CONFIG_JSON, what="a model's results", shipped=(CONFIG_JSON,)),
        # the detections' sidecar is eval's record: which stage (before / after NMS) every detections file holds
        Outputs("eval", (EVAL_CSV, PER_CLASS_AP_CSV, EVALUATED_IMAGES_JSON, detections_file("*"), DETECTIONS_INFO_JSON),
                summary=DETECTIONS_INFO_JSON, what="evaluation results", shipped=(EVAL_CSV, PER_CLASS_AP_CSV),
                command="eval", help="COCO box AP of a checkpoint, every inference mode in one pass",
                command_module="dhanalysis.cli.evaluate", figures=("figA1", "figA2", "table5")),
        Outputs("sliding-window",
                (*table_files(SLIDING_WINDOW_STATS_CSV), *table_files(SLIDING_WINDOW_OBJECTS_CSV),
                 *table_files(RAW_SAMPLE_CSV), SLIDING_WINDOW_SUMMARY_JSON),
                summary=SLIDING_WINDOW_SUMMARY_JSON, chunks=SLIDING_WINDOW_CHUNKS, what="sliding-window results",
                shipped=(SLIDING_WINDOW_STATS_CSV, SLIDING_WINDOW_SUMMARY_JSON),
                command="sliding-window", help="score ~14k sliding-window proposals per box (paper §3.1)",
                command_module="dhanalysis.cli.sliding_window",
                figures=("fig2", "fig3", "fig6", "fig7", "figA1", "figA2", "figA3")),
        Outputs("pcc", (*table_files(PCC_CSV), *table_files(PCC_STATS_CSV), *table_files(PCC_OBJECTS_CSV),
                        PCC_SUMMARY_JSON),
                summary=PCC_SUMMARY_JSON, chunks=PCC_CHUNKS, what="PCC results",
                shipped=(PCC_CSV, PCC_STATS_CSV, PCC_SUMMARY_JSON),
                command="pcc", help="Pearson correlation of IoU and classification score (paper §3.2)",
                command_module="dhanalysis.cli.pcc", figures=("fig3", "figA2")),
        Outputs("spatial-corr", (SPATIAL_CORR_NPZ, *table_files(SPATIAL_CORR_CSV), SPATIAL_SUMMARY_JSON),
                summary=SPATIAL_SUMMARY_JSON, chunks=SPATIAL_CORR_CHUNKS, what="spatial-correlation results",
                shipped=(SPATIAL_CORR_NPZ, SPATIAL_SUMMARY_JSON),
                command="spatial-corr", help="spatial correlation of head outputs and fc6 weights (paper §3.4)",
                command_module="dhanalysis.cli.spatial_corr", figures=("fig4",)),
        # photographic: the tables name image files of the dataset, so a reproduction ships the PNGs instead
        Outputs("qualitative", (QUALITATIVE_CSV, QUALITATIVE_IMAGES_CSV), what="qualitative results",
                figures=("figA4", "figA5")),
        Outputs("architecture", (ARCHITECTURE_CSV,), what="the conv-head's layer table", shipped=(ARCHITECTURE_CSV,),
                marks_model=False, figures=("fig5",)),
        # `dhanalysis detections`: any detector's results file. A reproduction ships its small tables, not
        # `DETECTIONS_UNSHIPPED` (the per-detection table; analyze()'s PR curves and the F1 curve, ~100 kB each at
        # the study's 300 test images)
        Outputs("detections", (*(f for t in DETECTIONS_TABLES
                                 for f in (table_files(t) if t in DETECTIONS_PARQUET else (t,))),
                               DETECTIONS_SUMMARY_JSON),
                summary=DETECTIONS_SUMMARY_JSON, what="detection results",
                shipped=(*(t for t in DETECTIONS_TABLES if t not in DETECTIONS_UNSHIPPED), DETECTIONS_SUMMARY_JSON),
                command="detections",
                help="any detector's results file: score-IoU alignment, TIDE and COCO error breakdowns",
                command_module="dhanalysis.cli.detections",
                figures=("det-alignment", "det-analyze", "det-tide", "det-reliability", "det-confusion",
                         "det-measures")),
        # `dhanalysis compare`: two detectors' results files, every metric's difference with its paired interval
        Outputs("compare", (COMPARE_CSV, COMPARE_SUMMARY_JSON), summary=COMPARE_SUMMARY_JSON,
                what="a comparison of two detectors", shipped=(COMPARE_CSV, COMPARE_SUMMARY_JSON),
                command="compare",
                help="two detectors' results files: every metric's difference, paired intervals, Holm",
                command_module="dhanalysis.cli.compare", figures=("det-compare",)),
        # `dhanalysis report`: one page of whatever a folder holds (detections and compare also write it themselves);
        # it may sit in a folder of models, so it does not mark one
        Outputs("report", (REPORT_HTML,), what="a report page", marks_model=False, command="report",
                help="one self-contained report.html of a results folder: numbers, intervals, figures, protocol",
                command_module="dhanalysis.cli.report"),
    )
}

# A folder holding any of these is a model's results folder (`discover_models`, below).
MODEL_MARKERS: tuple[str, ...] = tuple(f for o in RESULTS.values() if o.marks_model for f in o.files if "*" not in f)


def owned_paths(folder: str | Path, outputs: Outputs) -> list[Path]:
    """The files (patterns expanded) and the chunk folder of one analysis in ``folder``: what restarting it deletes."""
    folder = Path(folder)
    paths = [p for f in outputs.files for p in (sorted(folder.glob(f)) if "*" in f else [folder / f])]
    return paths + ([folder / CHUNKS_DIR / outputs.chunks] if outputs.chunks else [])


def result_paths(folder: str | Path) -> list[Path]:
    """Every result of every analysis in ``folder``, and the chunks folder holding their partial sums: what
    ``overwrite`` deletes when the folder changes model. Nothing else in the folder is touched."""
    return [p for o in RESULTS.values() for p in owned_paths(folder, o)] + [Path(folder) / CHUNKS_DIR]


def shipped_files() -> tuple[str, ...]:
    """The files of a model's results folder that a shipped reproduction copies, in registry order."""
    return tuple(f for o in RESULTS.values() for f in o.shipped)


# ------------------------------------------------------------------------------------------------ reading a tree
def variant_from_name(name: str) -> str | None:
    """The longest variant name contained in a folder name ("synth-double-head-ext" -> "double-head-ext")."""
    hits = [v for v in VARIANTS if v in name.lower()]
    return max(hits, key=len) if hits else None


@dataclass(frozen=True)
class ModelResults:
    """One model's results folder."""

    name: str
    folder: Path
    variant: str | None
    config: dict = field(default_factory=dict, compare=False)

    def path(self, filename: str) -> Path | None:
        path = self.folder / filename
        return path if path.is_file() else None

    @property
    def preferred_mode(self) -> str | None:
        """The inference mode its config asks for (``model.mode``), None for the variant's default."""
        return (self.config.get("model") or {}).get("mode") or None


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG_JSON).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _model_results(folder: Path) -> ModelResults:
    config = _read_config(folder)
    variant = (config.get("model") or {}).get("variant") or variant_from_name(folder.name)
    return ModelResults(folder.name, folder, variant, config)


def discover_models(root: str | Path, models: Sequence[str] | None = None) -> dict[str, ModelResults]:
    """name -> `ModelResults` for every model folder under ``root`` (or ``root`` itself when it is one).

    ``models`` keeps only folders whose name or variant is listed.
    """
    root = Path(root)

    def is_model(folder: Path) -> bool:
        return any((folder / f).is_file() for f in MODEL_MARKERS)

    if is_model(root):
        folders = [root]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and is_model(p)) if root.is_dir() else []
    found = {f.name: _model_results(f) for f in folders}
    if models:
        wanted = set(models)
        found = {k: m for k, m in found.items() if k in wanted or m.variant in wanted}
    return found


def read_csv(path: Path | None, **kwargs: Any) -> pd.DataFrame | None:
    """A table, or None when the file is absent or has no rows."""
    import pandas as pd

    if path is None:
        return None
    table = pd.read_csv(path, **kwargs)
    return table if len(table) else None


def pick_mode(rows: pd.DataFrame, preferred: str | None = None) -> pd.Series:
    """One evaluation row of one model: the ``preferred`` mode when evaluated, otherwise the mode with the best AP."""
    if preferred and (rows["mode"] == preferred).any():
        return rows[rows["mode"] == preferred].iloc[0]
    return rows.loc[rows["AP"].astype(float).idxmax()]


SPATIAL_COLUMNS = ("model", "map", "cell_i", "cell_j", "value")


def spatial_frame(maps: dict[str, np.ndarray], model_name: str) -> pd.DataFrame:
    """The (S², S²) maps of Fig. 4 as a tidy table (`SPATIAL_COLUMNS`): one row per (map, cell_i, cell_j);
    cell = y·S + x."""
    import numpy as np
    import pandas as pd

    parts = []
    for name, matrix in maps.items():
        i, j = np.meshgrid(np.arange(matrix.shape[0]), np.arange(matrix.shape[1]), indexing="ij")
        parts.append(pd.DataFrame({"model": model_name, "map": name, "cell_i": i.ravel(), "cell_j": j.ravel(),
                                   "value": matrix.ravel()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SPATIAL_COLUMNS))


class ResultsTree:
    """Cached, read-only access to the tables of one results folder (its model folders and its sweeps): the one
    reader that figures, findings and a study share.

    Args:
        root: the results folder. ``models``: restrict to these folder names or variants. ``sweeps``: the sweeps
        folder (default ``root/sweeps``): ``results.csv`` there and in its sub-folders is read.
    """

    def __init__(self, root: str | Path, models: Sequence[str] | None = None, sweeps: str | Path | None = None):
        self.root = Path(root)
        self.models = discover_models(self.root, models)
        self.sweeps_dir = Path(sweeps) if sweeps is not None else self.root / "sweeps"
        self._cache: dict[tuple[str, str], object] = {}

    # ------------------------------------------------------------------ per-model files
    def _cached(self, kind: str, model: str, load: Callable[[ModelResults], object]) -> object:
        key = (kind, model)
        if key not in self._cache:
            entry = self.models.get(model)
            self._cache[key] = load(entry) if entry is not None else None
        return self._cache[key]

    def _model_table(self, kind: str, filename: str, model: str) -> pd.DataFrame | None:
        def load(m: ModelResults) -> pd.DataFrame | None:
            table = read_csv(m.path(filename))
            # "" rather than None for an unknown variant: group-bys drop None keys
            return None if table is None else table.assign(model=m.name, variant=m.variant or "")
        return self._cached(kind, model, load)

    def stats(self, model: str) -> pd.DataFrame | None:
        """The sliding-window statistics table of ``model``, with its ``variant``."""
        return self._model_table("stats", SLIDING_WINDOW_STATS_CSV, model)

    def objects(self, model: str) -> pd.DataFrame | None:
        """The sliding-window object rows of ``model`` (per-object alignment values), with its ``variant``."""
        return self._model_table("objects", SLIDING_WINDOW_OBJECTS_CSV, model)

    def pcc(self, model: str) -> pd.DataFrame | None:
        """``model``'s pcc.csv, with its ``variant``."""
        return self._model_table("pcc", PCC_CSV, model)

    def per_class_ap(self, model: str) -> pd.DataFrame | None:
        return self._cached("per_class", model, lambda m: read_csv(m.path(PER_CLASS_AP_CSV)))

    def spatial(self, model: str) -> dict[str, np.ndarray]:
        def load(m: ModelResults) -> dict[str, np.ndarray]:
            import numpy as np

            path = m.path(SPATIAL_CORR_NPZ)
            if path is None:
                return {}
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        return self._cached("spatial", model, load) or {}

    def eval(self, model: str) -> pd.DataFrame | None:
        return self._model_table("eval", EVAL_CSV, model)

    def evals(self) -> pd.DataFrame | None:
        """Every model's eval.csv rows, with ``variant``."""
        import pandas as pd

        parts = [t for t in (self.eval(m) for m in self.models) if t is not None]
        return pd.concat(parts, ignore_index=True) if parts else None

    def heads(self, model: str, source: str = "stats") -> set[str]:
        """The heads ``model`` has results of: in its sliding-window statistics, or (``source="pcc"``) either
        there or in its pcc.csv."""
        tables = [self.stats(model)] + ([self.pcc(model)] if source == "pcc" else [])
        return {h for t in tables if t is not None for h in t["head"]}

    def with_variant(self, variant: str, head: str | None = None, source: str = "stats") -> str | None:
        """The first model of ``variant`` (whose results of ``source`` have ``head``, when given)."""
        for name, m in self.models.items():
            if m.variant == variant and (head is None or head in self.heads(name, source)):
                return name
        return None

    # ------------------------------------------------------------------ sweeps, architecture
    @cached_property
    def sweeps(self) -> pd.DataFrame | None:
        """The sweeps' results.csv tables (``grid`` column: table1, table2, fig8, table3), concatenated."""
        import pandas as pd

        if not self.sweeps_dir.is_dir():
            return None
        paths = sorted({*self.sweeps_dir.glob(SWEEP_RESULTS_CSV), *self.sweeps_dir.glob(f"*/{SWEEP_RESULTS_CSV}")})
        parts = [t for t in (read_csv(p) for p in paths) if t is not None and "grid" in t.columns]
        return pd.concat(parts, ignore_index=True) if parts else None

    def sweep(self, grid: str) -> pd.DataFrame | None:
        table = self.sweeps
        if table is None:
            return None
        part = table[table["grid"] == grid].dropna(axis=1, how="all")
        return part if len(part) else None

    @cached_property
    def architecture(self) -> pd.DataFrame | None:
        """architecture.csv of the results folder itself, else of a model (Double-Head-Ext's first)."""
        import pandas as pd

        order = sorted(self.models.values(), key=lambda m: (m.variant not in DOUBLE_HEAD_PREFERENCE, m.name))
        for path in [self.root / ARCHITECTURE_CSV] + [m.folder / ARCHITECTURE_CSV for m in order]:
            if path.is_file():
                return pd.read_csv(path, dtype={"block_M": str})
        return None
