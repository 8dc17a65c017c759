"""Render every figure and table a results folder allows (``dhanalysis figures``), from result files alone.

A results folder holds one sub-folder per model (any folder holding a file of `dhanalysis.results.MODEL_MARKERS`)
and, optionally, the ablation sweeps (``sweeps/<grid>/results.csv``). A model's variant is ``model.variant`` of its
``config.json``, else the longest variant name its folder name contains. Each figure picks the models it needs by
variant; one whose inputs are missing is skipped with one line saying which results would produce it.

Which heads are "the fc-head" and "the conv-head" (Figs. 2-4, A.1, A.2): by default Single-FC's fc-head and
Single-Conv's conv-head, as in the paper, else the two heads of one Double-Head(-Ext) model; ``fc_head`` /
``conv_head`` = (model, head) override either. Any head not from the paper's model is a substitute: the figure says
so in a red title and `figure` logs a ``WARNING:`` line, both worded by `substitute_note`.

The statistics behind the curves and bars come from `dhanalysis.probes.figure_tables`, imported when first
needed, and each figure's table is written beside it (``fig2.csv`` beside ``fig2.png``); the plotting modules only
draw the tidy tables handed to them.
"""

from __future__ import annotations

import importlib
import io
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property, partial
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from dhanalysis.errors import DHError
from dhanalysis.figures import ablation, architecture, correlation, qualitative, sliding_window
from dhanalysis.figures.from_files import FileFigure, draw_from_files
from dhanalysis.figures.style import RC, head_label, save_figure, variant_label
from dhanalysis.folders import write_table
from dhanalysis.results import DOUBLE_HEAD_PREFERENCE, RESULTS, ResultsTree, spatial_frame
from dhanalysis.results import ModelResults, discover_models, variant_from_name  # noqa: F401 - the reader, as before
from dhanalysis.vocab import (EVAL_CSV, HEAD_TYPES, METRICS, PER_CLASS_AP_CSV, PREDEFINED, QUALITATIVE_CSV,
                              QUALITATIVE_IMAGES_CSV, VARIANTS)

HeadRef = tuple[str, str]  # (model name, head type)
PAPER_HEAD_VARIANTS = {"fc": "single-fc", "conv": "single-conv"}  # whose head is "the fc-head" / "the conv-head"


class Results(ResultsTree):
    """`ResultsTree` with the head comparisons' choice of heads.

    Args:
        root, models, sweeps: as `ResultsTree`. ``fc_head`` / ``conv_head``: (model, head) for the head comparisons,
        overriding the defaults.
    """

    def __init__(self, root: str | Path, models: Sequence[str] | None = None, sweeps: str | Path | None = None,
                 fc_head: HeadRef | None = None, conv_head: HeadRef | None = None):
        super().__init__(root, models, sweeps)
        self.overrides = {"fc": fc_head, "conv": conv_head}

    # ------------------------------------------------------------------ which heads are compared
    @cached_property
    def head_pair(self) -> dict[str, HeadRef] | None:
        """{"fc": (model, "fc"), "conv": (model, "conv")} for the head comparisons, or None."""
        return self._pair("stats")

    @cached_property
    def pcc_head_pair(self) -> dict[str, HeadRef] | None:
        """`head_pair` for the PCC figure, whose heads may have pcc.csv without sliding-window statistics."""
        return self._pair("pcc")

    def _pair(self, source: str) -> dict[str, HeadRef] | None:
        singles = {h: self.with_variant(PAPER_HEAD_VARIANTS[h], h, source) for h in HEAD_TYPES}
        pair: dict[str, HeadRef | None] = {h: (m, h) if m else None for h, m in singles.items()}
        if not all(singles.values()):
            both = [n for v in DOUBLE_HEAD_PREFERENCE for n, m in self.models.items()
                    if m.variant == v and set(HEAD_TYPES) <= self.heads(n, source)]
            both += [n for n in self.models if set(HEAD_TYPES) <= self.heads(n, source) and n not in both]
            if both:
                pair = {h: (both[0], h) for h in pair}
        # an override replaces its head only; the other keeps its default (or its single-head model)
        for h, ref in self.overrides.items():
            if ref is not None:
                pair[h] = ref
        return pair if all(pair.values()) else None

    @cached_property
    def difficulty(self) -> tuple[dict[int, str], str] | None:
        """(category_id -> difficulty, reference model): `dhanalysis.probes.figure_tables.class_difficulty`."""
        return _tables().class_difficulty(self)


