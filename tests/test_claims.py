"""The claims' rows from constructed evidence with a known answer: every claim is a signed difference of statistics of
per-image sums, averaged over the seeds its models share; a "for every λ pair" claim reports its weakest pair and a
magnitude row whose verdict asks whether the interval lies above the paper's size; the dose-response table lines the
differences up against the fc width. The references are float64 recomputations from the raw (IoU, score, regressed
IoU) points the sums were made of."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dhanalysis.errors import DHError
from dhanalysis.metrics.resampled_ap import CocoMatches
from dhanalysis.stats.bootstrap import t_interval, t_p_value
from dhanalysis.stats.moments import MOMENTS, NUM_BINS
from dhanalysis.study import claims as C
from dhanalysis.study.evidence import Estimate, Evidence, ImageSums, findings_table, verdict
from dhanalysis.study.plan import SINGLE_CONV_RUN
from dhanalysis.vocab import SIZE_GROUPS

N_IMAGES = 12
REPLICATES = 40


# ----------------------------------------------------------------------------------------- constructed evidence
def head_points(rng: np.random.Generator, slope: float, noise: float, reg_gain: float) -> list[tuple]:
    """Per image the raw windows of one head: IoU x, score s (``slope`` · x + noise), regressed IoU r, size group."""
    out = []
    for _ in range(N_IMAGES):
        n = int(rng.integers(30, 60))
        x = rng.uniform(0.01, 0.99, n)
        s = slope * x + rng.normal(0, noise, n)
        r = x + reg_gain + rng.normal(0, 0.05, n)
        out.append((x, s, r, rng.integers(0, len(SIZE_GROUPS), n)))
    return out


def window_sums(points: list[tuple], head: str, spatial: dict | None = None,
                rank: np.ndarray | None = None) -> ImageSums:
    """`ImageSums` of one head's windows (one class), its moments put in their size group and IoU bin by hand."""
    window = np.zeros((N_IMAGES, 1, 1, len(SIZE_GROUPS), NUM_BINS, len(MOMENTS)))
    for i, (x, s, r, g) in enumerate(points):
        one = np.ones_like(x)
        cols = np.stack([one, one, one, x, x * x, s, s * s, x * s, r, r * r, x * r], axis=1)
        np.add.at(window[i, 0, 0], (g, np.minimum((x * NUM_BINS).astype(int), NUM_BINS - 1)), cols)
    sums = ImageSums(image_ids=list(range(1, N_IMAGES + 1)), window_heads=[head], window=window, window_rank=rank)
    if spatial is not None:
        sums.spatial, sums.objects = spatial["maps"], spatial["objects"]
    return sums


def pooled(points: list[tuple], value: str, keep=lambda x: np.ones_like(x, bool), size: int | None = None):
    """The raw values of every image's windows, pooled: (x, value) where ``keep(x)`` and in ``size`` (None: all)."""
    xs, vs = [], []
    for x, s, r, g in points:
        mask = keep(x) & ((g == size) if size is not None else True)
        xs.append(x[mask])
        vs.append({"s": s, "r": r}[value][mask])
    return np.concatenate(xs), np.concatenate(vs)


def pcc(points, keep=lambda x: np.ones_like(x, bool), size=None) -> float:
    return float(np.corrcoef(*pooled(points, "s", keep, size))[0, 1])


def mean_of(points, value: str, from_iou: float) -> float:
    return float(pooled(points, value, lambda x: x >= from_iou)[1].mean())


def spatial_maps(rng: np.random.Generator, level: float, cells: int = 4) -> dict:
    """Per image cosine-similarity sums of one head's output cells, off-diagonal around ``level``."""
    objects = rng.integers(1, 5, N_IMAGES).astype(np.float64)
    maps = {}
    for name in ("conv_output", "conv_output_pre_relu", "fc_output"):
        m = rng.uniform(level - 0.1, level + 0.1, (N_IMAGES, cells, cells)) * objects[:, None, None]
        maps[name] = m
    return {"maps": maps, "objects": objects}


def offdiagonal(spatial: dict, name: str) -> float:
    """Mean off-diagonal cosine over all objects, recomputed: Σ off-diagonal / Σ objects · cells · (cells − 1)."""
    maps = spatial["maps"][name]
    cells = maps.shape[-1]
    off = sum(float(m.sum() - np.trace(m)) for m in maps)
    return off / float((spatial["objects"] * cells * (cells - 1)).sum())


