"""Figures drawn from the files one analysis wrote into one model folder, declared beside their draw functions.

A figures module lists its own in ``FILE_FIGURES`` (key -> `FileFigure`); `dhanalysis.figures.render` collects every
module's and the analysis's row in `dhanalysis.results.RESULTS` names the key. So a new figure of an analysis is its
draw function with its entry, and its key in the row: `render` is not edited.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from dhanalysis.results import ResultsTree

Reader = Callable[[str], Any]  # a file of the folder by name: a DataFrame for a .csv, a dict for a .json


@dataclass(frozen=True)
class FileFigure:
    """One figure of one analysis's files, drawn from the first model folder holding them all."""

    title: str  # how the figure is named in `dhanalysis figures`' lines
    files: tuple[str, ...]  # the tables it reads, each required and named when missing; the first is written beside it
    draw: Callable[[Reader], Figure | str]  # the figure, or the line saying why this folder's tables cannot be drawn
    record: str | None = None  # the analysis's summary, required too (it marks the analysis finished); not named


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.suffix == ".json" else pd.read_csv(path)


def draw_from_files(res: ResultsTree, spec: FileFigure, command: str) -> tuple[Figure, pd.DataFrame] | str:
    """``spec``'s figure with the table it draws (its first file, as the analysis wrote it), or the line saying what
    is missing and which command (``command``, e.g. "dhanalysis detections") writes it."""
    needed = (*spec.files, *([spec.record] if spec.record else []))
    for m in res.models.values():
        if all(m.path(f) for f in needed):
            drawn = spec.draw(lambda name, m=m: _read(m.folder / name))
            return drawn if isinstance(drawn, str) else (drawn, pd.read_csv(m.path(spec.files[0])))
    return f"needs {', '.join(spec.files)} ({command})"
