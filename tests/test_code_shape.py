"""The package's shape rule: no function is over 60 lines (a long function is a concept asking for its own name).

Measured on the syntax tree: ``end_lineno - lineno + 1`` of each function node (the ``def`` line to the last line,
docstring included, decorators not), methods and nested functions as well. Declarative tables are module-level
assignments, not functions, so they are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dhanalysis

ROOT = Path(dhanalysis.__file__).parent
MAX_LINES = 60


def long_functions(path: Path, root: Path = ROOT.parent, limit: int = MAX_LINES) -> list[tuple[int, str]]:
    """``(lines, "path/from/root.py:line qualified.name")`` of every function in ``path`` over ``limit`` lines."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}."
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = child.end_lineno - child.lineno + 1
                if lines > limit:
                    found.append((lines, f"{path.relative_to(root)}:{child.lineno} {name[:-1]}"))
            visit(child, name)

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return found


def test_the_measure_counts_docstrings_and_nested_functions(tmp_path):
    """The rule's own measure on a constructed module: a 61-line function is reported (its docstring counts, its
    decorator does not), a 60-line one is not, a long nested function is reported under its qualified name."""
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    source = (f"@decorator\ndef exactly_60():\n    \"\"\"Docstring.\"\"\"\n{body}\n\n\n"
              f"def sixty_one():\n    \"\"\"Doc\n    string.\"\"\"\n{body}\n\n\n"
              f"class Holder:\n    def outer(self):\n        def inner():\n"
              + "\n".join(f"            y{i} = {i}" for i in range(60)) + "\n")
    path = tmp_path / "shape.py"
    path.write_text(source)
    found = long_functions(path, tmp_path)
    assert [name for _, name in found] == ["shape.py:64 sixty_one", "shape.py:128 Holder.outer",
                                           "shape.py:129 Holder.outer.inner"]
    assert [lines for lines, _ in found] == [61, 62, 61]


def test_no_function_is_over_60_lines():
    """Every function, method and nested function of every module of the package, each one over 60 lines named."""
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 50  # the walk found the package
    long = [entry for path in files for entry in long_functions(path)]
    assert not long, "functions over 60 lines (split each into named parts):\n" + "\n".join(
        f"  {lines} lines: {name}" for lines, name in sorted(long, reverse=True))
