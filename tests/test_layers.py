"""The package's floors: imports run one way (core ← data, model ← stats ← metrics ← engine ← probes ← figures ←
study ← cli), and the modules that read tables stay torch-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dhanalysis

ROOT = Path(dhanalysis.__file__).parent
# each folder's floor; a module may import its own floor and those below. Top-level modules are the core.
FLOORS = {"core": 0, "data": 1, "model": 1, "stats": 2, "metrics": 3, "engine": 4, "probes": 5, "figures": 6,
          "study": 7, "cli": 8}
ENTRY_POINTS = {"dhanalysis.__main__"}  # `python -m dhanalysis` runs the command line: the one import from the top


def folder_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else "core"


def imports_of(path: Path) -> set[str]:
    """Every dhanalysis module ``path`` imports, at the top or inside a function (``from dhanalysis import x``
    counts as ``dhanalysis.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("dhanalysis"):
            found |= ({f"dhanalysis.{a.name}" for a in node.names} if node.module == "dhanalysis" else {node.module})
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dhanalysis")}
    return found


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def upward_imports() -> list[str]:
    bad = []
    for module, path in modules().items():
        if module in ENTRY_POINTS or module == "dhanalysis":
            continue
        here = FLOORS[folder_of(module)]
        for dep in sorted(imports_of(path)):
            if dep != "dhanalysis" and FLOORS[folder_of(dep)] > here:
                bad.append(f"{module} ({folder_of(module)}) imports {dep} ({folder_of(dep)})")
    return bad


def test_every_folder_has_a_floor():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders - {"configs"} == set(FLOORS) - {"core"}


def test_no_module_imports_from_a_floor_above_its_own():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """A stats module that imported the probes would be caught: the check reads function-level imports too."""
    fake = tmp_path / "dhanalysis"
    (fake / "stats").mkdir(parents=True)
    (fake / "probes").mkdir()
    for folder in ("stats", "probes"):
        (fake / folder / "__init__.py").write_text("")
    (fake / "stats" / "leak.py").write_text("def f():\n    from dhanalysis.probes import harness\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    assert upward_imports() == ["dhanalysis.stats.leak (stats) imports dhanalysis.probes (probes)"]


TORCH_FREE = ("dhanalysis.vocab", "dhanalysis.results", "dhanalysis.folders", "dhanalysis.config", "dhanalysis.stats",
              "dhanalysis.metrics", "dhanalysis.figures")


@pytest.mark.parametrize("package", TORCH_FREE)
def test_torch_free_modules_stay_torch_free(package):
    """Reading and scoring results files needs no torch: importing every module of these packages loads none."""
    code = ("import importlib, pkgutil, sys\n"
            f"root = importlib.import_module({package!r})\n"
            "for m in pkgutil.iter_modules(getattr(root, '__path__', []), root.__name__ + '.'):\n"
            "    importlib.import_module(m.name)\n"
            "sys.exit('torch' in sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, f"importing {package} imported torch"


def test_the_command_line_starts_without_the_table_libraries():
    """Every command's parser is built from the results registry: importing the command line loads neither torch
    nor pandas / numpy (a command imports what it needs when it runs)."""
    code = "import sys, dhanalysis.cli\nsys.exit(any(m in sys.modules for m in ('torch', 'pandas', 'numpy')))\n"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "the command line's start-up got heavier"
