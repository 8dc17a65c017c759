"""The two ways the paper groups objects: by size (Fig. 2, Fig. 3) and by class difficulty (Appendix A.1).

Size is COCO's (`dhanalysis.vocab.SIZE_GROUPS`): small < 32², medium 32²–96², large ≥ 96² pixels of *annotation
area* (the ``area`` field COCOeval uses, in original image pixels), decided when the statistics are gathered.
Difficulty is decided later, at summary time, from each row's ``category_id``: the classes are ranked by the
per-class AP of a reference model and split into terciles, so a new reference needs no re-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dhanalysis.errors import DHError
from dhanalysis.vocab import DIFFICULTY_GROUPS, SIZE_GROUPS, size_index

PER_CLASS_COLUMNS = ("model", "mode", "category_id", "category", "AP")

__all__ = ["SIZE_GROUPS", "DIFFICULTY_GROUPS", "size_index", "difficulty_from_ap", "load_difficulty",
           "check_difficulty_classes", "assign_difficulty"]


def difficulty_from_ap(per_class: pd.DataFrame) -> dict[int, str]:
    """category_id -> easy / medium / hard: terciles of the classes ranked by AP, highest AP first (App. A.1).

    ``per_class`` has one row per class with ``category_id`` and ``AP``. Classes whose AP is NaN (no ground truth in
    the evaluated split) are left out. Ties are broken by category id so the split is deterministic; when the count
    is not a multiple of three the easier groups take the extra class (``numpy.array_split``).
    """
    df = per_class.dropna(subset=["AP"])
    if df["category_id"].duplicated().any():
        raise DHError("the per-class AP table lists a category twice; select one model and mode first")
    order = df.sort_values(["AP", "category_id"], ascending=[False, True])["category_id"].to_numpy()
    return {int(c): g for ids, g in zip(np.array_split(order, 3), DIFFICULTY_GROUPS) for c in ids}


def load_difficulty(path: str | Path, model: str | None = None, mode: str | None = None) -> dict[int, str]:
    """Difficulty groups from a ``per_class_ap.csv`` written by ``dhanalysis eval``.

    The file may hold several models and inference modes; ``model`` / ``mode`` pick one and may be left out when
    the file holds only one. The paper's reference is the FPN baseline (a single-fc model).
    """
    path = Path(path)
    if not path.is_file():
        raise DHError(f"per-class AP table {path} does not exist; evaluate the reference model first (it writes "
                      "per_class_ap.csv)")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DHError(f"per-class AP table {path} is not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in ("category_id", "AP") if c not in table.columns]
    if missing:
        raise DHError(f"per-class AP table {path} lacks column(s) {', '.join(missing)}; expected "
                      f"{', '.join(PER_CLASS_COLUMNS)}")
    for column, wanted in (("model", model), ("mode", mode)):
        if column not in table.columns:
            continue
        values = sorted(table[column].astype(str).unique())
        if wanted is not None:
            if wanted not in values:
                raise DHError(f"{column} {wanted} is not in {path}; it holds: {', '.join(values)}")
            table = table[table[column].astype(str) == wanted]
        elif len(values) > 1:
            raise DHError(f"{path} holds several {column}s ({', '.join(values)}); pick one ({column}=...)")
    if table.empty:
        raise DHError(f"per-class AP table {path} has no per-class AP rows")
    ids = pd.to_numeric(table["category_id"], errors="coerce")
    bad = ids.isna() | (ids != ids.round())
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0])
        raise DHError(f"per-class AP table {path}: line {table.index[line] + 2} has category_id "
                      f"{table['category_id'].iloc[line]!r}, not an integer id; fix the file or re-run dhanalysis eval")
    ap = pd.to_numeric(table["AP"], errors="coerce")
    bad = ap.isna() & table["AP"].notna()
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0])
        raise DHError(f"per-class AP table {path}: line {table.index[line] + 2} has AP {table['AP'].iloc[line]!r}, "
                      "not a number; fix the file or re-run dhanalysis eval")
    table = table.assign(category_id=ids.astype(np.int64), AP=ap)
    if ap.isna().all():
        raise DHError(f"per-class AP table {path} has no class with an AP (every AP is empty), so it ranks no class; "
                      "evaluate the reference model on a split with ground-truth boxes")
    return difficulty_from_ap(table)


def check_difficulty_classes(difficulty: dict[int, str], category_ids: Sequence[int], source: str | Path,
                             dataset: str | Path) -> None:
    """Refuse a ranking that names none of the dataset's classes: every row would be unranked and the difficulty
    groups would vanish from the tables without a word."""
    if set(difficulty) & {int(c) for c in category_ids}:
        return
    ranked, present = _few(sorted(difficulty)), _few(sorted(category_ids))
    raise DHError(f"{source} ranks category ids {ranked} but {dataset} has {present}; none match, so there would be "
                  "no difficulty group: give the per_class_ap.csv of a model evaluated on this dataset")


def _few(ids: Sequence[int], shown: int = 5) -> str:
    """A short list of ids for a one-line message."""
    head = ", ".join(str(i) for i in ids[:shown])
    return f"{head}, ... ({len(ids)} in all)" if len(ids) > shown else head


def assign_difficulty(stats: pd.DataFrame, difficulty: dict[int, str]) -> pd.DataFrame:
    """A copy of a table with a ``category_id`` column plus a ``difficulty`` column (NaN for unranked classes)."""
    out = stats.copy()
    out["difficulty"] = out["category_id"].map(difficulty)
    return out