# ---------------------------------------------------------------------------------------------- input checks
SKIPPED = " skipped: "  # what every skip line holds between the item's name and what it needs


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The figure formats, lower-cased and without repeats, each one matplotlib writes here: checked by saving a tiny
    figure with text in each, so a format that needs what this machine lacks (pgf: a TeX install) is refused before
    any file is written rather than after half the figures. None at all is allowed (only the tables are written)."""
    from matplotlib.backend_bases import FigureCanvasBase

    wanted = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    known = FigureCanvasBase.get_supported_filetypes()
    unknown = [f for f in wanted if f not in known]
    if unknown:
        raise DHError(f"'{unknown[0]}' is not a figure format matplotlib writes; choose from "
                      f"{', '.join(sorted(known))}")
    for fmt in wanted:
        probe = Figure(figsize=(1, 1))
        probe.text(0.5, 0.5, "x")
        try:
            with plt.rc_context(RC):
                probe.savefig(io.BytesIO(), format=fmt)
        except Exception as exc:  # noqa: BLE001 - whatever the backend lacks, the format cannot be written here
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DHError(f"figures cannot be written as {fmt} on this machine ({reason}); choose another format") \
                from None
    return wanted


def _read_checked(model: ModelResults, filename: str, read: Callable[[], pd.DataFrame | None]) -> pd.DataFrame | None:
    """A model's table through the tree's reader, a file that is not a readable CSV refused by name."""
    try:
        return read()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DHError(f"{model.folder / filename} is not a readable CSV ({type(exc).__name__}); re-create it with "
                      "dhanalysis eval") from None


def _numbers(table: pd.DataFrame, path: Path, column: str, empty_ok: bool) -> None:
    """Refuse the first cell of ``column`` that is not a number (an empty cell too, unless ``empty_ok``)."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & (table[column].notna() | (not empty_ok))
    if bad.any():
        row = int(bad.to_numpy().argmax())
        cell = table[column].iloc[row]
        shown = "an empty cell" if pd.isna(cell) else repr(cell)
        raise DHError(f"{path}: column {column} has {shown} on line {row + 2}, not a number; fix the file or re-run "
                      "dhanalysis eval")


def check_inputs(res: Results) -> None:
    """Every model's eval.csv and per_class_ap.csv readable, with the columns the tables read and numbers in them:
    a bad cell is refused naming the file, the column and the line, before any figure is drawn."""
    for name, model in res.models.items():
        # (file, its reader, the columns the tables need, the columns it holds, {numeric column: empty allowed})
        for file, read, needed, expected, numeric in (
                (EVAL_CSV, res.eval, ("mode", "AP"), f"model, mode, {', '.join(METRICS)}",
                 {c: c != "AP" for c in METRICS}),
                (PER_CLASS_AP_CSV, res.per_class_ap, ("category_id", "AP"), "model, mode, category_id, category, AP",
                 {"category_id": False, "AP": True})):
            path = model.path(file)
            table = _read_checked(model, file, lambda read=read, name=name: read(name)) if path else None
            if table is None:
                continue
            missing = [c for c in needed if c not in table.columns]
            if missing:
                raise DHError(f"{path} has no column {missing[0]}; expected {expected} (written by dhanalysis eval)")
            for column, empty_ok in numeric.items():
                if column in table.columns:
                    _numbers(table, path, column, empty_ok=empty_ok)


# ---------------------------------------------------------------------------------------------- substitutes
def _model_words(res: Results, model: str) -> str:
    """"Double-Head-Ext (model 'synth-ext')": the paper's name for the reader, the folder name to find it."""
    entry = res.models.get(model)
    variant = entry.variant if entry else None
    return f"{VARIANTS[variant].label} (model '{model}')" if variant in VARIANTS else f"model '{model}'"


