"""The alignment measures: each against an independent computation (scipy per object, float64 numpy), and built cases
where the pooled PCC and the localisation measures must disagree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from dhanalysis.stats.bootstrap import replicate_counts
from dhanalysis.metrics.measures import (BIN_VALUES, MEASURES, NEAR_BEST, OBJECT_VALUES, measure_table,
                                          object_values, positive_bin, score_bins)
from dhanalysis.stats.moments import NUM_BINS
from dhanalysis.errors import DHError

COL = {name: i for i, name in enumerate(OBJECT_VALUES)}
DECOMPOSITION = ["curve_pcc", "explained_share", "within_bin"]


def boxes_on_objects(num_objects: int = 12, seed: int = 0, ties: bool = False):
    """(object, IoU, score) of boxes on several objects: scores follow IoU with noise; ``ties`` rounds both so that
    tie handling is exercised."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 60, num_objects)
    sizes[0], sizes[1] = 1, 3  # an object with one box, one with few
    group = np.repeat(np.arange(num_objects), sizes)
    x = rng.uniform(0, 1, len(group))
    s = np.clip(x * rng.uniform(-1, 1, num_objects)[group] + rng.normal(0, 0.3, len(group)), 0, 1)
    if ties:
        x, s = np.round(x, 1), np.round(s, 1)
    return group, x, s


def reference_rows(group: np.ndarray, x: np.ndarray, s: np.ndarray, positive: np.ndarray, num_objects: int):
    """Object rows computed one object at a time with scipy and plain numpy."""
    out = np.full((num_objects, len(OBJECT_VALUES)), np.nan)
    for k in range(num_objects):
        for offset, mask in ((0, group == k), (6, (group == k) & positive)):
            xs, ss = x[mask], s[mask]
            out[k, offset:offset + 6] = [len(xs), xs.sum(), (xs * xs).sum(), ss.sum(), (ss * ss).sum(), (xs * ss).sum()]
        mask = (group == k) & positive
        xs, ss = x[mask], s[mask]
        out[k, COL["n_pos"]] = len(xs)
        if len(xs) >= 2:
            if np.ptp(xs) > 0 and np.ptp(ss) > 0:
                out[k, COL["spearman"]] = sps.spearmanr(xs, ss)[0]
                out[k, COL["kendall"]] = sps.kendalltau(xs, ss)[0]  # tau-b
            top = ss == ss.max()
            out[k, COL["top_iou"]] = xs[top].mean()
            out[k, COL["best_iou"]] = xs.max()
        b = np.minimum(np.floor(x * NUM_BINS), NUM_BINS - 1)
        for j in range(NUM_BINS):
            mask = (group == k) & (b == j)
            xs, ss = x[mask], s[mask]
            out[k, [COL[f"bin{j}_{q}"] for q in ("n", "x", "s", "xs")]] = [len(xs), xs.sum(), ss.sum(), (xs * ss).sum()]
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_object_values_equal_scipy_per_object(ties):
    group, x, s = boxes_on_objects(ties=ties)
    positive = x >= 0.5
    got = object_values(torch.tensor(group), torch.tensor(x), torch.tensor(s), torch.tensor(positive), 12).numpy()
    want = reference_rows(group, x, s, positive, 12)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isfinite(want[:, COL["kendall"]]).sum() >= 8  # most objects measured: the comparison is not vacuous


