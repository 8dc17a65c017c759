"""The results registry declares what each analysis writes: checked against what a writer does, and the lists derived
from it (the files marking a model folder, `dhanalysis figures --help`) against it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dhanalysis.metrics import detections
from dhanalysis.results import MODEL_MARKERS, RESULTS, discover_models

from test_detections import make_dets, make_gt, write


def test_detections_declares_what_it_writes(tmp_path, monkeypatch):
    """Every table `compute_detections` writes, with a Parquet twin exactly where it asks for one, and its summary:
    the registry's files for the analysis (what restarting or overwriting deletes)."""
    asked: list[tuple[str, bool]] = []
    real = detections.write_table

    def spy(frame, stem, markdown=None, parquet=True):
        asked.append((Path(stem).name, parquet))
        return real(frame, stem, markdown, parquet)

    monkeypatch.setattr(detections, "write_table", spy)
    gt = make_gt(2, images=6, classes=2)
    gt_path, det_path = write(tmp_path, gt, make_dets(gt, 2))
    detections.compute_detections(gt_path, det_path, tmp_path / "out", replicates=0, progress=lambda s: None)
    written = {Path(name).with_suffix(".csv").name for name, _ in asked}
    twins = {Path(name).with_suffix(".parquet").name for name, parquet in asked if parquet}
    assert set(RESULTS["detections"].files) == written | twins | {"detections_summary.json"}
    # and on disk: exactly the declared files (the Parquet twins where pyarrow writes them), nothing undeclared
    on_disk = {p.name for p in (tmp_path / "out").iterdir()}
    declared = set(RESULTS["detections"].files)
    if importlib.util.find_spec("pyarrow") is None:
        declared = {f for f in declared if not f.endswith(".parquet")}
    assert on_disk == declared
    assert {f for f in RESULTS["detections"].files if f.endswith(".parquet")} == {"detections.parquet"}


def test_a_folder_is_a_models_by_its_analyses_files_not_by_architecture_csv(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "architecture.csv").write_text("block\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "pcc.csv").write_text("head\n")
    assert list(discover_models(tmp_path)) == ["b"]
    assert "architecture.csv" not in MODEL_MARKERS and {"config.json", "eval.csv", "pcc.csv"} <= set(MODEL_MARKERS)


def test_figures_help_lists_the_files_that_mark_a_model_folder(tmp_path, capsys):
    """`dhanalysis figures --help` names the registry's markers, and each one alone makes a folder a model's for
    the reader `figures` uses (architecture.csv does not)."""
    from dhanalysis.cli import main

    assert main(["figures", "--help"]) == 0
    shown = capsys.readouterr().out.split("A model folder holds any of:", 1)[1].split("\n\n", 1)[0]
    names = [n.strip(" .") for n in " ".join(shown.split()).split(",")]
    assert names == [m for m in MODEL_MARKERS if not m.endswith(".parquet")]
    for name in [*names, "architecture.csv"]:
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_text("x\n")
    assert set(discover_models(tmp_path)) == {n.replace(".", "_") for n in names}