def substitute_note(res: Results, sources: Mapping[str, HeadRef] | None = None,
                    paper: Mapping[str, str | None] | None = None, inputs: str = "results") -> str | None:
    """How the compared heads depart from the paper's (Single-FC's fc-head, Single-Conv's conv-head), or None.

    The one wording of a substitute, for the figure's title and the logged warning, so no figure silently shows
    another model's heads as the paper's. ``sources``: "fc"/"conv" -> the (model, head) drawn (default
    ``res.head_pair``); ``paper``: "fc"/"conv" -> the paper's model when it has this figure's inputs, else None
    (default: the first Single-FC / Single-Conv model with sliding-window statistics of that head); ``inputs``: what
    a missing paper model lacks, in words.
    """
    sources = res.head_pair if sources is None else sources
    if not sources:
        return None
    if paper is None:
        paper = {h: res.with_variant(v, h) for h, v in PAPER_HEAD_VARIANTS.items()}
    heads = [h for h in PAPER_HEAD_VARIANTS if h in sources]

    def is_paper(h: str) -> bool:
        model, head = sources[h]
        entry = res.models.get(model)
        return head == h and entry is not None and entry.variant == PAPER_HEAD_VARIANTS[h]

    subs = [h for h in heads if not is_paper(h)]
    if not subs:
        return None
    chosen = [h for h in subs if res.overrides.get(h) is not None and tuple(res.overrides[h]) == tuple(sources[h])]
    missing = [h for h in subs if h not in chosen and paper.get(h) is None]
    set_aside = [h for h in subs if h not in chosen and paper.get(h) is not None]
    reasons = []
    if missing:
        reasons.append(" and ".join(variant_label(PAPER_HEAD_VARIANTS[h]) for h in missing) + f" {inputs} not found")
    reasons += [f"{head_label(h)} chosen by override" for h in chosen]
    reasons += [f"{_model_words(res, paper[h])} set aside to keep both heads from one model" for h in set_aside]

    models = {sources[h][0] for h in subs}
    if subs == heads and len(heads) > 1 and len(models) == 1 and all(sources[h][1] == h for h in heads):
        drawn = f"both heads of {_model_words(res, models.pop())}"
    else:
        drawn = ", ".join(f"{head_label(h)} from {_model_words(res, sources[h][0])}"
                          + (f" (its {head_label(sources[h][1])})" if sources[h][1] != h else "") for h in subs)
    instead = ("the paper's two single-head models" if len(subs) > 1
               else f"the paper's {variant_label(PAPER_HEAD_VARIANTS[subs[0]])} {head_label(subs[0])}")
    kept = [f"{head_label(h)} from {_model_words(res, sources[h][0])} as in the paper" for h in heads if h not in subs]
    return (f"Substitute: {'; '.join(reasons)} — {drawn}, not {instead}"
            + "".join(f"; {k}" for k in kept))


# ---------------------------------------------------------------------------------------------- tidy inputs
def _tables():
    """`dhanalysis.probes.figure_tables`, imported when a figure's table is first needed: the figures layer
    imports without the analyses, and computes no statistic itself."""
    from dhanalysis.probes import figure_tables

    return figure_tables


def curves(res: Results, refs: Iterable[HeadRef], group: str | None = None) -> pd.DataFrame | None:
    """The curves of ``refs`` by ``group`` (`dhanalysis.probes.figure_tables.curves`), difficulty ranked by
    ``res.difficulty``."""
    ranking = res.difficulty if group == "difficulty" else None
    return _tables().curves(res, refs, group, ranking[0] if ranking else None)


def pcc_rows(res: Results, refs: Iterable[HeadRef], difficulty: bool = False) -> pd.DataFrame | None:
    """The PCC rows of ``refs`` (`dhanalysis.probes.figure_tables.pcc_rows`), difficulty ranked like Fig. A.1."""
    ranking = res.difficulty if difficulty else None
    return _tables().pcc_rows(res, refs, ranking[0] if ranking else None)


# ---------------------------------------------------------------------------------------------- one builder per figure
SW = "sliding-window results"
SW_CMD = "(dhanalysis sliding-window)"
Builder = Callable[[Results], "tuple[Figure, pd.DataFrame] | str"]  # the figure and the table it draws, or why not


