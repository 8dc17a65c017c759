"""Execute the notebooks in place and store their outputs, as they are committed (`make notebooks`).

Usage: ``python notebooks/execute.py [NOTEBOOK ...]`` (default: every ``notebooks/*.ipynb``). Each runs top to bottom
in a python3 kernel (this interpreter) started in ``notebooks/``. With ``DHANALYSIS_RESULTS`` unset they read the
shipped reproduction, ``docs/reproduction``; set it to execute them on another results folder. Figure files go to
``figures/notebooks/`` (``DHANALYSIS_FIGURES`` overrides it). A notebook whose cell fails is left unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parent / "docs" / "reproduction"
TIMEOUT = 300  # seconds per cell


def execute(path: Path) -> None:
    """Run one notebook from clean outputs and write it back with the new ones."""
    nb = nbformat.read(path, as_version=4)
    # record_timing=False: no per-cell timestamps, so re-executing unchanged results changes little in git
    NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute(cleanup_kc=True)
    nbformat.write(nb, path)


def _notebook(arg: str) -> Path:
    path = Path(arg)
    if not path.is_file() and (HERE / arg).with_suffix(".ipynb").is_file():
        path = (HERE / arg).with_suffix(".ipynb")  # a bare name: "findings"
    if not path.is_file():
        raise SystemExit(f"no notebook {arg}")
    return path.resolve()


def main(argv: list[str]) -> int:
    paths = [_notebook(a) for a in argv] or sorted(HERE.glob("*.ipynb"))
    results = os.environ.get("DHANALYSIS_RESULTS")
    if results is None and not SHIPPED.is_dir():
        print(f"{SHIPPED} does not exist: run `dhanalysis reproduce --ship docs/reproduction`, or set "
              "DHANALYSIS_RESULTS to another results folder", file=sys.stderr)
        return 1
    print(f"results: {results or SHIPPED}" + (" (DHANALYSIS_RESULTS)" if results else ""))
    # the kernel inherits this environment; an inherited MPLBACKEND=Agg would keep the figures out of the outputs
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    for path in paths:
        print(f"executing {path.name}", flush=True)
        try:
            execute(path)
        except CellExecutionError as err:
            print(f"{path.name} failed and was left unchanged:\n{err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
