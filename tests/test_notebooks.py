"""Every notebook runs top to bottom on fake results and on the shipped reproduction (nbclient, the venv's python3
kernel) and writes its figures; notebooks are committed executed, with no errors among their stored outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from dhanalysis.vocab import DETECTIONS_DIR
from fixtures_results import DETECTORS, write_fake_results
from helpers import ROOT

pytestmark = pytest.mark.slow

NOTEBOOKS = {
    "sliding_window": ["fig2.png", "fig6.png", "fig7.png", "figA1.png", "figA3.png"],
    "correlation": ["fig3.png", "fig4.png", "figA2.png"],
    "ablations": ["fig8.png", "table1.md", "table2.md", "table3.md", "table5.md"],
    "architecture": ["fig5.png"],
    "findings": [],
    # the study's detections/ folder: each model's figures, and the comparison's, in a folder of its own
    "detections": [f"{DETECTIONS_DIR}/{name}/{key}.png" for name in DETECTORS
                   for key in ("det-alignment", "det-tide", "det-reliability", "det-measures")]
                  + [f"{DETECTIONS_DIR}/{'-vs-'.join(DETECTORS)}/det-compare.png"],
}
SHIPPED = ROOT / "docs" / "reproduction"
FAKE_FINDINGS = pd.DataFrame({
    "claim": ["pcc-fc-over-conv", "reg-conv-over-fc", "fig8-peak"],
    "section": ["§3.2, Fig. 3", "§3.3, Fig. 2", "§5.2, Fig. 8 (d)"],
    "statement": ["the fc-head's score correlates more with IoU", "the conv-head regresses better",
                  "the best Double-Head-Ext has λ_fc = 0.7, λ_conv = 0.8"],
    "measure": ["PCC_fc − PCC_conv", "IoU_conv − IoU_fc", "λ pair of the highest AP"],
    "paper": ["> 0", "> 0", "(0.7, 0.8): 40.3"],
    "ours": [0.12, -0.01, 31.5],
    "ci_low": [0.05, -0.04, float("nan")],
    "ci_high": [0.19, 0.02, float("nan")],
    "verdict": ["holds", "inconclusive", "peak at (0.7, 0.8)"],
    "protocol": ["synthetic"] * 3,
    "n_images": [40, 40, 0],
})


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    results = write_fake_results(tmp_path_factory.mktemp("results"), detections=True)
    FAKE_FINDINGS.to_csv(results / "findings.csv", index=False)
    return results


def run_notebook(name: str, results: Path | None, out: Path, monkeypatch) -> nbformat.NotebookNode:
    """Execute ``name`` from cleared outputs on ``results`` (None: the notebook's default, the shipped reproduction)."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:  # notebooks are committed executed; run them from scratch
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    if results is None:
        monkeypatch.delenv("DHANALYSIS_RESULTS", raising=False)
    else:
        monkeypatch.setenv("DHANALYSIS_RESULTS", str(results))
    monkeypatch.setenv("DHANALYSIS_FIGURES", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # "python3" resolves to this interpreter (jupyter_client runs a kernel whose argv says "python" with
    # sys.executable), so the kernel sees the venv's dhanalysis
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb) if o.get("output_type") == "stream")


def _shown(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook shows as text: printed lines and the plain-text and HTML forms of displayed values."""
    data = [o.get("data", {}) for o in _outputs(nb)]
    return _stdout(nb) + "".join(d.get("text/plain", "") + d.get("text/html", "") for d in data)


def _errors(nb: nbformat.NotebookNode) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in _outputs(nb) if o.get("output_type") == "error"]


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_and_writes_its_figures(name, fake, tmp_path, monkeypatch):
    nb = run_notebook(name, fake, tmp_path, monkeypatch)
    for filename in NOTEBOOKS[name]:
        path = tmp_path / filename
        assert path.is_file() and path.stat().st_size > 100, f"{name}.ipynb did not write {filename}"
    assert "skipped" not in _stdout(nb)
    if name == "findings":
        shown = _shown(nb)
        assert all(v in shown for v in FAKE_FINDINGS["verdict"]) and "the conv-head regresses better" in shown
        assert "findings.csv" not in _stdout(nb)
    if name == "detections":  # each model's AP and the pair's AP difference, as the analyses wrote them
        shown = _shown(nb)
        for model in DETECTORS:
            summary = json.loads((fake / DETECTIONS_DIR / model / "detections_summary.json").read_text())
            assert f"{summary['coco']['AP']:.3f}" in shown, model
        ap = pd.read_csv(fake / DETECTIONS_DIR / "-vs-".join(DETECTORS) / "compare.csv").set_index("metric").loc["AP"]
        assert f"{ap['difference']:.3f} [{ap['ci_low']:.3f}, {ap['ci_high']:.3f}]" in shown


def test_notebook_prints_the_skip_line_for_missing_inputs(tmp_path, monkeypatch):
    results = write_fake_results(tmp_path / "results", models=["synth-single-fc"], sweeps=False, architecture=False,
                                 parts=("eval",))
    nb = run_notebook("ablations", results, tmp_path / "out", monkeypatch)
    out = _stdout(nb)
    assert "Fig. 8 skipped: needs the fig8 sweep" in out and "Table 1 skipped: needs the table1 sweep" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table5.csv", "table5.md"]


def test_findings_notebook_says_what_writes_a_missing_findings_csv(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    nb = run_notebook("findings", tmp_path / "results", tmp_path / "out", monkeypatch)
    lines = _stdout(nb).splitlines()
    assert len(lines) == 1 and "no findings.csv" in lines[0] and "`dhanalysis reproduce` writes it" in lines[0]


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebooks_execute_on_the_shipped_reproduction(name, tmp_path, monkeypatch):
    if not (SHIPPED / "findings.csv").is_file():
        pytest.skip(f"no shipped reproduction ({SHIPPED.relative_to(ROOT)}/findings.csv); "
                    "`dhanalysis reproduce --ship docs/reproduction` writes it")
    if name == "detections" and not (SHIPPED / DETECTIONS_DIR).is_dir():
        pytest.skip(f"the shipped reproduction has no {DETECTIONS_DIR}/ yet ({SHIPPED.relative_to(ROOT)}); "
                    "`dhanalysis reproduce --ship docs/reproduction` writes it")
    nb = run_notebook(name, None, tmp_path, monkeypatch)
    assert not _errors(nb), f"{name}.ipynb: {_errors(nb)}"
    if name == "findings":
        verdicts = set(pd.read_csv(SHIPPED / "findings.csv")["verdict"].dropna().astype(str))
        assert any(v in _shown(nb) for v in verdicts), "findings.ipynb shows no verdict of the shipped findings.csv"
    else:
        assert not re.search(r"^0 model\(s\)", _stdout(nb), re.M), f"{name}.ipynb found no model in {SHIPPED}"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_notebook_has_no_error_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert not _errors(nb), f"{path.name} is stored with errors: {_errors(nb)}"
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    if any(c.get("outputs") or c.get("execution_count") for c in code):
        # executed in one go, top to bottom (`make notebooks`), not cell by cell by hand
        counts = [c.get("execution_count") for c in code]
        assert counts == list(range(1, len(code) + 1)), f"{path.name} was not executed top to bottom: {counts}"
