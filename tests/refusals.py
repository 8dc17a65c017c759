"""The harness of the bad-input suite (tests/test_bad_input_*.py): a command given a bad input is refused with exit
code 2, exactly one line on stderr (``dhanalysis: error: ...``), no traceback, and every watched path unchanged.

`refused` runs the CLI in this process (what the console script runs, minus the interpreter start-up), snapshots the
watched files and folders before the call (path, size and SHA-256 of every file; the set of entries) and compares
after it, so a refusal that writes, deletes or truncates anything fails the case.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dhanalysis.cli import main


def snapshot(*paths: Path) -> dict[str, str]:
    """{path: digest} of every file under ``paths`` (folders recursively) and a marker for every folder, so an added,
    removed or changed entry shows; a path that does not exist is recorded as absent."""
    out: dict[str, str] = {}
    for root in map(Path, paths):
        if not root.exists():
            out[str(root)] = "absent"
            continue
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            if p.is_dir():
                out[str(p)] = "folder"
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p)] = "other"
    return out


def refused(argv: list[str], capsys, *watch: Path) -> str:
    """Run ``dhanalysis argv``; assert exit 2, one stderr line with the CLI's prefix and no traceback, and every
    path in ``watch`` unchanged. Returns the message after the prefix, for the case to check its words."""
    before = snapshot(*watch)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("dhanalysis: error: "), err
    assert snapshot(*watch) == before, f"{argv} changed what it watched"
    return lines[0][len("dhanalysis: error: "):]
