"""The tables the figures draw, computed from a results tree (`dhanalysis.results.ResultsTree`) by the analyses' own
functions, so that the figures layer only plots and every number in a figure is in the CSV written beside it.

- `class_difficulty`: the easy / medium / hard terciles of App. A.1 from a reference model's per-class AP;
- `curves`: the mean ± std curves of Figs. 2, 6, 7, A.1 and A.3 (`bin_summary` of the sliding-window statistics);
- `pcc_rows`: the PCCs of Figs. 3 and A.2: a model's ``pcc.csv`` as the PCC analysis wrote it, with the
  predefined-proposal rows it lacks (no ``pcc`` run, or no difficulty ranking) computed from its statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from dhanalysis.metrics.groups import assign_difficulty, difficulty_from_ap
from dhanalysis.probes.pcc import pcc_table
from dhanalysis.stats.moments import bin_summary
from dhanalysis.results import ResultsTree, pick_mode
from dhanalysis.vocab import PREDEFINED

HeadRef = tuple[str, str]  # (model name, head type)


def class_difficulty(res: ResultsTree) -> tuple[dict[int, str], str] | None:
    """(category_id -> easy/medium/hard, the reference model) ranked by per-class AP (App. A.1).

    The reference is the Single-FC model (the paper's FPN baseline) when it has per_class_ap.csv, else the first
    model that does; of several modes, its preferred (else best-AP) mode.
    """
    order = sorted(res.models.values(), key=lambda m: (m.variant != "single-fc", m.name))
    for m in order:
        per_class = res.per_class_ap(m.name)
        if per_class is None:
            continue
        if "mode" in per_class.columns and per_class["mode"].nunique() > 1:
            evals = res.eval(m.name)
            mode = pick_mode(evals, m.preferred_mode)["mode"] if evals is not None else per_class["mode"].iloc[0]
            per_class = per_class[per_class["mode"] == mode]
        return difficulty_from_ap(per_class), m.name
    return None


def curves(res: ResultsTree, refs: Iterable[HeadRef], group: str | None = None,
           difficulty: dict[int, str] | None = None) -> pd.DataFrame | None:
    """`bin_summary` of the given (model, head) curves, by ``group`` (``size``, or ``difficulty`` ranked by
    ``difficulty``) or over all objects; None when a curve has no statistics."""
    parts = []
    for model, head in refs:
        stats = res.stats(model)
        if stats is None or head not in set(stats["head"]):
            return None
        stats = stats[stats["head"] == head]
        if group == "difficulty":
            if difficulty is None:
                return None
            stats = assign_difficulty(stats, difficulty).dropna(subset=["difficulty"])
        by = ["model", "variant", "head"] + ([group] if group else [])
        summary = bin_summary(stats, by=by)
        parts.append(summary.rename(columns={group: "group"}) if group else summary.assign(group="all"))
    return pd.concat(parts, ignore_index=True) if parts else None


def pcc_rows(res: ResultsTree, refs: Iterable[HeadRef], difficulty: dict[int, str] | None = None
             ) -> pd.DataFrame | None:
    """PCC rows of the given heads: each model's ``pcc.csv`` as written, plus the predefined-proposal rows it lacks
    (a grouping or a measure) computed from its sliding-window statistics and object rows; with ``difficulty``, the
    difficulty rows are computed with that ranking (the one Fig. A.1 uses) whenever the statistics are there. A
    ``pcc.csv`` written before the alignment measures holds the pooled PCC alone (``measure`` pooled_pcc). Values
    only: figures draw no intervals, so none are drawn here."""
    parts = []
    for model, head in refs:
        stats, stored, objects = res.stats(model), res.pcc(model), res.objects(model)
        stored = stored[stored["head"] == head] if stored is not None else None
        if stored is not None and "measure" not in stored.columns:
            stored = stored.assign(measure="pooled_pcc")
        rows = []
        if stats is not None and head in set(stats["head"]):
            own = objects[objects["head"] == head].drop(columns="variant") if objects is not None else None
            table = pcc_table(stats[stats["head"] == head], difficulty=difficulty, objects=own, replicates=0)
            table = table.assign(variant=res.models[model].variant or "")
            if stored is not None:
                redo = (table["grouping"] == "difficulty") & (difficulty is not None)
                have = stored.loc[stored["proposal_set"] == PREDEFINED, ["grouping", "measure"]].drop_duplicates()
                known = table[["grouping", "measure"]].merge(have.assign(_have=True), how="left")["_have"]
                keep = redo | known.isna().to_numpy()
                redone = set(table.loc[redo, "grouping"])
                stored = stored[~((stored["proposal_set"] == PREDEFINED) & stored["grouping"].isin(redone))]
                table = table[keep]
            rows.append(table)
        if stored is not None:
            rows.append(stored)
        if rows:
            parts.append(pd.concat(rows, ignore_index=True))
    return pd.concat(parts, ignore_index=True) if parts else None