def test_kendall_many_tied_scores_on_a_large_object():
    """One object of 5,000 boxes with scores on 30 levels (bf16-like ties): τ-b and ρ equal scipy's."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 1, 5000)
    s = np.round(x + rng.normal(0, 0.2, 5000), 1)
    got = object_values(torch.zeros(5000, dtype=torch.long), torch.tensor(x), torch.tensor(s),
                        torch.ones(5000, dtype=torch.bool), 1).numpy()[0]
    assert got[COL["kendall"]] == pytest.approx(sps.kendalltau(x, s)[0], rel=1e-9)
    assert got[COL["spearman"]] == pytest.approx(sps.spearmanr(x, s)[0], rel=1e-9)


def object_frame(group, x, s, image_of_object, positive_iou=0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(object rows, per-bin score moments) of boxes, as the analyses write them."""
    num = int(group.max()) + 1
    positive = np.minimum((x * NUM_BINS).astype(int), NUM_BINS - 1) >= positive_bin(positive_iou)
    rows = object_values(torch.tensor(group), torch.tensor(x), torch.tensor(s), torch.tensor(positive), num).numpy()
    objects = pd.DataFrame(rows, columns=list(OBJECT_VALUES)).assign(image_id=image_of_object, head="fc")
    b = np.minimum((x * NUM_BINS).astype(int), NUM_BINS - 1)
    bins = pd.DataFrame({"head": "fc", "bin": b, "n": 1.0, "sum_x": x, "sum_x2": x * x, "sum_s": s, "sum_s2": s * s,
                         "sum_xs": x * s}).groupby(["head", "bin"], as_index=False).sum()
    return objects, bins