def _fig2(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    pair = res.head_pair
    data = curves(res, pair.values(), "size") if pair else None
    if data is None:
        return f"needs {SW} of a single-fc and a single-conv model, or of one double-head(-ext) model {SW_CMD}"
    return sliding_window.plot_fig2(data, caveat=substitute_note(res)), data


def _figA1(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    pair = res.head_pair
    data = curves(res, pair.values(), "difficulty") if pair else None
    if data is None:
        return (f"needs {SW} of the fc-head and conv-head models {SW_CMD} and a per_class_ap.csv (dhanalysis eval) "
                "to rank the classes")
    note = f"classes ranked by the per-class AP of {res.difficulty[1]}"
    return sliding_window.plot_figA1(data, note=note, caveat=substitute_note(res)), data


def _model_pair(res: Results, variants: Sequence[str], head: str) -> str | pd.DataFrame:
    models = [res.with_variant(v, head) for v in variants]
    data = curves(res, [(m, head) for m in models]) if all(models) else None
    if data is None:
        return f"needs {SW} of a {' and a '.join(variants)} model {SW_CMD}"
    return data


def _fig6(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    data = _model_pair(res, ("single-conv", "double-conv"), "conv")
    return data if isinstance(data, str) else (sliding_window.plot_fig6(data), data)


def _fig7(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    data = _model_pair(res, ("single-fc", "double-fc"), "fc")
    return data if isinstance(data, str) else (sliding_window.plot_fig7(data), data)


def _figA3(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    ext = res.with_variant("double-head-ext")
    refs = [(m, h) for m, h in ((res.with_variant("single-fc", "fc"), "fc"),
                                (res.with_variant("single-conv", "conv"), "conv")) if m]
    refs += [(ext, h) for h in HEAD_TYPES if ext and h in res.heads(ext)]
    data = curves(res, refs) if ext and len(refs) > 2 else None
    if data is None:
        return f"needs {SW} of a double-head-ext model and of a single-fc and/or single-conv model {SW_CMD}"
    return sliding_window.plot_figA3(data), data


def _fig3(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    pair = res.pcc_head_pair
    data = pcc_rows(res, pair.values()) if pair else None
    if data is None or not len(data):
        return (f"needs pcc results (pcc.csv from dhanalysis pcc) or {SW} {SW_CMD} of the fc-head and conv-head "
                "models")
    return correlation.plot_fig3(data, caveat=_fig3_note(res)), data


def _fig3_note(res: Results) -> str | None:
    """Fig. 3's substitute note: its heads are paired by what has PCC results."""
    paper = {h: res.with_variant(v, h, "pcc") for h, v in PAPER_HEAD_VARIANTS.items()}
    return substitute_note(res, res.pcc_head_pair, paper)


def _figA2(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    pair = res.head_pair
    data = pcc_rows(res, pair.values(), difficulty=True) if pair else None
    if data is not None:
        data = data[(data["proposal_set"] == PREDEFINED) & (data["grouping"] == "difficulty")]
    if data is None or not len(data):
        return (f"needs {SW} of the fc-head and conv-head models {SW_CMD} and a per_class_ap.csv (dhanalysis "
                "eval), or pcc.csv with difficulty groups")
    note = f"classes ranked by the per-class AP of {res.difficulty[1]}" if res.difficulty else None
    return correlation.plot_figA2(data, note=note, caveat=substitute_note(res)), data


def _map_head(name: str) -> str:
    """"conv_output" -> "conv": which head a Fig. 4 map belongs to."""
    return name.split("_")[0]


def _fig4_sources(res: Results) -> tuple[dict[str, str], dict[str, str | None]]:
    """(map name -> the model it is drawn from, head -> the paper's model that has that head's maps, or None).

    A map comes from the compared pair's model for its head, else the paper's model, else any model that has it.
    """
    pair = res.head_pair or {}
    paper = {h: next((n for n, m in res.models.items() if m.variant == v
                      and any(_map_head(k) == h for k in res.spatial(n))), None)
             for h, v in PAPER_HEAD_VARIANTS.items()}
    chosen = {}
    for name in correlation.MAP_TITLES:
        head = _map_head(name)
        preferred = [m for m in (pair[head][0] if head in pair else None, paper.get(head)) if m]
        model = next((m for m in [*preferred, *res.models] if name in res.spatial(m)), None)
        if model is not None:
            chosen[name] = model
    return chosen, paper


def _fig4_note(res: Results) -> str | None:
    """`substitute_note` for the maps Fig. 4 draws (a head with maps from two models names the non-paper one)."""
    chosen, paper = _fig4_sources(res)
    sources: dict[str, HeadRef] = {}
    for name, model in chosen.items():
        head = _map_head(name)
        # of two fc maps from different models, name the one that is not the paper's
        if head in PAPER_HEAD_VARIANTS and (head not in sources
                                            or res.models[model].variant != PAPER_HEAD_VARIANTS[head]):
            sources[head] = (model, head)
    return substitute_note(res, sources, paper, inputs="spatial-correlation results")


def _fig4(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    chosen, _ = _fig4_sources(res)
    if not chosen:
        return "needs spatial-correlation results (spatial_corr.npz from dhanalysis spatial-corr)"
    maps = {name: res.spatial(model)[name] for name, model in chosen.items()}
    titles = {name: f"{correlation.MAP_TITLES[name]}\n({variant_label(res.models[model].variant, model)})"
              for name, model in chosen.items()}
    table = pd.concat([spatial_frame({name: maps[name]}, model) for name, model in chosen.items()], ignore_index=True)
    return correlation.plot_fig4(maps, titles=titles, caveat=_fig4_note(res)), table


def _fig5(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    table = res.architecture
    if table is None:
        return ("needs architecture.csv (dhanalysis.probes.architecture.write_architecture(model, folder)) in the "
                "results folder or a model folder")
    return architecture.plot_fig5(table), table


def _fig8(res: Results) -> tuple[Figure, pd.DataFrame] | str:
    table = res.sweep("fig8")
    if table is None:
        return "needs the fig8 sweep (results.csv from dhanalysis sweep --grid fig8)"
    return ablation.plot_fig8(table), table


def _qualitative(res: Results, case: str) -> tuple[Figure, pd.DataFrame] | str:
    """Figs. A.4 / A.5 from the first model folder with qualitative.csv (a Double-Head-Ext's)."""
    for m in res.models.values():
        dets, images = m.path(QUALITATIVE_CSV), m.path(QUALITATIVE_IMAGES_CSV)
        if dets is None or images is None:
            continue
        images = pd.read_csv(images)
        picked = images[images["case"] == case]
        if picked.empty:
            return f"no image of {m.name} shows the disagreement of Fig. {case} (qualitative_images.csv)"
        missing = [f for f in picked["file"] if not Path(f).is_file()]
        if missing:
            return f"needs the dataset's images ({missing[0]} is not on this machine)"
        dets = pd.read_csv(dets)
        return qualitative.plot_qualitative(dets, images, case), dets[dets["case"] == case]
    return ("needs qualitative.csv of a Double-Head-Ext model (dhanalysis.probes.qualitative, written by "
            "dhanalysis reproduce)")


FIGURES: dict[str, tuple[str, Builder]] = {
    "fig2": ("Fig. 2", _fig2),
    "fig3": ("Fig. 3", _fig3),
    "fig4": ("Fig. 4", _fig4),
    "fig5": ("Fig. 5", _fig5),
    "fig6": ("Fig. 6", _fig6),
    "fig7": ("Fig. 7", _fig7),
    "fig8": ("Fig. 8", _fig8),
    "figA1": ("Fig. A.1", _figA1),
    "figA2": ("Fig. A.2", _figA2),
    "figA3": ("Fig. A.3", _figA3),
    "figA4": ("Fig. A.4", lambda res: _qualitative(res, "A.4")),
    "figA5": ("Fig. A.5", lambda res: _qualitative(res, "A.5")),
}


CONSUMERS = {"render", "report"}  # figures modules that use the figures table rather than declare into it


def _file_figures() -> dict[str, tuple[str, Builder]]:
    """Every figures module's ``FILE_FIGURES`` (`dhanalysis.figures.from_files`), in the order the analyses' rows
    (`dhanalysis.results.RESULTS`) name them, each pointing its skip line at its row's command."""
    import dhanalysis.figures as package

    declared: dict[str, FileFigure] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in CONSUMERS:
            declared.update(getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "FILE_FIGURES", {}))
    return {key: (declared[key].title, partial(draw_from_files, spec=declared[key],
                                               command=f"dhanalysis {row.command or row.analysis}"))
            for row in RESULTS.values() for key in row.figures if key in declared}


PAPER_FIGURES = tuple(FIGURES)  # the paper's own, drawn from an analyses folder (a study's replicate)
FIGURES.update(_file_figures())  # the paper's figures first, then the analyses' own

# the figures whose heads may be substitutes, and the note saying so (drawn as their title, logged as a warning)
SUBSTITUTE_NOTES: dict[str, Callable[[Results], str | None]] = {
    "fig2": substitute_note, "fig3": _fig3_note, "fig4": _fig4_note, "figA1": substitute_note,
    "figA2": substitute_note,
}

TABLE_CAPTIONS = {
    "table1": "Table 1. Head structures and loss weights (AP ×100).",
    "table2": "Table 2. Number of blocks K in the conv-head, without and with non-local blocks (NL) (AP ×100).",
    "table3": "Table 3. Fusion of the classifiers of both heads (AP ×100).",
    "table5": "Table 5. Evaluated models, each in its preferred (else best-AP) inference mode (AP ×100).",
}


def table(res: Results, key: str) -> pd.DataFrame | str:
    """One of Tables 1, 2, 3, 5 as a DataFrame, or the line saying which results it needs."""
    if key == "table5":
        evals = res.evals()
        if evals is None:
            return "needs eval.csv of at least one model (dhanalysis eval)"
        return ablation.table5(evals, {n: m.preferred_mode for n, m in res.models.items() if m.preferred_mode})
    grid = res.sweep(key)
    if grid is None:
        return f"needs the {key} sweep (results.csv from dhanalysis sweep --grid {key})"
    return {"table1": ablation.table1, "table2": ablation.table2, "table3": ablation.table3}[key](grid)


def figure_and_table(res: Results, key: str, log: Callable[[str], None] = print
                     ) -> tuple[Figure, pd.DataFrame] | None:
    """Draw one figure (``fig2`` … ``figA5``) and return it with the table it draws; None, after logging the skip
    line, when its inputs are missing. A figure drawn from substitute heads also logs a ``WARNING:`` line naming
    them (`substitute_note`)."""
    name, build = FIGURES[key]
    out = build(res)
    if isinstance(out, str):
        log(f"{name}{SKIPPED}{out}")
        return None
    note = SUBSTITUTE_NOTES[key](res) if key in SUBSTITUTE_NOTES else None
    if note:
        log(f"WARNING: {name}: {note}")
    return out


def figure(res: Results, key: str, log: Callable[[str], None] = print) -> Figure | None:
    """`figure_and_table` without the table."""
    out = figure_and_table(res, key, log)
    return None if out is None else out[0]


def render_all(
    results: str | Path | Results,
    out: str | Path,
    only: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    sweeps: str | Path | None = None,
    fc_head: HeadRef | None = None,
    conv_head: HeadRef | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    close: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Render every figure and table the results allow into ``out``; returns the paths written.

    ``only``: keys of `FIGURES` and `TABLE_CAPTIONS` to render (default all); each figure's table is written beside
    it as ``<key>.csv``. ``close=False`` leaves the figures
    open (a notebook then shows them). Skipped items log one line each.
    """
    formats = check_formats(formats)
    res = results if isinstance(results, Results) else Results(results, models, sweeps, fc_head, conv_head)
    keys = list(only) if only else [*FIGURES, *TABLE_CAPTIONS]
    unknown = [k for k in keys if k not in FIGURES and k not in TABLE_CAPTIONS]
    if unknown:
        raise ValueError(f"unknown figure or table {unknown}; choose from {', '.join([*FIGURES, *TABLE_CAPTIONS])}")
    check_inputs(res)
    written: list[Path] = []
    for key in keys:
        if key in FIGURES:
            drawn = figure_and_table(res, key, log)
            if drawn is None:
                continue
            fig, data = drawn
            paths = save_figure(fig, out, key, formats) + write_table(data, Path(out) / key, parquet=False)
            if close:
                plt.close(fig)
        else:
            tab = table(res, key)
            if isinstance(tab, str):
                log(f"{key.replace('table', 'Table ')}{SKIPPED}{tab}")
                continue
            paths = write_table(tab, Path(out) / key, f"{TABLE_CAPTIONS[key]}\n\n{ablation.markdown_table(tab)}",
                                parquet=False)
        written += paths
        log(f"{FIGURES[key][0] if key in FIGURES else key.replace('table', 'Table ')}: "
            f"{', '.join(str(p) for p in paths)}")
    return written
