"""Output folders: who owns one, resuming it, starting it again, and writing into it so that a kill never corrupts it.

Every command that writes a folder goes through here: training (``checkpoints/NAME``), evaluation and the analyses
(``results/NAME``), the analysis chunks and the synthetic dataset.

- **Atomic writes.** A temporary file beside the target, fsync, then ``os.replace``: readers see the old file or the
  whole new one, whenever the writer is killed. Tables (`write_table`) and JSON go through the same writer.
- **Identity.** A folder records what produced it: a model config (``config.json``, a checkpoint), an analysis key
  (``summary.json``'s ``run``, ``chunks/*/run.json``), the synthetic dataset's parameters. `differences` compares two
  such nested dicts key by key.
- **Claims.** `claim` compares the stored identity with the requested one: none stored, start; the same, resume;
  another, refuse with `FolderTaken` unless ``overwrite``, which deletes only the outputs that run owns.

Torch-free (torch is imported by `atomic_torch_save` only), so `figures` writes its tables here too.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dhanalysis.errors import DHError

if TYPE_CHECKING:
    import pandas as pd


# ------------------------------------------------------------------------------------------------ atomic writes
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader, and no kill, ever sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through the atomic writer (the whole file is serialised in memory first)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_table(frame: pd.DataFrame, stem: str | Path, markdown: str | None = None,
                parquet: bool = True) -> list[Path]:
    """``stem.csv``, plus ``stem.md`` holding ``markdown`` when given and ``stem.parquet`` when ``parquet`` and pyarrow
    is installed; all atomic. Returns the paths written, the Markdown first."""
    stem = Path(stem)
    paths = []
    if markdown is not None:
        paths.append(stem.with_suffix(".md"))
        atomic_write_text(paths[-1], markdown)
    paths.append(stem.with_suffix(".csv"))
    atomic_write_text(paths[-1], frame.to_csv(index=False))
    if parquet and importlib.util.find_spec("pyarrow") is not None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        paths.append(stem.with_suffix(".parquet"))
        atomic_write_bytes(paths[-1], buffer.getvalue())
    return paths


def remove_paths(paths: Sequence[Path]) -> None:
    """Delete the given files and folders (only those: a claim never touches anything it does not own)."""
    for p in paths:
        p = Path(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


# ------------------------------------------------------------------------------------------------ identity
class FolderTaken(DHError):
    """A folder holds outputs this run cannot take over: another run's (``problem`` names the first difference), a
    damaged record, or, when resuming was not asked for, any earlier run (``resumable``).

    The message words the remedy with the library's parameters; the command line words it with its flags.
    """

    def __init__(self, folder: str | Path, problem: str, resumable: bool = False):
        self.folder, self.problem, self.resumable = Path(folder), problem, resumable
        remedy = ("pass resume=True to continue it or overwrite=True to start again" if resumable
                  else "pass overwrite=True to replace them, or write to another folder")
        super().__init__(f"{problem}; {remedy}")


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a damaged file is a `FolderTaken` (starting again replaces it)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FolderTaken(path.parent, f"{path} is not valid JSON") from None


def read_identity(path: str | Path) -> Any | None:
    """The identity a JSON record holds (its ``run`` entry when it has one, else the whole content); None when the
    record does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    stored = read_json(path)
    return stored.get("run", stored) if isinstance(stored, dict) else stored


def differences(stored: Any, wanted: Any, ignore: Sequence[str] = (), prefix: str = "") -> list[str]:
    """Every key where two nested dicts differ, as ``key: stored vs wanted`` (dotted keys, sorted; [] when equal).

    Top-level keys in ``ignore`` are left out; a key only one side has reads ``absent`` on the other.
    """
    if not (isinstance(stored, dict) and isinstance(wanted, dict)):
        return [] if stored == wanted else [f"{prefix or 'value'}: {stored!r} vs {wanted!r}"]
    found = []
    for key in sorted(set(stored) | set(wanted), key=str):
        if not prefix and key in ignore:
            continue
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in stored:
            found.append(f"{where}: absent vs {wanted[key]!r}")
        elif key not in wanted:
            found.append(f"{where}: {stored[key]!r} vs absent")
        else:
            found += differences(stored[key], wanted[key], prefix=where)
    return found


def claim(
    folder: str | Path,
    identity: Any,
    stored: Any | None,
    owned: Sequence[Path] = (),
    overwrite: bool = False,
    restart: bool = False,
    resume: bool = True,
    what: str = "results",
    writer: bool = True,
) -> bool:
    """Make ``folder`` hold the run ``identity``; True when it already does (resume), False when the run starts.

    ``stored`` is the identity the folder's record holds (None: no record yet). A folder of another run is refused
    with `FolderTaken` naming the first difference, unless ``overwrite``; ``restart`` starts this same run again too.
    With ``resume=False`` any earlier run is refused unless ``overwrite`` (``stored`` need then only be non-None).
    Starting again deletes ``owned``, the files and folders this run writes (nothing else in ``folder``), on the
    ``writer`` process only: under torchrun rank 0 deletes, every rank checks, and the caller waits at a barrier.
    """
    if stored is not None:
        if not resume and not overwrite:
            raise FolderTaken(folder, f"{folder} already holds {what}", resumable=True)
        diff = differences(stored, identity)
        if diff and not overwrite:
            more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
            raise FolderTaken(folder, f"{folder} holds {what} of another model or configuration ({diff[0]}{more})")
        if not diff and not restart:
            return True
    if writer and (stored is not None or restart):  # restart also clears what a run killed before its record left
        remove_paths(owned)
    return False
