"""The two ways the paper groups objects: by size (Fig. 2, Fig. 3) and by class difficulty (Appendix A.1).

Size is COCO's (`dhanalysis.vocab.SIZE_GROUPS`): small < 32², medium 32²–96², large ≥ 96² pixels of *annotation
area* (the ``area`` field COCOeval uses, in original image pixels), decided when the statistics are gathered.
Difficulty is decided later, at summary time, from each row's ``category_id``: the classes are ranked by the
per-class AP of a reference model and split into terciles, so a new reference needs no re-run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dhanalysis.errors import DHError
from dhanalysis.vocab import DIFFICULTY_GROUPS, SIZE_GROUPS, size_index

PER_CLASS_COLUMNS = ("model", "mode", "category_id", "category", "AP")

__all__ = ["SIZE_GROUPS", "DIFFICULTY_GROUPS", "size_index", "difficulty_from_ap", "load_difficulty",
           "assign_difficulty"]


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
    return difficulty_from_ap(table)


def assign_difficulty(stats: pd.DataFrame, difficulty: dict[int, str]) -> pd.DataFrame:
    """A copy of a table with a ``category_id`` column plus a ``difficulty`` column (NaN for unranked classes)."""
    out = stats.copy()
    out["difficulty"] = out["category_id"].map(difficulty)
    return out
