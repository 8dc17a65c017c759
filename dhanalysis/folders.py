"""Output folders: who owns one, resuming it, starting it again, and writing into it so that a kill never corrupts it.

Every command that writes a folder goes through here: training (``checkpoints/NAME``), evaluation and the analyses
(``results/NAME``), the analysis chunks and the synthetic dataset.

- **Atomic writes.** A temporary file beside the target, fsync, then ``os.replace``: readers see the old file or the
  whole new one, whenever the writer is killed. Tables (`write_table`) and JSON go through the same writer.
- **Identity.** A folder records what produced it: a model config (``config.json``, a checkpoint), an analysis key
  (``summary.json``'s ``run``, ``chunks/*/run.json``), the synthetic dataset's parameters. `differences` compares two
  such nested dicts key by key.
- **Claims.** `claim` compares the stored identity with the requested one: none stored, start; the same, resume;
  another, refuse with `FolderTaken` unless ``overwrite``, which deletes only the outputs that run owns. A claim also
  removes the temporary files that killed atomic writes left in the folder (`remove_temp_files`).
- **Output paths.** `check_writable_folder` and `check_writable_file` refuse, before any computation, an output that
  is a file where a folder is wanted (or the reverse), sits under a file, or lies in a folder this user cannot write.

Torch-free (torch is imported by `atomic_torch_save` only), so `figures` writes its tables here too.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dhanalysis.errors import DHError

if TYPE_CHECKING:
    import pandas as pd

try:  # POSIX: a writer holds a lock on its temporary file, so a cleaner can tell a live one from a leftover
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# ``.NAME.XXXXXXXX.tmp``: what `atomic_write_bytes` names its temporary file (tempfile's random part is 8 characters;
# any run of them is accepted, so a leftover of another length is recognised too)
TEMP_FILE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")
UNLOCKED_TEMP_AGE_S = 3600.0  # without file locks, a temporary file this old is taken for a leftover


# ------------------------------------------------------------------------------------------------ atomic writes
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader, and no kill, ever sees half of it.

    The temporary file is locked while it is written, so `remove_temp_files` never takes a live write for the
    leftover of a killed one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _locked_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.replace(tmp, path)  # while the lock, which goes with the close, still marks the file live
        if fcntl is None:
            os.replace(tmp, path)  # where an open file cannot be renamed (and a cleaner goes by age instead)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _locked_temp_file(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``, locked; one a cleaner removed between creation and lock is made again."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        _lock(fd, wait=True)
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def _lock(fd: int, wait: bool) -> bool | None:
    """Take an exclusive lock on ``fd``: True when held, False when another process holds it, None when this system
    or file system has no such locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def temp_files(folder: str | Path, target: str | None = None) -> list[Path]:
    """The files in ``folder`` named like `atomic_write_bytes`' temporary files (of the file ``target`` only, when
    given), sorted; nothing for a folder that does not exist."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        m = TEMP_FILE.match(name)
        if m and (target is None or m["target"] == target):
            found.append(Path(folder) / name)
    return sorted(found)


def remove_temp_files(folder: str | Path, target: str | None = None) -> list[Path]:
    """Delete the temporary files that killed atomic writes left in ``folder`` (of ``target`` only, when given);
    returns the paths removed.

    A SIGKILL during a write leaves ``.NAME.XXXXXXXX.tmp`` behind, as large as the file it was writing (a checkpoint:
    tens of MB), and nothing else would ever remove it. Only files of that pattern are touched, never a file another
    process is still writing: its lock shows it is live (without locks, only files older than an hour go).
    """
    removed = []
    for p in temp_files(folder, target):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            held = _lock(fd, wait=False)
            if held is False:
                continue
            if held is None and time.time() - os.fstat(fd).st_mtime < UNLOCKED_TEMP_AGE_S:
                continue
            if os.stat(p).st_ino == os.fstat(fd).st_ino and os.path.isfile(p):
                p.unlink()
                removed.append(p)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through the atomic writer (the whole file is serialised in memory first).

    Temporary files that killed saves of the same file left beside it go too: each is as large as the file (a
    checkpoint: tens of MB), and a file written outside a claimed folder (``--out model.pth``) has no claim to clean.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    remove_temp_files(Path(path).parent, Path(path).name)


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
    Every claim (resume or start) also removes the temporary files killed writes left in ``folder`` itself.
    """
    resumed = False
    if stored is not None:
        if not resume and not overwrite:
            raise FolderTaken(folder, f"{folder} already holds {what}", resumable=True)
        diff = differences(stored, identity)
        if diff and not overwrite:
            more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
            raise FolderTaken(folder, f"{folder} holds {what} of another model or configuration ({diff[0]}{more})")
        resumed = not diff and not restart
    if writer:
        remove_temp_files(folder)  # the folder is this run's now: what a killed write left in it goes
        if not resumed and (stored is not None or restart):  # restart also clears what a run killed before its record
            remove_paths(owned)
    return resumed


# ------------------------------------------------------------------------------------------------ output paths
def check_writable_folder(path: str | Path, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be made or written, before any computation (a command that finds out
    when it writes its first file has spent its whole run for nothing). Creates nothing; returns ``path``.

    The message names ``flag``, the command-line option the path came from, and how to fix it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DHError(f"{flag} {path} is a file, not a folder; choose a folder for {flag}")
    _check_creatable(path, path, flag)
    return path


def check_writable_file(path: str | Path, flag: str = "--out", example: str = "out.pth") -> Path:
    """Refuse an output file that cannot be written, before any computation: a folder in its place, a file among its
    parents, or a parent folder this user cannot write. Creates nothing; returns ``path``.

    ``example``: a file name that shows, in the message, what ``flag`` should name instead of a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise DHError(f"{flag} {path} is a folder, but {flag} names the file to write; give a file path such as "
                      f"{path / example}")
    _check_creatable(path.parent, path, flag)
    return path


def _check_creatable(folder: Path, path: Path, flag: str) -> None:
    """``folder`` exists as a writable folder, or its nearest existing parent is one (so it can be made)."""
    base = Path(os.path.abspath(folder))
    while not base.exists():
        if base.is_symlink():
            raise DHError(f"{flag} {path} cannot be made: {base} is a broken link; remove it or choose another {flag}")
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        raise DHError(f"{flag} {path} cannot be made: {base} is a file, not a folder; choose another {flag}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise DHError(f"{flag} {path} cannot be written: this user may not write in {base}; fix its permissions or "
                      f"choose another {flag}")