@pytest.fixture(scope="module")
def world():
    """Two seeds of Single-FC (score follows IoU), Single-Conv (it barely does, regresses better) and their untrained
    heads (spatial maps only); the raw points and maps are kept for the references."""
    rng = np.random.default_rng(5)
    seeds = [3, 4]
    raw = {"single-fc": [head_points(rng, 1.0, 0.1, 0.02) for _ in seeds],
           "single-conv": [head_points(rng, 0.2, 0.3, 0.10) for _ in seeds]}
    spatial = {"single-fc": [spatial_maps(rng, 0.3) for _ in seeds],
               "single-conv": [spatial_maps(rng, 0.7) for _ in seeds],
               "single-fc-init": [spatial_maps(rng, 0.5) for _ in seeds],
               "single-conv-init": [spatial_maps(rng, 0.6) for _ in seeds]}
    ranks = {m: [np.abs(rng.normal(2, 1, (N_IMAGES, 1, len(SIZE_GROUPS), 2))) for _ in seeds]
             for m in ("single-fc", "single-conv")}
    head = {"single-fc": "fc", "single-conv": "conv"}
    sums = {m: [window_sums(raw[m][k], head[m], spatial[m][k], ranks[m][k]) for k in range(len(seeds))] for m in raw}
    for m in ("single-fc-init", "single-conv-init"):
        sums[m] = []
        for k in range(len(seeds)):
            s = ImageSums(image_ids=list(range(1, N_IMAGES + 1)))
            s.spatial, s.objects = spatial[m][k]["maps"], spatial[m][k]["objects"]
            sums[m].append(s)
    evidence = Evidence(seeds, sums, {}, replicates=REPLICATES, seed=1)
    return {"seeds": seeds, "raw": raw, "spatial": spatial, "ranks": ranks, "evidence": evidence}


def rows_by_claim(rows: list[dict]) -> dict[str, dict]:
    return {r["claim"]: r for r in rows}


def per_seed(fn, seeds) -> np.ndarray:
    return np.array([fn(k) for k in range(len(seeds))])


# ----------------------------------------------------------------------------------------- analysis claims
def test_window_claims_are_fc_minus_conv_of_float64_statistics(world):
    """Each §3 window claim's estimate is, per seed, the statistic of the first model's head minus the second's,
    recomputed from the raw points in float64 (pooled PCC over all objects and per size, PCC among positives,
    within-object ρ, the mean regressed IoU over IoU ≥ 0.4 with conv first), then the mean over seeds."""
    raw, ranks, seeds = world["raw"], world["ranks"], world["seeds"]
    rows = rows_by_claim(C.measure_claims(world["evidence"], "r50", "frozen", None, None, fc_vs_conv_only=True))
    fc, conv = raw["single-fc"], raw["single-conv"]
    want = {
        "pcc-windows-all": per_seed(lambda k: pcc(fc[k]) - pcc(conv[k]), seeds),
        "pcc-windows-small": per_seed(lambda k: pcc(fc[k], size=0) - pcc(conv[k], size=0), seeds),
        "pcc-windows-large": per_seed(lambda k: pcc(fc[k], size=2) - pcc(conv[k], size=2), seeds),
        "pcc-windows-all-positive": per_seed(lambda k: pcc(fc[k], lambda x: x >= 0.5)
                                             - pcc(conv[k], lambda x: x >= 0.5), seeds),
        "pcc-windows-all-object": per_seed(
            lambda k: (ranks["single-fc"][k][..., 0].sum() / ranks["single-fc"][k][..., 1].sum()
                       - ranks["single-conv"][k][..., 0].sum() / ranks["single-conv"][k][..., 1].sum()), seeds),
        "regression-conv-better": per_seed(lambda k: mean_of(conv[k], "r", 0.4) - mean_of(fc[k], "r", 0.4), seeds),
    }
    for claim, per in want.items():
        row = rows[claim]
        np.testing.assert_allclose(row["per_seed"], per, rtol=1e-9, err_msg=claim)
        np.testing.assert_allclose(row["ours"], per.mean(), rtol=1e-9, err_msg=claim)
        assert row["ci_low"] < row["ours"] < row["ci_high"] and row["n_seeds"] == 2 and row["seeds"] == (3, 4)
        assert row["verdict"] == verdict(row["ci_low"], row["ci_high"])
    assert rows["pcc-windows-all"]["verdict"] == "holds" and rows["regression-conv-better"]["ci_high"] > 0
    # only the claims about the two head structures, each once; the missing box sets are "not measured" rows
    assert all(c.fc_vs_conv for c in C.analysis_claims() if c.claim in rows)
    assert rows["pcc-rpn"]["verdict"].startswith("not measured (") and np.isnan(rows["pcc-rpn"]["ours"])


