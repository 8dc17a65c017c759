"""What a model's results folder holds, declared once: each analysis's `Outputs`, in one registry (`RESULTS`).

Every list of result files derives from it, so they cannot drift apart: what ``overwrite`` deletes when a folder
changes model (`result_paths`), what one analysis deletes when it starts again (`owned_paths`), what marks a folder
as a model's results (`MODEL_MARKERS`), and what a shipped reproduction keeps (`shipped_files`). A new analysis adds
one `Outputs` row here and is covered by all four.

Torch-free: figures, findings and the reproduction read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dhanalysis.vocab import (ARCHITECTURE_CSV, CHUNKS_DIR, CONFIG_JSON, EVAL_CSV, PCC_CHUNKS, PCC_CSV, PCC_STATS_CSV,
                              PCC_SUMMARY_JSON, PER_CLASS_AP_CSV, QUALITATIVE_CSV, QUALITATIVE_IMAGES_CSV,
                              RAW_SAMPLE_CSV, SLIDING_WINDOW_CHUNKS, SLIDING_WINDOW_STATS_CSV,
                              SLIDING_WINDOW_SUMMARY_JSON, SPATIAL_CORR_CHUNKS, SPATIAL_CORR_CSV, SPATIAL_CORR_NPZ,
                              SPATIAL_SUMMARY_JSON, detections_file, table_files)


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


RESULTS: dict[str, Outputs] = {
    o.analysis: o
    for o in (
        Outputs("model", (CONFIG_JSON,), summary=CONFIG_JSON, what="a model's results", shipped=(CONFIG_JSON,)),
        Outputs("eval", (EVAL_CSV, PER_CLASS_AP_CSV, detections_file("*")), what="evaluation results",
                shipped=(EVAL_CSV, PER_CLASS_AP_CSV)),
        Outputs("sliding-window",
                (*table_files(SLIDING_WINDOW_STATS_CSV), *table_files(RAW_SAMPLE_CSV), SLIDING_WINDOW_SUMMARY_JSON),
                summary=SLIDING_WINDOW_SUMMARY_JSON, chunks=SLIDING_WINDOW_CHUNKS, what="sliding-window results",
                shipped=(SLIDING_WINDOW_STATS_CSV, SLIDING_WINDOW_SUMMARY_JSON)),
        Outputs("pcc", (*table_files(PCC_CSV), *table_files(PCC_STATS_CSV), PCC_SUMMARY_JSON),
                summary=PCC_SUMMARY_JSON, chunks=PCC_CHUNKS, what="PCC results",
                shipped=(PCC_CSV, PCC_STATS_CSV, PCC_SUMMARY_JSON)),
        Outputs("spatial-corr", (SPATIAL_CORR_NPZ, *table_files(SPATIAL_CORR_CSV), SPATIAL_SUMMARY_JSON),
                summary=SPATIAL_SUMMARY_JSON, chunks=SPATIAL_CORR_CHUNKS, what="spatial-correlation results",
                shipped=(SPATIAL_CORR_NPZ, SPATIAL_SUMMARY_JSON)),
        # photographic: the tables name image files of the dataset, so a reproduction ships the PNGs instead
        Outputs("qualitative", (QUALITATIVE_CSV, QUALITATIVE_IMAGES_CSV), what="qualitative results"),
        Outputs("architecture", (ARCHITECTURE_CSV,), what="the conv-head's layer table", shipped=(ARCHITECTURE_CSV,),
                marks_model=False),
    )
}

# A folder holding any of these is a model's results folder (`dhanalysis.figures.render.discover_models`).
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
