"""Every notebook runs top to bottom on fake results (nbclient, the venv's python3 kernel) and writes its figures;
notebooks are stored without outputs."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from fixtures_results import write_fake_results
from helpers import ROOT

NOTEBOOKS = {
    "sliding_window": ["fig2.png", "fig6.png", "fig7.png", "figA1.png", "figA3.png"],
    "correlation": ["fig3.png", "fig4.png", "figA2.png"],
    "ablations": ["fig8.png", "table1.md", "table2.md", "table3.md", "table5.md"],
    "architecture": ["fig5.png"],
}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_results(tmp_path_factory.mktemp("results"))


def run_notebook(name: str, results, out, monkeypatch) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count") for cell in nb.cells
               if cell.cell_type == "code"), f"{name}.ipynb is stored with outputs; clear them"
    monkeypatch.setenv("DHANALYSIS_RESULTS", str(results))
    monkeypatch.setenv("DHANALYSIS_FIGURES", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # "python3" resolves to this interpreter (jupyter_client runs a kernel whose argv says "python" with
    # sys.executable), so the kernel sees the venv's dhanalysis
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return nb


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_and_writes_its_figures(name, fake, tmp_path, monkeypatch):
    nb = run_notebook(name, fake, tmp_path, monkeypatch)
    for filename in NOTEBOOKS[name]:
        path = tmp_path / filename
        assert path.is_file() and path.stat().st_size > 100, f"{name}.ipynb did not write {filename}"
    assert "skipped" not in _stdout(nb)


def test_notebook_prints_the_skip_line_for_missing_inputs(tmp_path, monkeypatch):
    results = write_fake_results(tmp_path / "results", models=["synth-single-fc"], sweeps=False, architecture=False,
                                 parts=("eval",))
    nb = run_notebook("ablations", results, tmp_path / "out", monkeypatch)
    out = _stdout(nb)
    assert "Fig. 8 skipped: needs the fig8 sweep" in out and "Table 1 skipped: needs the table1 sweep" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table5.csv", "table5.md"]