def test_four_part_signed_difference_is_trained_minus_untrained(world):
    """The beyond-structure row is Σ sign · statistic over four models (`_signed`): (conv − fc, trained) −
    (conv − fc, untrained), recomputed from the maps, and the difference of the two two-part rows."""
    sp, seeds = world["spatial"], world["seeds"]
    rows = rows_by_claim(C.measure_claims(world["evidence"], "r50", "frozen", None, None, fc_vs_conv_only=True))

    def gap(conv_model, conv_map, fc_model, k):
        return offdiagonal(sp[conv_model][k], conv_map) - offdiagonal(sp[fc_model][k], "fc_output")

    trained = per_seed(lambda k: gap("single-conv", "conv_output", "single-fc", k), seeds)
    untrained = per_seed(lambda k: gap("single-conv-init", "conv_output", "single-fc-init", k), seeds)
    control = per_seed(lambda k: gap("single-conv", "conv_output_pre_relu", "single-fc", k), seeds)
    np.testing.assert_allclose(rows["spatial-fc-more-sensitive"]["per_seed"], trained, rtol=1e-9)
    np.testing.assert_allclose(rows["spatial-untrained-baseline"]["per_seed"], untrained, rtol=1e-9)
    np.testing.assert_allclose(rows["spatial-fc-more-sensitive-control"]["per_seed"], control, rtol=1e-9)
    beyond = rows["spatial-fc-more-sensitive-beyond-structure"]
    np.testing.assert_allclose(beyond["per_seed"], trained - untrained, rtol=1e-9)
    np.testing.assert_allclose(beyond["ours"], (trained - untrained).mean(), rtol=1e-9)
    assert trained.mean() > 0.3 and (trained - untrained).mean() > 0.2  # the construction: 0.7 − 0.3, minus 0.1


def test_signed_helper_applies_each_sign_to_its_own_part(world):
    """`_signed` with one part is that part's statistic; flipping one sign flips that part's contribution alone."""
    fc = world["raw"]["single-fc"]
    stat = C._pcc(None)
    one = C._signed((1.0, "single-fc", "fc", stat))(world["evidence"])
    np.testing.assert_allclose(one.per_seed, [pcc(fc[0]), pcc(fc[1])], rtol=1e-9)
    both = C._signed((-1.0, "single-fc", "fc", stat), (1.0, "single-conv", "conv", stat))(world["evidence"])
    diff = C._diff(("single-fc", "fc", stat), ("single-conv", "conv", stat))(world["evidence"])
    np.testing.assert_allclose(both.per_seed, -np.asarray(diff.per_seed), rtol=1e-12)


def test_a_seed_one_model_lacks_is_left_out_and_per_seed_rows_name_the_shared_seeds(world):
    """Single-Conv without the first seed: the fc − conv rows use the second seed alone (``seeds``, ``n_seeds``), and
    `per_seed_table` writes one row per claim and seed the claim used, with that seed's value."""
    ev = world["evidence"]
    sums = dict(ev.sums, **{"single-conv": [None, ev.sums["single-conv"][1]]})
    partial = Evidence(ev.seeds, sums, {}, replicates=REPLICATES, seed=1)
    rows = C.measure_claims(partial, "r50", "frozen", None, None, fc_vs_conv_only=True)
    row = rows_by_claim(rows)["pcc-windows-all"]
    fc, conv = world["raw"]["single-fc"][1], world["raw"]["single-conv"][1]
    assert row["seeds"] == (4,) and row["n_seeds"] == 1
    np.testing.assert_allclose(row["ours"], pcc(fc) - pcc(conv), rtol=1e-9)
    table = C.per_seed_table(rows, {"r50": ev.seeds})
    mine = table[table["claim"] == "pcc-windows-all"]
    assert list(mine["seed"]) == [4] and mine["value"].iloc[0] == pytest.approx(row["ours"])
    both = table[table["claim"] == "pcc-windows-small-positive"]
    assert list(both["seed"]) == [4]


