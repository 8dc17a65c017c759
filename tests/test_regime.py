"""The regime pilot's tables (dhanalysis/study/regime.py) without training: the standard errors of their differences
come from one set of image draws shared by every run (identical detections differ by exactly nothing on every draw)
and equal pycocotools' AP on the drawn images; runs evaluated on other images are refused; the shipped page's regime
section is read from the tables, shows the measurement on the most images and is written only into a page shipping
wrote; the command's help names what each pilot trains. Training and evaluating the pilot is
tests/test_reproduce.py's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dhanalysis.errors import DHError
from dhanalysis.stats.bootstrap import positions_of, replicate_counts
from dhanalysis.study.regime import ap_replicates, regime_tables
from dhanalysis.vocab import EVALUATED_IMAGES_JSON, detections_file

from test_bootstrap import as_coco, cocoeval_ap, fake_coco


def drawn_ap(coco, dets: list[dict], ids: list[int], positions: np.ndarray) -> float:
    """pycocotools' AP on a dataset holding the images at ``positions`` (copies included) as new images."""
    gt = {"images": [], "annotations": [], "categories": coco.dataset["categories"]}
    copies = []
    for new_id, pos in enumerate(positions, 1):
        gt["images"].append({"id": new_id, "width": 200, "height": 200})
        gt["annotations"] += [{**a, "id": len(gt["annotations"]) + k + 1, "image_id": new_id} for k, a in
                              enumerate(a for a in coco.dataset["annotations"] if a["image_id"] == ids[pos])]
        copies += [{**d, "image_id": new_id} for d in dets if d["image_id"] == ids[pos]]
    return cocoeval_ap(as_coco(gt), copies, list(range(1, len(positions) + 1)))[0]


@pytest.fixture
def pilot(tmp_path):
    """A regime results tree: Single-FC 64 wide and Single-Conv at 2 and 4 iterations on one ground truth. Single-FC's
    detections are the same at both schedules; Single-Conv at 4 lost one image's detections and rescored the rest."""
    coco, dets = fake_coco(seed=3, images=12)
    ids = sorted(coco.getImgIds())
    rng = np.random.default_rng(0)
    rescored = [{**d, "score": float(rng.uniform(0, 1))} for d in dets if d["image_id"] != ids[4]]
    runs = {("single-fc-d64", 2): dets, ("single-fc-d64", 4): dets, ("single-conv", 2): dets,
            ("single-conv", 4): rescored}
    rows = []
    for (run, it), found in runs.items():
        folder = tmp_path / "regime" / f"it{it}" / run
        folder.mkdir(parents=True)
        mode = "fc" if run.startswith("single-fc") else "conv"
        (folder / detections_file(mode)).write_text(json.dumps(found))
        (folder / EVALUATED_IMAGES_JSON).write_text(json.dumps({"image_ids": ids}))
        ap = cocoeval_ap(coco, found, ids)
        rows.append({"trunk": "single-fc", "run": run, "variant": run.rsplit("-d", 1)[0], "iterations": it,
                     "fc_dim": 64 if mode == "fc" else None, "split": "val", "seed": 0, "mode": mode, "AP": ap[0],
                     "AP50": ap[1]})
    gt = tmp_path / "instances_val.json"
    gt.write_text(json.dumps(coco.dataset))
    return pd.DataFrame(rows).astype({"fc_dim": "Int64"}), tmp_path / "regime", gt, coco, runs, ids


def test_standard_errors_are_paired_and_equal_pycocotools_on_the_drawn_images(pilot):
    frame, results, gt, coco, runs, ids = pilot
    reps = ap_replicates(frame, results, gt, replicates=12, seed=7)
    convergence, gaps = regime_tables(frame, reps)
    conv = convergence.set_index(["run", "iterations"])
    # the same detections at both schedules: zero on every shared draw (separate draws per run would not be)
    assert conv.loc[("single-fc-d64", 2), "delta_se_images"] == 0.0
    assert np.isnan(conv.loc[("single-conv", 4), "delta_se_images"])  # the longest schedule measures nothing
    # the reference: pycocotools on each draw's images, the same draws
    draws = [positions_of(r) for r in replicate_counts(len(ids), 12, seed=7)]
    ref = {key: np.array([drawn_ap(coco, dets, ids, d) for d in draws]) for key, dets in runs.items()}
    want = 100 * np.std(ref[("single-conv", 4)] - ref[("single-conv", 2)], ddof=1)
    assert want > 0.5 and conv.loc[("single-conv", 2), "delta_se_images"] == pytest.approx(want, abs=1e-9)
    gap = gaps.set_index("iterations")["gap_AP_se_images"]
    assert gap[2] == 0.0  # Single-FC and Single-Conv at 2 found the same boxes
    assert gap[4] == pytest.approx(100 * np.std(ref[("single-fc-d64", 4)] - ref[("single-conv", 4)], ddof=1),
                                   abs=1e-9)
    # the estimates themselves are what they were without replicates
    plain = regime_tables(frame)
    pd.testing.assert_frame_equal(convergence.drop(columns="delta_se_images"), plain[0])
    pd.testing.assert_frame_equal(gaps.drop(columns="gap_AP_se_images"), plain[1])


