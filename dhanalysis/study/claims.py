"""The paper's claims as data: what each says (quoted), which models play which role, how it is measured.

A claim names *roles*, never folders: analysed models by their role in `plan.ANALYSED` ("single-fc" is the Single-FC
of Table 1's weight-1.0 group), evaluated runs by their run name and the inference mode the variant table gives them
(`vocab.DEFAULT_MODES`), read from each run's own sweep metadata. `measure_claims` turns the claims into
findings rows for one trunk from an `Evidence` (every seed's per-image sums and AP matches); the fc-vs-conv claims
(§3) are measured on every trunk, the rest on the primary one.

Every claim is a difference the paper says is positive; AP differences are in AP points. "For every λ pair" claims
(Fig. 8) get one component row per pair and hold only when every component holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dhanalysis.study.evidence import (HIGH_IOU_BIN, REG_FROM_BIN, Estimate, Evidence, all_hold, ap_difference,
                                          paired_difference, proposal_object_rank, proposal_pcc,
                                          proposal_positive_pcc, spatial_offdiagonal, verdict, window_mean,
                                          window_object_rank, window_pcc, window_positive_pcc)
from dhanalysis.errors import DHError
from dhanalysis.study.plan import ANALYSED, EXT_RUN, SINGLE_CONV_RUN, SINGLE_FC_RUN, VANILLA_RUN
from dhanalysis.vocab import DEFAULT_MODES, DETECTIONS, RPN_PROPOSALS, SIZE_GROUPS

# Table 1's AP on COCO val2017, for the paper column
TABLE1_AP = {"single-fc-w1": 36.8, "single-conv-w1": 35.9, "double-fc-w1": 37.3, "double-conv-w1": 33.8,
             "double-head-reverse-w1": 32.6, "double-head-w1": 38.8, "double-fc-w2": 38.1, "double-conv-w2": 34.3,
             "double-head-reverse-w2": 32.0, "double-head-w2": 39.5}
NOT_ON_FROZEN_TRUNK = "not testable on a frozen trunk"


@dataclass(frozen=True)
class Claim:
    """One claim: the paper's words (``quote``), what is compared (``measure``), the paper's number, and ``measure_fn``
    turning the evidence into an `Estimate`. ``fc_vs_conv``: a claim about the two head structures, measured on
    every trunk. ``frozen_ok``: False where the paper credits joint training with the backbone, which heads on a
    frozen trunk cannot have: measured, but its verdict is `NOT_ON_FROZEN_TRUNK`."""

    claim: str
    section: str
    statement: str
    quote: str
    measure: str
    paper: str
    measure_fn: Callable[[Evidence], Estimate]
    fc_vs_conv: bool = False
    frozen_ok: bool = True
    alignment: str = ""  # the §3.2 rows: which alignment measure (`ALIGNMENT_ROWS`) the difference is of


# The §3.2 claim under each alignment measure (metrics/measures.py): the paper's pooled PCC mixes recognition (boxes
# on an object scored above background) with the ranking of one object's boxes by fit, which is what the paper's
# argument needs ("the detected boxes with higher IoUs are ranked higher"); the positives' PCC and the within-object
# Spearman ρ measure that ranking alone. measure name -> (claim-name suffix, words, window statistic, box-set one)
ALIGNMENT_ROWS = {
    "pooled_pcc": ("", "pooled PCC (the paper's)", lambda size: (lambda s, h: window_pcc(s, h, size)),
                   lambda which: (lambda s, h: proposal_pcc(s, h, which))),
    "positive_pcc": ("-positive", "PCC among positives (IoU ≥ 0.5)",
                     lambda size: (lambda s, h: window_positive_pcc(s, h, size)),
                     lambda which: (lambda s, h: proposal_positive_pcc(s, h, which))),
    "object_spearman": ("-object", "within-object Spearman ρ (mean over objects)",
                        lambda size: (lambda s, h: window_object_rank(s, h, size)),
                        lambda which: (lambda s, h: proposal_object_rank(s, h, which))),
}


def _signed(*parts: tuple[float, str, str, Callable]) -> Callable[[Evidence], Estimate]:
    """Σ sign · f(part): each part is (sign, model role, head, statistic of (sums, head))."""
    return lambda ev: paired_difference(ev, [(sign, role, (lambda s, head=head, f=f: f(s, head)))
                                             for sign, role, head, f in parts])


def _diff(a: tuple[str, str, Callable], b: tuple[str, str, Callable]) -> Callable[[Evidence], Estimate]:
    """f(a) − f(b): each side is (model role, head, statistic of (sums, head))."""
    return _signed((1.0, *a), (-1.0, *b))


def _pcc(size: str | None = None) -> Callable:
    return lambda s, head: window_pcc(s, head, size)


def _mean(value: str, from_bin: int) -> Callable:
    return lambda s, head: window_mean(s, head, value, from_bin)


Q32 = ("classification scores of fc-head are more correlated to IoUs between proposals and corresponding ground "
       "truth than of conv-head, especially for small objects")


def alignment_claims(fc_role: str = "single-fc", tag: str = "", who: str = "") -> list[Claim]:
    """§3.2 (Fig. 3) under every alignment measure (`ALIGNMENT_ROWS`): sliding windows over all objects and per size
    group, RPN proposals and detections. ``fc_role``: the Single-FC compared with Single-Conv; ``tag`` suffixes the
    claim names and ``who`` the statements (another fc width's pair)."""
    fc, conv = (fc_role, "fc"), ("single-conv", "conv")
    claims = []
    for measure, (suffix, words, window_stat, set_stat) in ALIGNMENT_ROWS.items():
        claims.append(Claim(f"pcc-windows-all{suffix}{tag}", "§3.2, Fig. 3 left",
                            "the fc-head's score correlates more with proposal IoU than the conv-head's (sliding "
                            f"windows){who}: {words}", Q32, f"{words}: Single-FC fc-head − Single-Conv conv-head, all "
                            "objects", "> 0 (fc-head higher)", _diff((*fc, window_stat(None)), (*conv, window_stat(None))),
                            fc_vs_conv=True, alignment=measure))
        for size in SIZE_GROUPS:
            claims.append(Claim(f"pcc-windows-{size}{suffix}{tag}", "§3.2, Fig. 3 left",
                                f"the same for {size} objects" + (" (the paper: especially small)" if size == "small"
                                                                 else "") + f"{who}: {words}", Q32,
                                f"{words} difference, {size} objects", "> 0",
                                _diff((*fc, window_stat(size)), (*conv, window_stat(size))), fc_vs_conv=True,
                                alignment=measure))
        for which, label in ((RPN_PROPOSALS, "RPN proposals"), (DETECTIONS, "detections after NMS")):
            claims.append(Claim(f"pcc-{which}{suffix}{tag}", "§3.2, Fig. 3 right",
                                f"the fc-head's score correlates more with IoU for {label}{who}: {words}",
                                "Similar to the predifined proposals, fc-head has higher PCC than conv-head.",
                                f"{words}: fc-head − conv-head, {label}, each model's own", "> 0",
                                _diff((*fc, set_stat(which)), (*conv, set_stat(which))), fc_vs_conv=True,
                                alignment=measure))
    return claims


_REG, _SCORE = _mean("r", REG_FROM_BIN), _mean("s", HIGH_IOU_BIN)  # §3.3's IoU ≥ 0.4 windows, §5.2's IoU ≥ 0.5


def analysis_claims() -> list[Claim]:
    """§3 (Figs. 2-4), §5.2 (Figs. 6, 7) and A.2 (Fig. A.3) claims, from the sliding-window, PCC and spatial
    analyses of the analysed models, in the order of the findings table."""
    return [*alignment_claims(), *regression_claims(), *spatial_claims(), *score_claims(), *ext_claims()]


def regression_claims() -> list[Claim]:
    """§3.3 (Fig. 2 bottom): the conv-head regresses better, on the windows where the paper says so."""
    fc, conv = ("single-fc", "fc"), ("single-conv", "conv")
    return [
        Claim("regression-conv-better", "§3.3, Fig. 2 bottom",
              "the conv-head regresses more accurately when the proposal IoU is above 0.4",
              "Compared to fc-head, the regressed boxes of conv-head are more accurate when the proposal IoU is above "
              "0.4.", "mean regressed IoU(conv-head) − (fc-head), windows with IoU ≥ 0.4", "> 0",
              _diff((*conv, _REG), (*fc, _REG)), fc_vs_conv=True),
    ]


def spatial_claims() -> list[Claim]:
    """§3.4 (Fig. 4): the fc-head's output is more spatially sensitive, with the controls that tell training from
    structure (maps before the last ReLU, untrained heads, and the trained difference beyond the untrained one)."""
    return [
        Claim("spatial-fc-more-sensitive", "§3.4, Fig. 4",
              "the fc-head's output is more spatially sensitive (less spatial correlation) than the conv-head's",
              "we examine the output feature maps of both heads and confirm that fc-head is more spatially "
              "sensitive", "mean off-diagonal cosine: conv-head output (after its last ReLU) − fc-head output", "> 0",
              _diff(("single-conv", "conv_output", spatial_offdiagonal), ("single-fc", "fc_output",
                                                                           spatial_offdiagonal)), fc_vs_conv=True),
        Claim("spatial-fc-more-sensitive-control", "§3.4, Fig. 4 (control)",
              "the same, with both heads' maps taken before their last ReLU",
              "we examine the output feature maps of both heads and confirm that fc-head is more spatially "
              "sensitive", "mean off-diagonal cosine: conv-head map before its last ReLU − fc-head output "
              "(before fc6's ReLU)", "> 0",
              _diff(("single-conv", "conv_output_pre_relu", spatial_offdiagonal),
                    ("single-fc", "fc_output", spatial_offdiagonal)), fc_vs_conv=True),
        Claim("spatial-untrained-baseline", "§3.4, Fig. 4 (baseline)",
              "untrained heads: the structure alone makes the fc-head's output less spatially correlated",
              "we examine the output feature maps of both heads and confirm that fc-head is more spatially "
              "sensitive", "mean off-diagonal cosine, heads as initialised (same seeds, same trunk, no training): "
              "conv-head output − fc-head output", "(baseline: what the architecture gives)",
              _diff(("single-conv-init", "conv_output", spatial_offdiagonal),
                    ("single-fc-init", "fc_output", spatial_offdiagonal)), fc_vs_conv=True),
        Claim("spatial-fc-more-sensitive-beyond-structure", "§3.4, Fig. 4 (beyond the baseline)",
              "training makes the fc-head more spatially sensitive than the conv-head beyond what their structure "
              "gives", "we examine the output feature maps of both heads and confirm that fc-head is more spatially "
              "sensitive", "(conv − fc mean off-diagonal cosine, trained) − (the same, untrained heads)", "> 0",
              _signed((1.0, "single-conv", "conv_output", spatial_offdiagonal),
                      (-1.0, "single-fc", "fc_output", spatial_offdiagonal),
                      (-1.0, "single-conv-init", "conv_output", spatial_offdiagonal),
                      (1.0, "single-fc-init", "fc_output", spatial_offdiagonal)),
              fc_vs_conv=True),
    ]


def score_claims() -> list[Claim]:
    """§5.2 (Figs. 6, 7): what a second head does to the scores and boxes of the single-head models."""
    fc, conv = ("single-fc", "fc"), ("single-conv", "conv")
    return [
        Claim("fig6-single-conv-scores", "§5.2, Fig. 6",
              "Single-Conv gives higher classification scores than Double-Conv to proposals with high IoU",
              "Single-Conv has higher classification scores than Double-Conv on proposals which have higher IoUs "
              "with the ground truth box.", "mean score, windows with IoU ≥ 0.5: Single-Conv − Double-Conv", "> 0",
              _diff((*conv, _SCORE), ("double-conv", "conv", _SCORE))),
        Claim("fig7-double-fc-scores", "§5.2, Fig. 7", "Double-FC gives slightly higher classification scores than "
              "Single-FC", "Double-FC has slightly higher classification scores and higher IoUs between the "
              "regressed boxes and their corresponding ground truth", "mean score, windows with IoU ≥ 0.5: "
              "Double-FC − Single-FC", "> 0 (slightly)", _diff(("double-fc", "fc", _SCORE), (*fc, _SCORE))),
        Claim("fig7-double-fc-regression", "§5.2, Fig. 7", "Double-FC regresses better than Single-FC",
              "Double-FC has slightly higher classification scores and higher IoUs between the regressed boxes and "
              "their corresponding ground truth", "mean regressed IoU, windows with IoU ≥ 0.4: Double-FC − "
              "Single-FC", "> 0", _diff(("double-fc", "fc", _REG), (*fc, _REG))),
    ]


def ext_claims() -> list[Claim]:
    """A.2 (Fig. A.3): the conv-head of Double-Head-Ext against the conv-head alone. The paper credits joint training
    with the backbone, so on a frozen trunk these are measured but not judged (``frozen_ok=False``)."""
    conv = ("single-conv", "conv")
    qa2 = ("We believe that these improvements come from the jointly training of two heads with the shared "
           "backbone.")
    return [
        Claim("figA3-ext-conv-scores", "A.2, Fig. A.3",
              "the conv-head of Double-Head-Ext scores high-IoU proposals higher than the conv-head alone", qa2,
              "mean score, windows with IoU ≥ 0.5: Ext conv-head − Single-Conv", "> 0",
              _diff(("double-head-ext", "conv", _SCORE), (*conv, _SCORE)), frozen_ok=False),
        Claim("figA3-ext-conv-regression", "A.2, Fig. A.3",
              "the conv-head of Double-Head-Ext regresses better than the conv-head alone", qa2,
              "mean regressed IoU, windows with IoU ≥ 0.4: Ext conv-head − Single-Conv", "> 0",
              _diff(("double-head-ext", "conv", _REG), (*conv, _REG)), frozen_ok=False),
    ]


def default_key(run: str, runs: pd.DataFrame) -> tuple[str, str]:
    """(run, the inference mode its variant detects with by default), from the run's own sweep metadata."""
    meta = runs[runs["run"] == run]
    if meta.empty:
        raise DHError(f"run {run} is not in the study's sweeps")
    return run, DEFAULT_MODES[str(meta["variant"].iloc[0])]


def ap_claims(runs: pd.DataFrame) -> list[Claim]:
    """Table 1 and Table 3 claims from COCO AP. ``runs``: every run's sweep metadata (``run``, ``variant``, ...)."""
    claims = []

    def ap_claim(name, section, statement, quote, measure, paper, a, b, below=False):
        def fn(ev: Evidence) -> Estimate:
            key = (lambda r: default_key(r, runs) if isinstance(r, str) else r)
            return ap_difference(ev, key(a), [key(x) for x in b], below=below)
        claims.append(Claim(name, section, statement, quote, measure, paper, fn))

    q1 = ("Double-Head outperforms single head detectors by a non-negligible margin (2.0+ AP). It also outperforms "
          "Double-FC and Double-Conv by at least 1.4 AP.")
    for tag, group in (("w1", "weight 1.0"), ("w2", "ω 2.0/2.5")):
        dh = f"double-head-{tag}"
        for other, name in ((SINGLE_FC_RUN, "Single-FC"), (SINGLE_CONV_RUN, "Single-Conv"),
                            (f"double-fc-{tag}", "Double-FC"), (f"double-conv-{tag}", "Double-Conv")):
            ap_claim(f"table1-{tag}-double-head-vs-{other.rsplit('-w', 1)[0]}", "§5.2, Table 1",
                     f"Double-Head ({group}) beats {name}", q1, f"AP(Double-Head {tag}) − AP({name})",
                     f"{TABLE1_AP[dh]:.1f} vs {TABLE1_AP[other]:.1f}", dh, [other])
        reverse = f"double-head-reverse-{tag}"
        others = [r for r in TABLE1_AP if r != reverse and (r.endswith(tag) or r.startswith("single"))]
        ap_claim(f"table1-{tag}-reverse-worst", "§5.2, Table 1", f"Double-Head-Reverse ({group}) is the worst",
                 "Double-Head-Reverse has the worst performance (drops 6.2+ AP compared to Double-Head).",
                 f"lowest other AP − AP(Reverse {tag})", f"{TABLE1_AP[reverse]:.1f}, lowest of its group", reverse,
                 others, below=True)
    ap_claim("table1-single-conv-beats-double-conv", "§5.2, Table 1", "Single-Conv beats Double-Conv",
             "Single-Conv has higher classification scores than Double-Conv", "AP(Single-Conv) − AP(Double-Conv, "
             "weight 1.0)", "35.9 vs 33.8", SINGLE_CONV_RUN, [ANALYSED["double-conv"][1]])
    ap_claim("table1-double-fc-beats-single-fc", "§5.2, Table 1", "Double-FC beats Single-FC",
             "sharing two tasks in a single fully connected head (Single-FC) is not as good as separating them in two "
             "heads (Double-FC)", "AP(Double-FC, weight 1.0) − AP(Single-FC)", "37.3 vs 36.8",
             ANALYSED["double-fc"][1], [SINGLE_FC_RUN])
    q3 = "The proposed complementary fusion outperforms other fusion methods (max and average)"
    ap_claim("table3-complementary-vs-none", "§5.2, Table 3", "complementary fusion beats no fusion", q3,
             "AP(complementary) − AP(fc-cls+conv-reg), Double-Head-Ext", "40.3 vs 39.7",
             (EXT_RUN, "complementary"), [(EXT_RUN, "fc-cls+conv-reg")])
    ap_claim("table3-complementary-vs-max-average", "§5.2, Table 3", "complementary fusion beats max and average",
             q3, "AP(complementary) − max(AP(max), AP(average))", "40.3 vs 39.9, 40.1", (EXT_RUN, "complementary"),
             [(EXT_RUN, "max"), (EXT_RUN, "average")])
    ap_claim("fig8-unfocused-tasks-help", "§5.2, Fig. 8",
             "unfocused-task supervision helps: Ext beats vanilla Double-Head (λ = 1, 1)",
             "It outperforms Double-Head (39.8 AP, green box in Figure 8-(c)) without using unfocused tasks by 0.5 AP.",
             "AP(Ext, complementary) − AP(Double-Head λ = 1, fc-cls+conv-reg)", "40.3 vs 39.8",
             (EXT_RUN, "complementary"), [(VANILLA_RUN, "fc-cls+conv-reg")])
    return claims


@dataclass(frozen=True)
class GridClaim:
    """A Fig. 8 claim "for all (λfc, λconv) pairs": ``compare(pair run, its modes)`` gives (a, b) AP keys or None
    where the pair cannot be compared (a mode its losses do not train)."""

    claim: str
    statement: str
    quote: str
    measure: str
    paper: str
    compare: Callable[[str, set[str]], tuple[tuple[str, str], list[tuple[str, str]]] | None]
    magnitude: float = 0.0  # the paper's stated size (AP points): tested as its own row beside "> 0"


def grid_claims() -> list[GridClaim]:
    quote = ("using two heads (Figure 8-(c)) outperforms using a single head (Figure 8-(a), (b)) for all (λfc, "
             "λconv) pairs by at least 0.9 AP")
    fusion = "fusion of classifiers introduces at least additional 0.4 AP improvement for all (λfc, λconv) pairs"

    def two_heads(run: str, modes: set[str]):
        singles = [(run, m) for m in ("fc", "conv") if m in modes]
        return ((run, "fc-cls+conv-reg"), singles) if singles and "fc-cls+conv-reg" in modes else None

    def fusion_adds(run: str, modes: set[str]):
        return ((run, "complementary"), [(run, "fc-cls+conv-reg")]) if {"complementary", "fc-cls+conv-reg"} <= modes \
            else None

    return [GridClaim("fig8-two-heads-beat-one", "classification from the fc-head and boxes from the conv-head beat "
                      "either head alone, for every λ pair", quote, "AP(fc-cls+conv-reg) − max(AP(fc), AP(conv)) at "
                      "each λ pair (a mode the pair does not train is left out)", "≥ +0.9 at every pair", two_heads,
                      magnitude=0.9),
            GridClaim("fig8-fusion-adds", "fusing both classifiers adds AP at every λ pair", fusion,
                      "AP(complementary) − AP(fc-cls+conv-reg) at each λ pair with a conv-head classifier",
                      "≥ +0.4 at every pair", fusion_adds, magnitude=0.4)]


# ----------------------------------------------------------------------------------------- rows
def _row(claim, est: Estimate | None, trunk: str, protocol: str, n_seeds: int, error: str = "",
         role: str = "claim", section: str | None = None) -> dict:
    base = {"claim": claim.claim, "section": section or getattr(claim, "section", "§5.2, Fig. 8"),
            "statement": claim.statement, "quote": claim.quote, "measure": claim.measure, "paper": claim.paper,
            "trunk": trunk, "role": role, "protocol": protocol, "n_seeds": n_seeds,
            "alignment": getattr(claim, "alignment", "")}
    if est is None:
        return {**base, "ours": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "n_images": 0,
                "image_set": "", "verdict": f"not measured ({error})" if error else "not measured", "per_seed": ()}
    v = verdict(est.ci_low, est.ci_high)
    if not getattr(claim, "frozen_ok", True) and v != "not measured":
        v = NOT_ON_FROZEN_TRUNK
    if est.seeds:
        base["n_seeds"] = len(est.seeds)
    return {**base, "ours": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high, "p_value": est.p_value,
            "verdict": v, "n_images": est.n_images, "image_set": est.image_set, "per_seed": est.per_seed,
            "seeds": est.seeds}


def _measure(claim, fn: Callable[[], Estimate], trunk: str, protocol: str, n_seeds: int, **kw) -> dict:
    try:
        return _row(claim, fn(), trunk, protocol, n_seeds, **kw)
    except (DHError, KeyError) as exc:
        return _row(claim, None, trunk, protocol, n_seeds, str(exc).strip("'"), **kw)


def measure_claims(evidence: Evidence, trunk: str, protocol: str, runs: pd.DataFrame | None,
                   grid: pd.DataFrame | None, fc_vs_conv_only: bool = False,
                   strength_matched: str | None = None) -> list[dict]:
    """Findings rows (with a ``per_seed`` tuple each) of every claim on one trunk's evidence.

    ``runs``: the sweep metadata of every run (for the AP claims); ``grid``: Fig. 8's ``results.csv`` of the first
    seed (which pairs and modes exist); ``fc_vs_conv_only``: measure only the claims every trunk is measured on;
    ``strength_matched``: the role of the Single-FC whose fc width made it at least as strong a recogniser as
    Single-Conv on val (the regime), whose §3.2 rows are measured as well.
    """
    n = len(evidence.seeds)
    claims = [c for c in analysis_claims() if c.fc_vs_conv or not fc_vs_conv_only]
    if strength_matched and strength_matched in evidence.sums:
        claims += alignment_claims(strength_matched, f"@{strength_matched}",
                                   f" (strength-matched: {strength_matched})")
    rows = [_measure(c, (lambda c=c: c.measure_fn(evidence)), trunk, protocol, n) for c in claims]
    if fc_vs_conv_only:
        return rows
    if runs is not None:
        rows += [_measure(c, (lambda c=c: c.measure_fn(evidence)), trunk, protocol, n) for c in ap_claims(runs)]
    if grid is not None and not grid.empty:
        rows += grid_rows(evidence, grid, trunk, protocol)
        rows.append(fig8_peak(grid, trunk, protocol, n))
    return rows


def grid_rows(evidence: Evidence, grid: pd.DataFrame, trunk: str, protocol: str) -> list[dict]:
    """Per λ pair component rows and two "for every pair" rows of each `grid_claims` claim: "> 0" and the paper's
    magnitude ("≥ +0.9 at every pair": the interval above the magnitude). An all-pairs row reports its weakest pair's
    estimate and interval (`all_hold`) and names the pair."""
    rows = []
    n = len(evidence.seeds)
    pairs = grid.groupby(["run", "lambda_fc", "lambda_conv"], sort=False)["mode"].apply(set)
    for claim in grid_claims():
        components, estimates, labels = [], [], []
        for (run, lf, lc), modes in pairs.items():
            keys = claim.compare(run, modes)
            if keys is None:
                continue
            est, error = None, ""
            try:
                est = ap_difference(evidence, keys[0], keys[1])
            except (DHError, KeyError) as exc:
                error = str(exc).strip("'")
            row = _row(claim, est, trunk, protocol, n, error, role="component")
            row["claim"] = f"{claim.claim}@({lf:g},{lc:g})"
            row["statement"] = f"{claim.statement}: at (λfc, λconv) = ({lf:g}, {lc:g})"
            rows.append(row)
            components.append(row)
            if est is not None and np.isfinite(est.ci_low):
                estimates.append(est)
                labels.append(f"({lf:g}, {lc:g})")
        section = "§5.2, Fig. 8 (all pairs)"
        if not estimates or len(estimates) != len(components):
            error = f"{len(components) - len(estimates)} of {len(components)} pairs not measured"
            rows.append(_row(claim, None, trunk, protocol, n, error, section=section))
            continue
        weakest = all_hold(estimates, labels)
        row = _row(claim, weakest, trunk, protocol, n, section=section)
        row["statement"] = f"{claim.statement} (weakest pair {weakest.label} shown)"
        rows.append(row)
        if claim.magnitude > 0:
            shifted = all_hold([e.above(claim.magnitude) for e in estimates], labels)
            row = _row(claim, shifted, trunk, protocol, n, section=section)
            row.update(claim=f"{claim.claim}-magnitude", paper=claim.paper,
                       statement=f"{claim.statement}, by at least +{claim.magnitude:g} AP (the paper's size; weakest "
                                 f"pair {shifted.label} shown)",
                       measure=f"{claim.measure}; the interval must lie above +{claim.magnitude:g}",
                       ours=shifted.value + claim.magnitude, ci_low=shifted.ci_low + claim.magnitude,
                       ci_high=shifted.ci_high + claim.magnitude)
            rows.append(row)
    return rows


def fig8_peak(grid: pd.DataFrame, trunk: str, protocol: str, n_seeds: int) -> dict:
    """Where the λ grid peaks (descriptive; the paper: λ_fc = 0.7, λ_conv = 0.8, complementary fusion), on the mean
    over seeds of each pair's AP."""
    claim = GridClaim("fig8-peak", "the best Double-Head-Ext has λ_fc = 0.7, λ_conv = 0.8",
                      "the best Double-Head-Ext model (40.3 AP) is corresponding to λfc = 0.7, λconv = 0.8",
                      "λ pair of the highest complementary-fusion AP on the grid (mean over seeds)", "(0.7, 0.8): 40.3",
                      lambda *_: None)
    comp = grid[grid["mode"] == "complementary"]
    if comp.empty or comp["lambda_fc"].nunique() < 2 or comp["lambda_conv"].nunique() < 2:
        pairs = comp[["lambda_fc", "lambda_conv"]].drop_duplicates()
        return _row(claim, None, trunk, protocol, n_seeds, f"no peak to locate: complementary fusion (λ_conv < 1) "
                    f"at {len(pairs)} λ pair(s), {pairs['lambda_conv'].nunique()} value(s) of λ_conv",
                    role="descriptive", section="§5.2, Fig. 8 (d)")
    mean = comp.groupby(["lambda_fc", "lambda_conv"])["AP"].mean()
    (lf, lc), best = mean.idxmax(), mean.max()
    row = _row(claim, None, trunk, protocol, n_seeds, role="descriptive", section="§5.2, Fig. 8 (d)")
    row.update(ours=float(best) * 100, verdict=f"peak at ({lf:g}, {lc:g})")
    return row


def per_seed_table(rows: Sequence[dict], seeds: dict[str, list[int]]) -> pd.DataFrame:
    """One row per (claim, trunk, seed): each seed's own value of the claim's measure (the seeds' spread)."""
    out = []
    for r in rows:
        for seed, value in zip(r.get("seeds") or seeds.get(r["trunk"], []), r.get("per_seed", ())):
            out.append({"claim": r["claim"], "trunk": r["trunk"], "seed": seed, "value": value})
    return pd.DataFrame(out, columns=["claim", "trunk", "seed", "value"])


def trunk_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The fc-vs-conv claims side by side on every trunk: estimate, interval and verdicts per trunk, and whether the
    verdict depends on the trunk."""
    trunks = list(dict.fromkeys(frame["trunk"]))
    multi = frame.groupby("claim")["trunk"].nunique()
    claims = [c for c in dict.fromkeys(frame["claim"]) if multi.get(c, 0) > 1]
    rows = []
    for claim in claims:
        part = frame[frame["claim"] == claim].set_index("trunk")
        row = {"claim": claim, "statement": part["statement"].iloc[0]}
        for t in trunks:
            if t in part.index:
                r = part.loc[t]
                row.update({f"{t}_ours": r["ours"], f"{t}_ci_low": r["ci_low"], f"{t}_ci_high": r["ci_high"],
                            f"{t}_verdict": r["verdict"], f"{t}_verdict_holm": r["verdict_holm"]})
        verdicts = {part.loc[t, "verdict"] for t in trunks if t in part.index}
        row["depends_on_trunk"] = len(verdicts) > 1
        rows.append(row)
    return pd.DataFrame(rows)


DOSE_COLUMNS = ("trunk", "role", "fc_dim", "quantity", "alignment", "ours", "ci_low", "ci_high", "n_seeds",
                "n_images", "image_set")


def dose_response(evidence: Evidence, widths: dict[str, tuple[str, int]], trunk: str) -> pd.DataFrame:
    """The §3.2 differences against recognition strength, one Single-FC per fc width (``widths``: role -> (its
    run, fc width)) against Single-Conv: per width the AP gap (Single-FC − Single-Conv, AP points; the paper's order
    is > 0) and the fc − conv difference of every alignment measure on the sliding windows (all objects) and the
    RPN proposals, each with its seed × image interval. Whether a verdict follows recognition strength shows as a
    trend of the differences along the gap."""
    rows = []
    for role, (run, width) in widths.items():
        quantities: list[tuple[str, str, Callable[[], Estimate]]] = [
            ("ap_gap", "", lambda run=run: ap_difference(evidence, (run, "fc"), [(SINGLE_CONV_RUN, "conv")]))]
        for measure, (_, _, window_stat, set_stat) in ALIGNMENT_ROWS.items():
            for where, stat in (("windows", window_stat(None)), (RPN_PROPOSALS, set_stat(RPN_PROPOSALS))):
                quantities.append((where, measure, (lambda stat=stat, role=role: _diff(
                    (role, "fc", stat), ("single-conv", "conv", stat))(evidence))))
        for quantity, measure, fn in quantities:
            try:
                est = fn()
            except (DHError, KeyError):
                continue
            rows.append({"trunk": trunk, "role": role, "fc_dim": width, "quantity": quantity, "alignment": measure,
                         "ours": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high,
                         "n_seeds": len(est.seeds) or len(est.per_seed), "n_images": est.n_images,
                         "image_set": est.image_set})
    return pd.DataFrame(rows, columns=list(DOSE_COLUMNS))