def test_strength_matched_fc_adds_its_own_alignment_rows(world):
    """A strength-matched Single-FC (another fc width) gets the §3.2 rows again, tagged with its role and compared
    with the same Single-Conv; absent from the evidence, it adds nothing."""
    ev = world["evidence"]
    # the conv-head's windows under an fc-head's name: every difference is 0
    sums = dict(ev.sums, **{"single-fc-512": [window_sums(p, "fc") for p in world["raw"]["single-conv"]]})
    rows = rows_by_claim(C.measure_claims(Evidence(ev.seeds, sums, {}, replicates=REPLICATES, seed=1), "r50",
                                          "frozen", None, None, fc_vs_conv_only=True,
                                          strength_matched="single-fc-512"))
    tagged = rows["pcc-windows-all@single-fc-512"]
    assert "strength-matched: single-fc-512" in tagged["statement"]
    np.testing.assert_allclose(tagged["per_seed"], [0.0, 0.0], atol=1e-12)
    plain = C.measure_claims(ev, "r50", "frozen", None, None, fc_vs_conv_only=True, strength_matched="absent")
    assert not any("@" in r["claim"] for r in plain)


def test_ext_claims_are_measured_but_not_judged_on_a_frozen_trunk(world):
    """A.2's claims credit joint training with the backbone: measured (Ext's conv-head against Single-Conv), their
    verdict is `NOT_ON_FROZEN_TRUNK`; a claim whose model was not analysed is a "not measured" row naming it."""
    ev = world["evidence"]
    ext = [window_sums(p, "conv") for p in world["raw"]["single-fc"]]
    rows = rows_by_claim(C.measure_claims(Evidence(ev.seeds, dict(ev.sums, **{"double-head-ext": ext}), {},
                                                   replicates=REPLICATES, seed=1), "r50", "frozen", None, None))
    row = rows["figA3-ext-conv-scores"]
    fc, conv = world["raw"]["single-fc"], world["raw"]["single-conv"]
    np.testing.assert_allclose(row["per_seed"], [mean_of(fc[k], "s", 0.5) - mean_of(conv[k], "s", 0.5)
                                                 for k in range(2)], rtol=1e-9)
    assert row["verdict"] == C.NOT_ON_FROZEN_TRUNK and row["ci_low"] > 0
    assert rows["fig6-single-conv-scores"]["verdict"] == "not measured (model double-conv was not analysed)"


def test_trunk_table_flags_claims_whose_verdict_depends_on_the_trunk(world):
    """Two trunks, the second with the heads' roles swapped: every fc-vs-conv claim appears once with both trunks'
    estimates, and ``depends_on_trunk`` is set where the verdicts differ (the PCC rows flip) and not where they agree
    (rows not measured on either)."""
    ev = world["evidence"]
    swapped = dict(ev.sums, **{"single-fc": [window_sums(p, "fc") for p in world["raw"]["single-conv"]],
                               "single-conv": [window_sums(p, "conv") for p in world["raw"]["single-fc"]]})
    rows = C.measure_claims(ev, "r50", "frozen", None, None, fc_vs_conv_only=True)
    rows += C.measure_claims(Evidence(ev.seeds, swapped, {}, replicates=REPLICATES, seed=1), "r18", "frozen", None,
                             None, fc_vs_conv_only=True)
    table = C.trunk_table(findings_table(rows)).set_index("claim")
    assert len(table) == len({r["claim"] for r in rows})
    row = table.loc["pcc-windows-all"]
    assert (row["r50_verdict"], row["r18_verdict"]) == ("holds", "contradicted") and row["depends_on_trunk"]
    assert row["r18_ours"] == pytest.approx(-row["r50_ours"], rel=1e-9)
    assert not table.loc["pcc-rpn", "depends_on_trunk"]


