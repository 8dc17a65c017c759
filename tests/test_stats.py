"""The statistics table: means, stds and PCCs from its sums equal numpy / scipy on raw values; tables add up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr

from dhanalysis.metrics.groups import assign_difficulty, difficulty_from_ap, load_difficulty, size_index
from dhanalysis.probes.pcc import PCC_COLUMNS, PCC_STATS_COLUMNS, match_any, match_same_class, pcc_table
from dhanalysis.probes.scoring import AdaptiveBatch
from dhanalysis.stats.moments import (MOMENTS, STATS_COLUMNS, add_moments, bin_summary, cell_index, iou_bin,
                                       merge_stats, new_sums, pcc_from_moments, pcc_from_stats, stats_frame)
from dhanalysis.errors import DHError

HEADS = ["fc", "conv"]
CAT_IDS, CAT_NAMES = [3, 7, 11], ["a", "b", "c"]
RTOL = 1e-9


def raw_values(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Raw windows with IoU x, a score s correlated with x and a regressed IoU r; conv-head has no classifier."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n)
    return pd.DataFrame({
        "label": rng.integers(1, 4, n),
        "area": rng.choice([100.0, 2000.0, 20000.0], n),
        "x": x,
        "s": np.clip(x + rng.normal(0, 0.3, n), 0, 1).astype(np.float32).astype(np.float64),
        "r": np.clip(0.5 + 0.5 * x + rng.normal(0, 0.1, n), 0, 1),
    })


def accumulate(raw: pd.DataFrame) -> pd.DataFrame:
    sums = new_sums(len(HEADS), len(CAT_IDS))
    x = torch.tensor(raw["x"].to_numpy())
    cell = cell_index(torch.tensor(raw["label"].to_numpy()), size_index(torch.tensor(raw["area"].to_numpy())), x)
    add_moments(sums[0], cell, x, torch.tensor(raw["s"].to_numpy()), torch.tensor(raw["r"].to_numpy()))
    add_moments(sums[1], cell, x, None, torch.tensor(raw["r"].to_numpy()))
    return stats_frame(sums, HEADS, "m", CAT_IDS, CAT_NAMES)


def with_keys(raw: pd.DataFrame) -> pd.DataFrame:
    out = raw.copy()
    out["bin"] = iou_bin(torch.tensor(raw["x"].to_numpy())).numpy()
    out["size"] = np.array(["small", "medium", "large"])[size_index(torch.tensor(raw["area"].to_numpy())).numpy()]
    out["category_id"] = np.array(CAT_IDS)[raw["label"] - 1]
    return out


def test_table_columns_and_counts():
    raw = raw_values()
    stats = accumulate(raw)
    assert list(stats.columns) == list(STATS_COLUMNS)
    for head in HEADS:
        assert stats.loc[stats["head"] == head, "n"].sum() == len(raw)
    assert (stats.loc[stats["head"] == "conv", "n_s"] == 0).all()
    assert (stats.loc[stats["head"] == "fc", "n_s"] == stats.loc[stats["head"] == "fc", "n"]).all()


def test_bin_mean_and_std_equal_numpy():
    raw = with_keys(raw_values())
    summary = bin_summary(accumulate(raw_values()), by=["head", "size"])
    for (head, size, b), row in summary.set_index(["head", "size", "bin"]).iterrows():
        part = raw[(raw["size"] == size) & (raw["bin"] == b)]
        assert row["n"] == len(part)
        np.testing.assert_allclose(row["iou_mean"], part["x"].mean(), rtol=RTOL)
        np.testing.assert_allclose(row["reg_iou_mean"], part["r"].mean(), rtol=RTOL)
        np.testing.assert_allclose(row["reg_iou_std"], part["r"].std(ddof=0), rtol=1e-7)
        if head == "fc":
            np.testing.assert_allclose(row["score_mean"], part["s"].mean(), rtol=RTOL)
            np.testing.assert_allclose(row["score_std"], part["s"].std(ddof=0), rtol=1e-7)
        else:
            assert np.isnan(row["score_mean"]) and np.isnan(row["score_std"])


def test_pcc_equals_scipy_overall_by_size_and_by_difficulty():
    raw = with_keys(raw_values())
    stats = accumulate(raw_values())
    overall = pcc_from_stats(stats, ["model", "head"])
    assert overall["head"].tolist() == ["fc"]  # the conv-head has no classifier: no row
    np.testing.assert_allclose(overall["pcc"].iloc[0], pearsonr(raw["x"], raw["s"])[0], rtol=RTOL)
    assert overall["n"].iloc[0] == len(raw)
    for size, row in pcc_from_stats(stats, ["head", "size"]).set_index("size").iterrows():
        part = raw[raw["size"] == size]
        np.testing.assert_allclose(row["pcc"], pearsonr(part["x"], part["s"])[0], rtol=RTOL)
    difficulty = {3: "easy", 7: "medium"}  # class 11 unranked: left out of the difficulty groups
    by_diff = pcc_from_stats(assign_difficulty(stats, difficulty), ["head", "difficulty"]).set_index("difficulty")
    assert sorted(by_diff.index) == ["easy", "medium"]
    for cat, group in difficulty.items():
        part = raw[raw["category_id"] == cat]
        np.testing.assert_allclose(by_diff.loc[group, "pcc"], pearsonr(part["x"], part["s"])[0], rtol=RTOL)
    reg = pcc_from_stats(stats, ["head"], y="reg_iou").set_index("head")
    np.testing.assert_allclose(reg.loc["conv", "pcc"], pearsonr(raw["x"], raw["r"])[0], rtol=RTOL)


def test_merging_two_shards_equals_one_table():
    raw = raw_values()
    whole = accumulate(raw)
    merged = merge_stats(accumulate(raw.iloc[:2500]), accumulate(raw.iloc[2500:]))
    assert len(merged) == len(whole)
    keys = ["head", "category_id", "size", "bin"]
    a, b = whole.sort_values(keys).reset_index(drop=True), merged.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[list(STATS_COLUMNS[:6])], b[list(STATS_COLUMNS[:6])])
    np.testing.assert_allclose(a[list(MOMENTS)].to_numpy(float), b[list(MOMENTS)].to_numpy(float), rtol=1e-12)


def test_pcc_from_moments_degenerate_cases():
    assert np.isnan(pcc_from_moments(1, 0.5, 0.25, 0.5, 0.25, 0.25))
    assert np.isnan(pcc_from_moments(3, 1.5, 0.75, 3.0, 3.0, 1.5))  # constant y
    np.testing.assert_allclose(pcc_from_moments(2, 1.0, 1.0, 1.0, 1.0, 1.0), 1.0)


def test_rpn_detection_pcc_from_streaming_sums_equals_scipy():
    rng = np.random.default_rng(1)
    rows, raw = [], {}
    for head, which, size in [("fc", "rpn", "small"), ("fc", "rpn", "large"), ("fc", "detections", "small")]:
        x = rng.uniform(0, 1, 300)
        s = np.clip(x + rng.normal(0, 0.2, 300), 0, 1)
        raw[(head, which, size)] = (x, s)
        mode = "fc" if which == "detections" else ""
        b = np.minimum((x * 20).astype(int), 19)
        for k in np.unique(b):
            xb, sb = x[b == k], s[b == k]
            rows.append(["m", head, which, mode, 1, "a", size, k, len(xb), xb.sum(), (xb * xb).sum(), sb.sum(),
                         (sb * sb).sum(), (xb * sb).sum()])
    pcc_stats = pd.DataFrame(rows, columns=list(PCC_STATS_COLUMNS))
    table = pcc_table(None, pcc_stats)
    assert list(table.columns) == list(PCC_COLUMNS)
    rpn = table[(table["proposal_set"] == "rpn") & (table["grouping"] == "all")].set_index("measure")
    x = np.concatenate([raw[("fc", "rpn", "small")][0], raw[("fc", "rpn", "large")][0]])
    s = np.concatenate([raw[("fc", "rpn", "small")][1], raw[("fc", "rpn", "large")][1]])
    np.testing.assert_allclose(rpn.loc["pooled_pcc", "pcc"], pearsonr(x, s)[0], rtol=RTOL)
    assert rpn.loc["pooled_pcc", "n"] == 600
    pos = x >= 0.5
    np.testing.assert_allclose(rpn.loc["positive_pcc", "pcc"], pearsonr(x[pos], s[pos])[0], rtol=RTOL)
    det = table[(table["proposal_set"] == "detections") & (table["grouping"] == "size")].iloc[0]
    assert det["group"] == "small" and det["mode"] == "fc"
    assert set(table["grouping"]) == {"all", "size", "class"}
    # shards of the sums table merge by addition
    doubled = merge_stats(pcc_stats, pcc_stats)
    assert len(doubled) == len(pcc_stats) and doubled["n"].sum() == 1800
    assert doubled["sum_x"].sum() == pytest.approx(2 * pcc_stats["sum_x"].sum())


def test_matching_rules():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 70.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], [80.0, 80.0, 90.0, 90.0], [52.0, 52.0, 70.0, 70.0]])
    iou, best = match_any(boxes, gt)
    assert best.tolist() == [0, 1, 1]  # the disjoint box takes the nearest centre
    assert iou[1] == 0 and iou[0] == pytest.approx(0.5)
    iou_c, _ = match_same_class(boxes, torch.tensor([2, 1, 2]), gt, torch.tensor([1, 2]))
    assert iou_c[0] == 0 and iou_c[1] == 0 and iou_c[2] > 0.8


def test_difficulty_terciles_and_file_selection(tmp_path):
    per_class = pd.DataFrame({"model": "fpn", "mode": "fc", "category_id": [1, 2, 3, 4, 5, 6, 7, 8],
                              "category": list("abcdefgh"), "AP": [0.9, 0.1, 0.5, 0.7, 0.3, np.nan, 0.6, 0.2]})
    groups = difficulty_from_ap(per_class)
    assert groups == {1: "easy", 4: "easy", 7: "easy", 3: "medium", 5: "medium", 8: "hard", 2: "hard"}
    path = tmp_path / "per_class_ap.csv"
    two = pd.concat([per_class, per_class.assign(mode="conv", AP=per_class["AP"][::-1].to_numpy())])
    two.to_csv(path, index=False)
    with pytest.raises(DHError, match=r"holds several modes \(conv, fc\); pick one \(mode=\.\.\.\)"):
        load_difficulty(path)
    assert load_difficulty(path, mode="fc") == groups
    with pytest.raises(DHError, match="does not exist"):
        load_difficulty(tmp_path / "nope.csv")


def test_adaptive_batch_halves_on_out_of_memory():
    calls = []

    def fn(start, stop):
        calls.append(stop - start)
        if stop - start > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return list(range(start, stop))

    batcher = AdaptiveBatch(32, floor=4)
    out = batcher.map(fn, 50)
    assert [i for part in out for i in part] == list(range(50))
    assert batcher.size == 8 and calls[:3] == [32, 16, 8]

    def always(start, stop):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    with pytest.raises(DHError, match="out of memory even at batch size 4"):
        AdaptiveBatch(32, floor=4).map(always, 10)
    with pytest.raises(ValueError):  # other errors are bugs, not memory: re-raised untouched
        AdaptiveBatch(8).map(lambda a, b: (_ for _ in ()).throw(ValueError("bug")), 4)


def test_summary_functions_need_no_torch():
    """(COCO's size groups are checked against COCOeval in tests/test_vocab.py.)"""
    import subprocess
    import sys

    code = ("import sys; from dhanalysis.stats import bin_summary, pcc_from_stats; from dhanalysis.probes import pcc_table; "
            "from dhanalysis.metrics import assign_difficulty; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
