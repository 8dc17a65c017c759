"""The results registry declares what each analysis writes: checked against what a writer does, and the lists derived
from it (the files marking a model folder, `dhanalysis figures --help`) against it."""

from __future__ import annotations

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
    assert {p.name for p in (tmp_path / "out").iterdir()} <= set(RESULTS["detections"].files)


def test_a_folder_is_a_models_by_its_analyses_files_not_by_architecture_csv(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "architecture.csv").write_text("block\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "pcc.csv").write_text("head\n")
    assert list(discover_models(tmp_path)) == ["b"]
    assert "architecture.csv" not in MODEL_MARKERS and {"config.json", "eval.csv", "pcc.csv"} <= set(MODEL_MARKERS)


def test_figures_help_lists_the_files_that_mark_a_model_folder():
    import dhanalysis.cli.figures as figures

    listed = " ".join(figures.__doc__.split("A model folder holds any of:", 1)[1].split())
    names = [n.strip(" .") for n in listed.split(",")]
    assert names == [m for m in MODEL_MARKERS if not m.endswith(".parquet")]
    assert "architecture.csv" not in figures.__doc__.split("A model folder holds any of:", 1)[0]