# ----------------------------------------------------------------------------------------- Fig. 8 grid rows
def estimate(value: float, se: float, df: float = 30.0) -> Estimate:
    lo, hi = t_interval(value, se, df)
    return Estimate(value, lo, hi, t_p_value(value, se, df), (value,), 300, "evaluated", se, df, (0,))


GRID_PAIRS = (("ra", 0.5, 0.5), ("rb", 0.7, 0.8), ("rc", 1.0, 1.0))


def grid_frame(modes=("fc", "conv", "fc-cls+conv-reg", "complementary")) -> pd.DataFrame:
    return pd.DataFrame([{"run": run, "lambda_fc": lf, "lambda_conv": lc, "mode": m, "AP": 0.3}
                         for run, lf, lc in GRID_PAIRS for m in modes])


def fake_ap(monkeypatch, two_heads: dict, fusion: dict | None = None) -> list:
    """Replace AP differences by constructed estimates per run (two-heads claim: a = fc-cls+conv-reg; fusion: a =
    complementary); records the keys each call compared."""
    calls = []

    def ap_difference(evidence, a, b, metric=0, below=False):
        calls.append((a, list(b)))
        table = two_heads if a[1] == "fc-cls+conv-reg" else (fusion or two_heads)
        if isinstance(table[a[0]], Exception):
            raise table[a[0]]
        return table[a[0]]

    monkeypatch.setattr(C, "ap_difference", ap_difference)
    return calls


NO_EVIDENCE = Evidence([0], {}, {})  # the grid tests replace AP differences; only the seed count is read


def two_heads_rows() -> tuple[list[dict], dict, dict | None]:
    return grid_rows_of("fig8-two-heads-beat-one", C.grid_rows(NO_EVIDENCE, grid_frame(), "r50", "frozen"))


def grid_rows_of(claim: str, rows: list[dict]) -> tuple[list[dict], dict, dict | None]:
    components = [r for r in rows if r["claim"].startswith(f"{claim}@")]
    main = next(r for r in rows if r["claim"] == claim)
    magnitude = next((r for r in rows if r["claim"] == f"{claim}-magnitude"), None)
    return components, main, magnitude


def test_grid_components_compare_each_pairs_modes(monkeypatch):
    """One component row per λ pair, comparing that pair's modes (two heads: fc-cls+conv-reg against fc and conv;
    fusion: complementary against fc-cls+conv-reg), with that pair's estimate."""
    ests = {"ra": estimate(2.0, 0.2), "rb": estimate(1.5, 0.1), "rc": estimate(3.0, 0.5)}
    calls = fake_ap(monkeypatch, ests)
    rows = C.grid_rows(NO_EVIDENCE, grid_frame(), "r50", "frozen")
    components, _, _ = grid_rows_of("fig8-two-heads-beat-one", rows)
    assert [r["claim"] for r in components] == [f"fig8-two-heads-beat-one@{p}" for p in ("(0.5,0.5)", "(0.7,0.8)",
                                                                                         "(1,1)")]
    assert [r["ours"] for r in components] == [2.0, 1.5, 3.0] and {r["role"] for r in components} == {"component"}
    assert ("ra", "fc-cls+conv-reg") == calls[0][0] and calls[0][1] == [("ra", "fc"), ("ra", "conv")]
    assert calls[3] == (("ra", "complementary"), [("ra", "fc-cls+conv-reg")])


def test_all_pairs_row_reports_the_pair_with_the_lowest_lower_bound(monkeypatch):
    """Nothing contradicted: the all-pairs row is the component with the lowest lower bound (not the lowest
    estimate), named in its statement, with the largest component p-value."""
    ests = {"ra": estimate(1.2, 0.05), "rb": estimate(1.5, 0.3), "rc": estimate(3.0, 0.5)}  # rb: lowest ci_low
    assert ests["rb"].ci_low < ests["ra"].ci_low and ests["rb"].value > ests["ra"].value
    fake_ap(monkeypatch, ests)
    _, main, _ = two_heads_rows()
    assert (main["ours"], main["ci_low"], main["ci_high"]) == (1.5, ests["rb"].ci_low, ests["rb"].ci_high)
    assert "weakest pair (0.7, 0.8) shown" in main["statement"] and main["role"] == "claim"
    assert main["p_value"] == max(e.p_value for e in ests.values()) and main["verdict"] == "holds"