def test_runs_evaluated_on_other_images_are_refused(pilot):
    frame, results, gt, *_ = pilot
    other = results / "it4" / "single-conv" / EVALUATED_IMAGES_JSON
    other.write_text(json.dumps({"image_ids": json.loads(other.read_text())["image_ids"][:-1]}))
    with pytest.raises(DHError, match="2 different image sets"):
        ap_replicates(frame, results, gt, replicates=4)


def write_tables(pilot, folder):
    """The pilot's three tables, with standard errors, written to ``folder`` as `run_regime` writes them."""
    frame, results, gt, *_ = pilot
    convergence, gaps = regime_tables(frame, ap_replicates(frame, results, gt, replicates=8))
    folder.mkdir(parents=True)
    for name, table in (("regime.csv", frame.assign(images=12)), ("regime_convergence.csv", convergence),
                        ("regime_gaps.csv", gaps)):
        table.to_csv(folder / name, index=False)
    return frame, convergence, gaps


def test_shipped_regime_section_is_read_from_the_tables(pilot, tmp_path):
    from dhanalysis.study.ship import regime_section

    frame, convergence, gaps = write_tables(pilot, tmp_path / "regime-val12")
    text = regime_section(tmp_path / "regime-val12", schedule=2)
    assert "on 12 validation images" in text and "2 → 4" in text
    for run, part in frame.groupby("run"):
        line = next(ln for ln in text.splitlines() if ln.startswith(run + " "))
        assert line.split()[1:3] == [f"{100 * a:.1f}" for a in part.sort_values("iterations")["AP"]]
        row = convergence[(convergence["run"] == run) & (convergence["iterations"] == 2)].iloc[0]
        assert f"{row.delta_points:+.2f} ± {row.delta_se_images:.2f}" in line
        assert line.split()[-1] == ("yes" if abs(row.delta_points) <= 0.3 else "no")
    for r in gaps[gaps["iterations"] == 2].itertuples():
        assert f"fc {r.fc_dim} {r.gap_AP_points:+.2f} ± {r.gap_AP_se_images:.2f}" in text


def test_ship_regime_rewrites_only_the_page_ship_wrote_and_shows_the_most_images(pilot, tmp_path):
    from dhanalysis.cli.reproduce import ship_regime
    from dhanalysis.study.ship import SHIPPED_TITLE, regime_folder

    write_tables(pilot, tmp_path / "work" / "regime-val12")
    write_tables(pilot, tmp_path / "work" / "regime")
    dest = tmp_path / "docs"
    (dest / "regime-val4").mkdir(parents=True)  # an older, smaller measurement already shipped
    for name in ("regime.csv", "regime_convergence.csv", "regime_gaps.csv"):
        (dest / "regime-val4" / name).write_text((tmp_path / "work" / "regime" / name).read_text())
    (dest / "README.md").write_text(f"{SHIPPED_TITLE}\n\nold page\n")
    shipped = ship_regime(tmp_path / "work" / "regime-val12", dest)
    assert shipped[-1] == dest / "README.md" and "## The regime, on val" in (dest / "README.md").read_text()
    assert "on 12 validation images" in (dest / "README.md").read_text()
    assert regime_folder(dest) == dest / "regime-val12"
    ship_regime(tmp_path / "work" / "regime", dest)  # fewer images: the page keeps showing the most
    assert regime_folder(dest) == dest / "regime-val12"
    (dest / "README.md").write_text("# my own notes\n")  # a page ship did not write is left alone
    assert len(ship_regime(tmp_path / "work" / "regime", dest)) == 3
    assert (dest / "README.md").read_text() == "# my own notes\n"


def test_regime_help_names_what_each_pilot_trains():
    """`reproduce --regime`'s help is built from the pilots themselves: every schedule, fc width and variant each one
    trains is named, so changing a pilot changes its help (a hand-written list once went stale)."""
    from dhanalysis.cli import build_parser
    from dhanalysis.study.regime import REGIMES, regime_runs

    sub = next(a for a in build_parser("reproduce")._actions if a.dest == "command").choices["reproduce"]
    help_text = next(a for a in sub._actions if a.dest == "regime").help
    assert list(next(a for a in sub._actions if a.dest == "regime").choices) == list(REGIMES)
    for name, plan in REGIMES.items():
        said = help_text.split(f"'{name}'", 1)[1].split("; '", 1)[0].lower()
        for it in sorted({*plan.schedules, *plan.variant_schedules}):
            assert f"{it:,}" in said
            for run, overrides, _ in regime_runs(plan, it):
                assert (f" {overrides['model.head.fc_dim']}" if "model.head.fc_dim" in overrides else run) in said