def test_measure_table_equals_numpy_and_the_decomposition_adds_up():
    group, x, s = boxes_on_objects(40, seed=1)
    objects, bins = object_frame(group, x, s, np.arange(40) // 4)
    table = measure_table(score_bins(bins), objects, ["head"], replicates=50).set_index("measure")
    assert list(table.index) == list(MEASURES)
    assert table.loc["pooled_pcc", "pcc"] == pytest.approx(np.corrcoef(x, s)[0, 1], rel=1e-9)
    pos = x >= 0.5
    assert table.loc["positive_pcc", "pcc"] == pytest.approx(np.corrcoef(x[pos], s[pos])[0, 1], rel=1e-9)
    assert table.loc["positive_pcc", "n"] == pos.sum()
    ref = reference_rows(group, x, s, pos, 40)
    rho = ref[:, COL["spearman"]]
    assert table.loc["object_spearman", "pcc"] == pytest.approx(np.nanmean(rho), rel=1e-9)
    assert table.loc["object_spearman", "n"] == np.isfinite(rho).sum()
    assert table.loc["object_kendall", "pcc"] == pytest.approx(np.nanmean(ref[:, COL["kendall"]]), rel=1e-9)
    gap = ref[:, COL["best_iou"]] - ref[:, COL["top_iou"]]
    assert table.loc["nms_gap", "pcc"] == pytest.approx(np.nanmean(gap), rel=1e-9)
    assert table.loc["nms_near_best", "pcc"] == pytest.approx(np.mean(gap[np.isfinite(gap)] <= NEAR_BEST), rel=1e-9)
    # the decomposition, against numpy on the raw boxes: pooled = curve · sqrt(share) + within-bin rest
    b = np.minimum((x * NUM_BINS).astype(int), NUM_BINS - 1)
    m = pd.Series(s).groupby(b).transform("mean").to_numpy()
    curve = np.corrcoef(x, m)[0, 1]
    share = m.var() / s.var()
    assert table.loc["curve_pcc", "pcc"] == pytest.approx(curve, rel=1e-9)
    assert table.loc["explained_share", "pcc"] == pytest.approx(share, rel=1e-9)
    total = curve * np.sqrt(share) + table.loc["within_bin", "pcc"]
    assert total == pytest.approx(table.loc["pooled_pcc", "pcc"], rel=1e-9)
    # intervals around the values for the bootstrapped measures, and an interval for every measure (the
    # decomposition's are checked against a bootstrap of the raw boxes below: a percentile interval of a biased
    # statistic such as curve_pcc need not hold its value on 10 images)
    for name in ("pooled_pcc", "positive_pcc", "object_spearman", "object_kendall", "nms_gap"):
        assert table.loc[name, "ci_low"] <= table.loc[name, "pcc"] <= table.loc[name, "ci_high"], name
    assert (table["ci_low"] < table["ci_high"]).all()


def decomposition_by_hand(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(curve_pcc, explained_share, within_bin) of boxes in float64 numpy: the per-bin mean score m, corr(x, m),
    var(m) / var(s), and the pooled within-bin covariance over σ_x σ_s."""
    b = np.minimum(np.floor(x * NUM_BINS), NUM_BINS - 1)
    m = pd.Series(s).groupby(b).transform("mean").to_numpy()
    xb = pd.Series(x).groupby(b).transform("mean").to_numpy()
    within = np.mean((x - xb) * (s - m)) / (x.std() * s.std())
    return np.array([np.corrcoef(x, m)[0, 1], m.var() / s.var(), within])


def test_decomposition_from_object_rows_equals_the_one_from_bins():
    """Object rows alone (their per-bin sums) give the decomposition the bin sums give, per group."""
    parts = []
    for head, seed in (("fc", 2), ("conv", 3)):
        group, x, s = boxes_on_objects(30, seed=seed)
        objects, bins = object_frame(group, x, s, np.arange(30) // 5)
        parts.append((objects.assign(head=head), bins.assign(head=head)))
    objects = pd.concat([o for o, _ in parts], ignore_index=True)
    bins = pd.concat([b for _, b in parts], ignore_index=True)
    from_rows = measure_table(None, objects, ["head"], replicates=0).set_index(["head", "measure"])
    from_bins = measure_table(score_bins(bins), None, ["head"]).set_index(["head", "measure"])
    for head in ("fc", "conv"):
        got, want = from_rows.loc[head].loc[DECOMPOSITION], from_bins.loc[head].loc[DECOMPOSITION]
        np.testing.assert_allclose(got["pcc"].to_numpy(float), want["pcc"].to_numpy(float), rtol=1e-10, atol=1e-13)
        assert list(got["n"]) == list(want["n"]) and want["pcc"].notna().all()
    # and both equal numpy on the raw boxes
    group, x, s = boxes_on_objects(30, seed=2)
    np.testing.assert_allclose(from_rows.loc["fc"].loc[DECOMPOSITION, "pcc"].to_numpy(float),
                               decomposition_by_hand(x, s), rtol=1e-9, atol=1e-12)


def test_decomposition_interval_equals_a_bootstrap_of_the_raw_boxes():
    """The same image draws (`replicate_counts`, same seed), each replicate's terms recomputed from the raw boxes with
    every image's boxes repeated by its count: the percentile intervals are the table's."""
    images, replicates, seed = 9, 40, 7
    group, x, s = boxes_on_objects(36, seed=4)
    image_of_object = np.arange(36) // 4
    objects, bins = object_frame(group, x, s, image_of_object)
    table = measure_table(score_bins(bins), objects, ["head"], replicates=replicates, seed=seed).set_index("measure")
    counts = replicate_counts(images, replicates, seed).astype(np.int64)
    box_image = image_of_object[group]
    values = []
    for row in counts:
        pick = np.concatenate([np.tile(np.flatnonzero(box_image == i), c) for i, c in enumerate(row)])
        values.append(decomposition_by_hand(x[pick], s[pick]))
    values = np.array(values)
    assert np.isfinite(values).all()
    lo, hi = np.percentile(values, [2.5, 97.5], axis=0)
    got = table.loc[DECOMPOSITION]
    np.testing.assert_allclose(got["ci_low"].to_numpy(float), lo, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["ci_high"].to_numpy(float), hi, rtol=1e-9, atol=1e-12)
    assert (hi - lo > 1e-4).all()  # the draws vary: the comparison is not vacuous


def test_object_rows_without_bin_sums_still_give_every_other_interval():
    """Rows written before the per-bin sums (an old folder read by the figures): the decomposition keeps its values
    from the bins and has no interval; every other measure is as with today's rows."""
    group, x, s = boxes_on_objects(40, seed=1)
    objects, bins = object_frame(group, x, s, np.arange(40) // 4)
    today = measure_table(score_bins(bins), objects, ["head"], replicates=30).set_index("measure")
    old = measure_table(score_bins(bins), objects.drop(columns=list(BIN_VALUES)), ["head"],
                        replicates=30).set_index("measure")
    assert old.loc[DECOMPOSITION, "ci_low"].isna().all() and old.loc[DECOMPOSITION, "ci_high"].isna().all()
    pd.testing.assert_series_equal(old["pcc"], today["pcc"])
    rest = [m for m in MEASURES if m not in DECOMPOSITION]
    pd.testing.assert_frame_equal(old.loc[rest], today.loc[rest])


def recogniser(strong: bool, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes on 60 objects, IoU uniform on [0, 1]. Strong recogniser: every box that overlaps an object well enough
    scores high, background-like boxes low, but among the positives the score is noise. Weak recogniser: scores sit
    in a narrow band whatever the box, yet among an object's positives they rise exactly with IoU, and the
    background-like boxes score as high as the best positives."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(60), 80)
    x = rng.uniform(0, 1, len(group))
    if strong:
        s = np.where(x >= 0.5, rng.uniform(0.8, 1.0, len(x)), np.clip(x * 0.6 + rng.normal(0, 0.05, len(x)), 0, 1))
    else:
        s = np.where(x >= 0.5, 0.40 + 0.05 * x, 0.46 - 0.05 * x)
    return group, x, s


def test_measures_separate_recognition_from_localisation_ranking():
    tables = {}
    for strong in (True, False):
        group, x, s = recogniser(strong, seed=5)
        objects, bins = object_frame(group, x, s, np.arange(60) // 3)
        tables[strong] = measure_table(score_bins(bins), objects, ["head"], replicates=100).set_index("measure")
    strong, weak = tables[True], tables[False]
    # the pooled PCC prefers the strong recogniser, and its interval is clear of the weak one's
    assert strong.loc["pooled_pcc", "pcc"] > 0.7 and weak.loc["pooled_pcc", "pcc"] < 0
    # every localisation measure says the opposite
    assert abs(strong.loc["positive_pcc", "pcc"]) < 0.1 < 0.9 < weak.loc["positive_pcc", "pcc"]
    for name in ("object_spearman", "object_kendall"):
        assert abs(strong.loc[name, "pcc"]) < 0.15 and weak.loc[name, "pcc"] == pytest.approx(1.0)
        assert strong.loc[name, "ci_high"] < weak.loc[name, "ci_low"]
    assert weak.loc["nms_gap", "pcc"] == pytest.approx(0.0) and strong.loc["nms_gap", "pcc"] > 0.1
    assert weak.loc["nms_near_best", "pcc"] == 1.0 > 0.5 > strong.loc["nms_near_best", "pcc"]


def test_old_statistics_without_bins_are_refused_in_one_line():
    old = pd.DataFrame({"head": ["fc"], "n": [3], "sum_x": [1.0], "sum_x2": [1.0], "sum_s": [1.0], "sum_s2": [1.0],
                        "sum_xs": [1.0]})
    with pytest.raises(DHError, match="overwrite") as info:
        score_bins(old)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [0.0, 1.0, 0.52, -0.5])
def test_positive_threshold_must_be_a_bin_edge(bad):
    with pytest.raises(DHError, match="multiple of 0.05"):
        positive_bin(bad)
    assert positive_bin(0.7) == 14


# ------------------------------------------------------------------------------------------------ a results file
def test_results_file_measures_per_score_field(tmp_path):
    """det_measures.csv: pooled PCC is det_alignment's Pearson; the object measures are scipy's per ground truth on
    the detections matched to it; a folder written before the measures is refused in one line."""
    from test_detections import make_dets, make_gt, write

    from dhanalysis.metrics import detections
    from dhanalysis.folders import FolderTaken

    gt = make_gt(1)
    dets = make_dets(gt, 1)
    rng = np.random.default_rng(0)
    for d in dets:
        d["other"] = float(rng.uniform())
    gt_path, det_path = write(tmp_path, gt, dets)
    done = detections.compute_detections(gt_path, det_path, tmp_path / "out", score_fields=["other"], replicates=20,
                                         progress=lambda s: None)
    table, got = done.tables["detections.csv"], done.tables["det_measures.csv"]
    assert set(got["score_field"]) == {"score", "other"} and set(got["grouping"]) == {"all", "size", "class"}
    align = done.tables["det_alignment.csv"]
    for field in ("score", "other"):
        rows = got[(got["score_field"] == field) & (got["grouping"] == "all")].set_index("measure")
        pearson = align[(align["score_field"] == field) & (align["grouping"] == "all")]["pearson"].item()
        assert rows.loc["pooled_pcc", "pcc"] == pytest.approx(pearson, abs=1e-9)
        rho, tau, gaps = [], [], []
        on = table[(table["gt"] >= 0) & (table["iou"] >= 0.5)]
        for _, part in on.groupby("gt"):
            if len(part) >= 2:
                x, s = part["iou"].to_numpy(), part[field].to_numpy()
                if np.ptp(x) > 0 and np.ptp(s) > 0:
                    rho.append(sps.spearmanr(x, s)[0])
                    tau.append(sps.kendalltau(x, s)[0])
                gaps.append(x.max() - x[s == s.max()].mean())
        assert len(gaps) > 0, "the generated detections should put several positives on some objects"
        assert rows.loc["object_spearman", "n"] == len(rho)
        assert rows.loc["object_spearman", "pcc"] == pytest.approx(np.mean(rho) if rho else np.nan, nan_ok=True)
        assert rows.loc["object_kendall", "pcc"] == pytest.approx(np.mean(tau) if tau else np.nan, nan_ok=True)
        assert rows.loc["nms_gap", "pcc"] == pytest.approx(np.mean(gaps))
    # a folder from before the measures (its record has no positive_iou) is refused unless overwrite
    summary = tmp_path / "out" / "detections_summary.json"
    record = pd.read_json(summary, typ="series").to_dict()
    record["run"] = {k: v for k, v in record["run"].items() if k != "positive_iou"}
    summary.write_text(pd.Series(record).to_json())
    with pytest.raises(FolderTaken, match="before the alignment measures") as info:
        detections.compute_detections(gt_path, det_path, tmp_path / "out", score_fields=["other"], replicates=20,
                                      progress=lambda s: None)
    assert "overwrite" in str(info.value) and "\n" not in str(info.value)
    # so is one whose object rows had no per-bin sums (measures format 1: no interval for the decomposition)
    record["run"] = {k: v for k, v in done.summary["run"].items() if k != "measures_format"}
    summary.write_text(pd.Series(record).to_json())
    with pytest.raises(FolderTaken, match="measures format 1, written before format 2") as info:
        detections.compute_detections(gt_path, det_path, tmp_path / "out", score_fields=["other"], replicates=20,
                                      progress=lambda s: None)
    assert "overwrite" in str(info.value) and "\n" not in str(info.value)
    # and the decomposition of a results file has its intervals
    decomposition = got[got["measure"].isin(DECOMPOSITION) & (got["grouping"] == "all")]
    assert len(decomposition) == 6 and decomposition[["ci_low", "ci_high"]].notna().all().all()


def test_fig3_draws_every_measure_pooled_first_and_old_tables_as_before():
    import matplotlib

    matplotlib.use("Agg")
    from dhanalysis.figures.correlation import measures_of, plot_fig3

    rows = []
    for measure, value in (("positive_pcc", 0.3), ("pooled_pcc", 0.7), ("object_kendall", 0.2)):
        for head in ("fc", "conv"):
            for size in ("small", "medium", "large"):
                rows.append({"model": "m", "head": head, "proposal_set": "predefined", "grouping": "size",
                             "group": size, "mode": "", "measure": measure, "n": 10, "pcc": value})
            rows.append({"model": "m", "head": head, "proposal_set": "rpn", "grouping": "all", "group": "all",
                         "mode": "", "measure": measure, "n": 10, "pcc": value / 2})
    table = pd.DataFrame(rows)
    assert measures_of(table) == ["pooled_pcc", "positive_pcc", "object_kendall"]
    fig = plot_fig3(table)
    assert len(fig.axes) == 6 and fig.axes[0].get_ylabel() == "PCC, all boxes (paper)"
    first_row = [p.get_height() for p in fig.axes[0].patches]
    assert first_row == pytest.approx([0.7] * 6)  # the paper's pooled bars come first
    old = table[table["measure"] == "pooled_pcc"].drop(columns="measure")
    assert measures_of(old) == ["pooled_pcc"] and len(plot_fig3(old).axes) == 2