def test_a_contradicted_pair_is_the_weakest_whatever_the_others_lower_bounds(monkeypatch):
    """A component wholly below 0 decides the all-pairs row (contradicted) even when another component's wide
    interval reaches lower."""
    ests = {"ra": estimate(-0.6, 0.1), "rb": estimate(0.0, 2.0), "rc": estimate(2.0, 0.1)}
    assert ests["rb"].ci_low < ests["ra"].ci_low and ests["ra"].ci_high < 0
    fake_ap(monkeypatch, ests)
    _, main, _ = two_heads_rows()
    assert main["ours"] == -0.6 and main["verdict"] == "contradicted" and "(0.5, 0.5)" in main["statement"]


@pytest.mark.parametrize("weak, want", [((1.5, 0.1), "holds"), ((1.0, 0.2), "inconclusive"),
                                        ((0.5, 0.1), "contradicted")])
def test_magnitude_verdict_flips_as_the_interval_crosses_the_magnitude(monkeypatch, weak, want):
    """The magnitude row (≥ +0.9 AP at every pair) reports the weakest pair's own estimate and interval, and holds
    only while that interval lies above 0.9: inside it is inconclusive, below it contradicted, while the "> 0" row
    holds throughout."""
    ests = {"ra": estimate(2.0, 0.2), "rb": estimate(*weak), "rc": estimate(3.0, 0.5)}
    fake_ap(monkeypatch, ests)
    _, main, magnitude = two_heads_rows()
    e = ests["rb"]
    assert main["verdict"] == "holds"
    assert magnitude["verdict"] == want == verdict(e.ci_low - 0.9, e.ci_high - 0.9)
    assert magnitude["ours"] == pytest.approx(e.value) and magnitude["ci_low"] == pytest.approx(e.ci_low)
    assert magnitude["ci_high"] == pytest.approx(e.ci_high)
    assert magnitude["p_value"] == pytest.approx(max(t_p_value(x.value - 0.9, x.se, x.df) for x in ests.values()))
    assert "+0.9" in magnitude["measure"] and "(0.7, 0.8)" in magnitude["statement"]


def test_grid_pairs_unmeasured_or_without_the_modes(monkeypatch):
    """A pair whose losses do not train a compared mode has no component; a pair whose AP fails is a "not measured"
    component, and the all-pairs row is then not measured either (no magnitude row)."""
    ests = {"ra": estimate(2.0, 0.2), "rb": DHError("run rb has no 'fc' detections"), "rc": estimate(3.0, 0.5)}
    fake_ap(monkeypatch, ests)
    grid = grid_frame()
    grid = grid[~((grid["run"] == "rc") & (grid["mode"] == "complementary"))]
    rows = C.grid_rows(NO_EVIDENCE, grid, "r50", "frozen")
    components, main, magnitude = grid_rows_of("fig8-two-heads-beat-one", rows)
    assert components[1]["verdict"] == "not measured (run rb has no 'fc' detections)"
    assert main["verdict"] == "not measured (1 of 3 pairs not measured)" and magnitude is None
    fusion, _, _ = grid_rows_of("fig8-fusion-adds", rows)
    assert [r["claim"] for r in fusion] == ["fig8-fusion-adds@(0.5,0.5)", "fig8-fusion-adds@(0.7,0.8)"]


def hits(rng: np.random.Generator, hit_rate: float) -> CocoMatches:
    """One category, one object and one detection per image, a hit with ``hit_rate``."""
    hit = rng.uniform(size=40) < hit_rate
    return CocoMatches(list(range(1, 41)), np.arange(40), np.zeros(40, np.int64), rng.uniform(0.1, 1.0, 40),
                       np.stack([hit, hit]), np.zeros((2, 40), bool), np.ones((40, 1), np.int64), np.array([0.5, 0.75]))


def test_grid_component_is_the_ap_gap_in_points_averaged_over_seeds():
    """With real AP: a component is AP(fc-cls+conv-reg) − max(AP(fc), AP(conv)) per seed, × 100, averaged over the
    seeds, each AP recomputed from the matches."""
    rng = np.random.default_rng(9)
    seeds = [0, 1]
    rates = {"fc-cls+conv-reg": 0.9, "fc": 0.5, "conv": 0.6, "complementary": 0.95}
    matches = {("ra", m): [hits(rng, r) for _ in seeds] for m, r in rates.items()}
    ev = Evidence(seeds, {}, matches, replicates=REPLICATES, seed=2)
    grid = grid_frame()[lambda g: g["run"] == "ra"]
    rows = C.grid_rows(ev, grid, "r50", "frozen")
    ap = {m: np.array([x.ap()[0] for x in ms]) for (_, m), ms in matches.items()}
    two = rows_by_claim(rows)["fig8-two-heads-beat-one@(0.5,0.5)"]
    want = (ap["fc-cls+conv-reg"] - np.maximum(ap["fc"], ap["conv"])) * 100
    np.testing.assert_allclose(two["per_seed"], want, rtol=1e-12)
    np.testing.assert_allclose(two["ours"], want.mean(), rtol=1e-12)
    fusion = rows_by_claim(rows)["fig8-fusion-adds@(0.5,0.5)"]
    np.testing.assert_allclose(fusion["ours"], ((ap["complementary"] - ap["fc-cls+conv-reg"]) * 100).mean(), rtol=1e-12)


# ----------------------------------------------------------------------------------------- dose response
def test_dose_response_lines_up_each_width_against_single_conv(world):
    """Per fc width: the AP gap (Single-FC run's fc − Single-Conv's conv, AP points) and the fc − conv difference of
    each alignment measure the evidence has (windows; the rpn rows are left out when there are no proposal sums),
    each equal to its float64 recomputation."""
    rng = np.random.default_rng(21)
    ev, raw, seeds = world["evidence"], world["raw"], world["seeds"]
    narrow = [head_points(rng, 0.5, 0.2, 0.02) for _ in seeds]
    sums = dict(ev.sums, **{"single-fc-512": [window_sums(p, "fc") for p in narrow]})
    matches = {(run, mode): [hits(rng, r) for _ in seeds]
               for run, mode, r in (("wide", "fc", 0.9), ("narrow", "fc", 0.4), (SINGLE_CONV_RUN, "conv", 0.6))}
    evidence = Evidence(seeds, sums, matches, replicates=REPLICATES, seed=1)
    table = C.dose_response(evidence, {"single-fc": ("wide", 1024), "single-fc-512": ("narrow", 512)}, "r50")
    assert list(table.columns) == list(C.DOSE_COLUMNS)
    got = {(r.role, r.quantity, r.alignment): r for r in table.itertuples()}
    # the wide Single-FC has rank sums too; the narrow one has none, so its within-object row is left out
    assert set(got) == {("single-fc", "ap_gap", ""), ("single-fc", "windows", "pooled_pcc"),
                        ("single-fc", "windows", "positive_pcc"), ("single-fc", "windows", "object_spearman"),
                        ("single-fc-512", "ap_gap", ""), ("single-fc-512", "windows", "pooled_pcc"),
                        ("single-fc-512", "windows", "positive_pcc")}
    ap = {k: np.array([m.ap()[0] for m in ms]) for k, ms in matches.items()}
    conv_ap = ap[(SINGLE_CONV_RUN, "conv")]
    for role, run, points, width in (("single-fc", "wide", raw["single-fc"], 1024),
                                     ("single-fc-512", "narrow", narrow, 512)):
        gap = got[(role, "ap_gap", "")]
        assert gap.ours == pytest.approx(((ap[(run, "fc")] - conv_ap) * 100).mean(), rel=1e-12)
        assert gap.fc_dim == width and gap.n_seeds == 2 and gap.image_set == "evaluated"
        want = np.mean([pcc(points[k]) - pcc(raw["single-conv"][k]) for k in range(2)])
        assert got[(role, "windows", "pooled_pcc")].ours == pytest.approx(want, rel=1e-9)
        assert got[(role, "windows", "pooled_pcc")].image_set == "analysed"
    wide, narrow_row = got[("single-fc", "windows", "pooled_pcc")], got[("single-fc-512", "windows", "pooled_pcc")]
    assert wide.ours > narrow_row.ours > 0 and wide.ci_low < wide.ours < wide.ci_high
