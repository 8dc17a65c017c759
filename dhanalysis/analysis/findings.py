"""The paper's claims, checked one by one on a study's results (`dhanalysis reproduce`): findings.csv and findings.md.

Each claim is a signed difference that the paper says is positive ("the fc-head's score correlates more with IoU
than the conv-head's": PCC_fc − PCC_conv > 0), measured with a 95% bootstrap interval over images (`bootstrap`;
paired: both sides of a difference use the same drawn images). A claim **holds** when the whole interval is above
0, is **contradicted** when the whole interval is below 0, and is **inconclusive** otherwise. Descriptive rows (where
Fig. 8 peaks) carry no interval.

Inputs, per analysed model folder (``results/<model>/``): the per-image chunks the analyses keep
(``chunks/sliding_window``, ``chunks/pcc``, ``chunks/spatial_corr``; one image per chunk, ``--chunk-size 1``) and,
per evaluated run, ``detections_<mode>.json`` with the dataset's ground truth, for AP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dhanalysis.analysis.bootstrap import (DEFAULT_REPLICATES, CocoMatches, interval, pcc_of_sums, positions_of,
                                           ratio_of_sums, replicate_counts)
from dhanalysis.analysis.stats import MOMENTS, NUM_BINS, PCC_MOMENTS
from dhanalysis.errors import DHError
from dhanalysis.vocab import (CHUNKS_DIR, DETECTIONS, FINDINGS_CSV, FINDINGS_MD, HEAD_TYPES, MODEL_PROPOSAL_SETS,
                              PCC_CHUNKS, PCC_STATS_CSV, RPN_PROPOSALS, SIZE_GROUPS, SLIDING_WINDOW_CHUNKS,
                              SLIDING_WINDOW_STATS_CSV, SPATIAL_CORR_CHUNKS, detections_file)

FINDINGS_COLUMNS = ("claim", "section", "statement", "measure", "paper", "ours", "ci_low", "ci_high", "verdict",
                    "protocol", "n_images")
COL = {name: i for i, name in enumerate(MOMENTS)}
HIGH_IOU_BIN = NUM_BINS // 2  # windows with proposal IoU ≥ 0.5
REG_FROM_BIN = 8  # windows with proposal IoU ≥ 0.4, where §3.3 says the conv-head regresses better


# ----------------------------------------------------------------------------------------- per-image sums
def _chunks(chunk_dir: Path, task: str) -> list[dict]:
    """The per-image payloads of ``task`` in an analysis's chunk folder, one image per chunk."""
    from dhanalysis.analysis.runner import _load_chunk, finished_chunks

    entries = finished_chunks(chunk_dir)
    if not entries:
        raise DHError(f"{chunk_dir} holds no finished chunks; run the analysis with one image per chunk first")
    out = []
    for entry in entries:
        if len(entry["image_ids"]) != 1:
            raise DHError(f"{chunk_dir} has chunks of several images; the bootstrap over images needs one image per "
                          "chunk (run the analysis again with a chunk size of 1)")
        payload = _load_chunk(chunk_dir, entry)
        out.append({"image_id": int(entry["image_ids"][0]), **payload["tasks"].get(task, {})})
    return out


@dataclass
class ImageSums:
    """Per-image sums of one model: ``window`` (N, H, K, G, B, 11), ``proposal`` (N, H, sets, G, 6), ``spatial``
    {map: (N, cells, cells)} and ``objects`` (N,), on the common ``image_ids``."""

    image_ids: list[int]
    window_heads: list[str] = field(default_factory=list)
    window: np.ndarray | None = None
    proposal_heads: list[str] = field(default_factory=list)
    proposal: np.ndarray | None = None
    spatial: dict[str, np.ndarray] = field(default_factory=dict)
    objects: np.ndarray | None = None


def _heads_of(table: Path) -> list[str]:
    heads = set(pd.read_csv(table, usecols=["head"])["head"]) if table.is_file() else set()
    return [h for h in HEAD_TYPES if h in heads]


def load_image_sums(folder: Path, num_classes: int) -> ImageSums:
    """Read a model folder's per-image chunks (whatever analyses it has) into arrays indexed by image."""
    folder = Path(folder)
    sums = ImageSums(image_ids=[])
    ids: dict[str, list[int]] = {}
    window_dir, pcc_dir, spatial_dir = (folder / CHUNKS_DIR / name
                                        for name in (SLIDING_WINDOW_CHUNKS, PCC_CHUNKS, SPATIAL_CORR_CHUNKS))
    if window_dir.is_dir():
        chunks = sorted(_chunks(window_dir, "sliding_window"), key=lambda c: c["image_id"])
        sums.window_heads = _heads_of(folder / SLIDING_WINDOW_STATS_CSV)
        arr = np.stack([c["sums"]["stats"].numpy() for c in chunks])
        h = arr.shape[1]
        if h != len(sums.window_heads):
            raise DHError(f"{folder}: the chunks hold {h} heads but sliding_window_stats.csv lists "
                          f"{sums.window_heads}; rerun the analysis")
        sums.window = arr.reshape(len(chunks), h, num_classes, len(SIZE_GROUPS), NUM_BINS, len(MOMENTS))
        ids["window"] = [c["image_id"] for c in chunks]
    if pcc_dir.is_dir():
        chunks = sorted(_chunks(pcc_dir, "pcc"), key=lambda c: c["image_id"])
        sums.proposal_heads = _heads_of(folder / PCC_STATS_CSV)
        arr = np.stack([c["sums"]["pcc"].numpy() for c in chunks])
        sums.proposal = arr.reshape(len(chunks), arr.shape[1], len(MODEL_PROPOSAL_SETS), len(SIZE_GROUPS),
                                    len(PCC_MOMENTS))
        ids["proposal"] = [c["image_id"] for c in chunks]
    if spatial_dir.is_dir():
        chunks = sorted(_chunks(spatial_dir, "spatial"), key=lambda c: c["image_id"])
        names = sorted(chunks[0]["sums"])
        sums.spatial = {m: np.stack([c["sums"][m].numpy() for c in chunks]) for m in names}
        sums.objects = np.array([c["counts"].get("objects", 0) for c in chunks], dtype=np.float64)
        ids["spatial"] = [c["image_id"] for c in chunks]
    if not ids:
        raise DHError(f"{folder} holds no per-image analysis chunks ({window_dir.name}, {pcc_dir.name} or "
                      f"{spatial_dir.name} under {CHUNKS_DIR}/); run the analyses with one image per chunk first")
    first = next(iter(ids.values()))
    for what, got in ids.items():
        if got != first:
            raise DHError(f"{folder}: the {what} analysis covers other images than the others; rerun it on the same "
                          "images")
    sums.image_ids = first
    return sums


# ----------------------------------------------------------------------------------------- statistics
# Each statistic maps per-image sums to per-image columns X (N, m) and a function of the column totals: the value on
# the whole set is f(X.sum(0)) and replicate b is f(W[b] @ X).

Stat = tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]


def _window_moments(s: ImageSums, head: str, size: str | None = None, bins: slice = slice(None)) -> np.ndarray:
    """(N, 11) moment sums of one head's windows, for one size group (None: all) and a range of IoU bins."""
    if s.window is None or head not in s.window_heads:
        raise DHError(f"no sliding-window statistics of the {head}-head")
    w = s.window[:, s.window_heads.index(head)]  # (N, K, G, B, 11)
    if size is not None:
        w = w[:, :, SIZE_GROUPS.index(size)][:, :, None]
    return w[:, :, :, bins].sum(axis=(1, 2, 3))


def window_pcc(s: ImageSums, head: str, size: str | None = None) -> Stat:
    """PCC of score and proposal IoU over the sliding windows (§3.2, Fig. 3 left)."""
    m = _window_moments(s, head, size)
    cols = [COL[c] for c in ("n_s", "sum_x", "sum_x2", "sum_s", "sum_s2", "sum_xs")]
    return m[:, cols], pcc_of_sums


def window_mean(s: ImageSums, head: str, value: str, from_bin: int) -> Stat:
    """Mean score (``value="s"``) or regressed IoU (``"r"``) over windows with proposal IoU in bins ≥ ``from_bin``."""
    m = _window_moments(s, head, None, slice(from_bin, None))
    return m[:, [COL[f"sum_{value}"], COL[f"n_{value}"]]], ratio_of_sums


def proposal_pcc(s: ImageSums, head: str, which: str) -> Stat:
    """PCC of score and IoU for the model's own RPN proposals or final detections (§3.2, Fig. 3 right)."""
    if s.proposal is None or head not in s.proposal_heads:
        raise DHError(f"no rpn/detection PCC sums of the {head}-head")
    p = s.proposal[:, s.proposal_heads.index(head), MODEL_PROPOSAL_SETS.index(which)].sum(axis=1)
    return p, pcc_of_sums


def spatial_offdiagonal(s: ImageSums, name: str) -> Stat:
    """Mean off-diagonal cosine of a head's output map over objects (§3.4, Fig. 4): lower = more spatially
    sensitive."""
    if name not in s.spatial:
        raise DHError(f"no spatial-correlation sums of {name}")
    maps = s.spatial[name]
    cells = maps.shape[-1]
    off = maps.sum(axis=(1, 2)) - np.trace(maps, axis1=1, axis2=2)
    return np.stack([off, s.objects * cells * (cells - 1)], axis=1), ratio_of_sums


# ----------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    """One claim: ``measure`` says what is compared, ``paper`` what the paper reports (its numbers where printed)."""

    claim: str
    section: str
    statement: str
    measure: str
    paper: str


@dataclass
class Study:
    """What findings are computed from: analysed models' per-image sums, evaluated runs' AP matches."""

    sums: dict[str, ImageSums]
    matches: dict[tuple[str, str], CocoMatches]  # (run, mode) -> matches on the evaluated images
    protocol: str
    replicates: int = DEFAULT_REPLICATES
    seed: int = 0
    _ap_cache: dict = field(default_factory=dict, repr=False)

    def ap_replicates(self, key: tuple[str, str], metric: int = 0) -> tuple[float, np.ndarray]:
        """AP of run/mode ``key`` on all images and on every replicate (computed once, shared by all claims: every
        claim draws the same replicates, so differences between runs stay paired)."""
        if (key, metric) not in self._ap_cache:
            m = self.matches[key]
            counts = replicate_counts(len(m.image_ids), self.replicates, self.seed)
            reps = np.array([m.ap(positions_of(row))[metric] for row in counts])
            self._ap_cache[(key, metric)] = (m.ap()[metric], reps)
        return self._ap_cache[(key, metric)]


def _paired(study: Study, parts: Sequence[tuple[str, Stat]]) -> tuple[float, float, float, int]:
    """Value, interval and image count of Σ ± f(stat) over ``parts`` ((model, stat); a model name with a leading
    "-" is subtracted), for models measured on the same images."""
    ids = None
    for model, _ in parts:
        got = study.sums[model.removeprefix("-")].image_ids
        ids = got if ids is None else ids
        if got != ids:
            raise DHError(f"models {', '.join(m.removeprefix('-') for m, _ in parts)} were analysed on different images; analyse them "
                          "on the same images to compare them")
    counts = replicate_counts(len(ids), study.replicates, study.seed)
    value, reps = 0.0, np.zeros(study.replicates)
    for sign_model, (x, f) in parts:
        sign = -1.0 if sign_model.startswith("-") else 1.0
        value += sign * float(f(x.sum(axis=0)))
        reps += sign * f(counts @ x)
    lo, hi = interval(reps)
    return value, lo, hi, len(ids)


def _ap_diff(study: Study, a: tuple[str, str], b: Sequence[tuple[str, str]], metric: int = 0,
             below: bool = False) -> tuple[float, float, float, int]:
    """AP(a) − max AP(b) (a is above all of b), or with ``below`` min AP(b) − AP(a) (a is below all of b), with a
    paired bootstrap over images."""
    ma = study.matches[a]
    for other in b:
        if study.matches[other].image_ids != ma.image_ids:
            raise DHError(f"runs {a[0]} and {other[0]} were evaluated on different images")
    own, own_reps = study.ap_replicates(a, metric)
    others = [study.ap_replicates(o, metric) for o in b]
    other_value = np.array([v for v, _ in others])
    other_reps = np.stack([r for _, r in others])  # (len(b), B)
    if below:
        value, reps = float(other_value.min() - own), other_reps.min(axis=0) - own_reps
    else:
        value, reps = float(own - other_value.max()), own_reps - other_reps.max(axis=0)
    lo, hi = interval(reps)
    return value, lo, hi, len(ma.image_ids)


def verdict(lo: float, hi: float) -> str:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return "not measured"
    if lo > 0:
        return "holds"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


def _row(claim: Claim, result: tuple[float, float, float, int] | None, protocol: str, error: str = "") -> dict:
    if result is None:
        return {**claim.__dict__, "ours": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                "verdict": f"not measured ({error})" if error else "not measured", "protocol": protocol,
                "n_images": 0}
    value, lo, hi, n = result
    return {**claim.__dict__, "ours": value, "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi),
            "protocol": protocol, "n_images": n}


# Which model stands for which paper model (names of `dhanalysis reproduce`'s analysed models and runs).
FC_MODEL, CONV_MODEL = "single-fc", "single-conv"
DOUBLE_FC_MODEL, DOUBLE_CONV_MODEL, EXT_MODEL = "double-fc", "double-conv", "double-head-ext"
ANALYSIS_MODELS = (FC_MODEL, CONV_MODEL, DOUBLE_FC_MODEL, DOUBLE_CONV_MODEL, EXT_MODEL)


def analysis_claims(study: Study) -> list[dict]:
    """§3 (Figs. 2-4), §5.2 (Figs. 6, 7) and A.3 claims from the sliding-window, PCC and spatial analyses."""
    rows = []

    def add(claim: Claim, compute: Callable[[], tuple[float, float, float, int]]) -> None:
        try:
            rows.append(_row(claim, compute(), study.protocol))
        except (DHError, KeyError) as exc:
            rows.append(_row(claim, None, study.protocol, str(exc).strip("'")))

    s = study.sums
    fc, conv = FC_MODEL, CONV_MODEL
    add(Claim("pcc-windows-all", "§3.2, Fig. 3 left",
              "the fc-head's score correlates more with proposal IoU than the conv-head's (sliding windows)",
              "PCC(Single-FC fc-head) − PCC(Single-Conv conv-head), all objects", "> 0 (fc-head higher)"),
        lambda: _paired(study, [(fc, window_pcc(s[fc], "fc")), ("-" + conv, window_pcc(s[conv], "conv"))]))
    for size in SIZE_GROUPS:
        add(Claim(f"pcc-windows-{size}", "§3.2, Fig. 3 left",
                  f"the same for {size} objects" + (" (the paper: especially small)" if size == "small" else ""),
                  f"PCC difference, {size} objects", "> 0"),
            lambda size=size: _paired(study, [(fc, window_pcc(s[fc], "fc", size)),
                                              ("-" + conv, window_pcc(s[conv], "conv", size))]))
    for which, label in ((RPN_PROPOSALS, "RPN proposals"), (DETECTIONS, "detections after NMS")):
        add(Claim(f"pcc-{which}", "§3.2, Fig. 3 right", f"the fc-head's score correlates more with IoU for {label}",
                  f"PCC(fc-head) − PCC(conv-head), {label}, each model's own", "> 0"),
            lambda which=which: _paired(study, [(fc, proposal_pcc(s[fc], "fc", which)),
                                                ("-" + conv, proposal_pcc(s[conv], "conv", which))]))
    add(Claim("regression-conv-better", "§3.3, Fig. 2 bottom",
              "the conv-head regresses more accurately when the proposal IoU is above 0.4",
              "mean regressed IoU(conv-head) − (fc-head), windows with IoU ≥ 0.4", "> 0"),
        lambda: _paired(study, [(conv, window_mean(s[conv], "conv", "r", REG_FROM_BIN)),
                                ("-" + fc, window_mean(s[fc], "fc", "r", REG_FROM_BIN))]))
    add(Claim("spatial-fc-more-sensitive", "§3.4, Fig. 4",
              "the fc-head's output is more spatially sensitive (less spatial correlation) than the conv-head's",
              "mean off-diagonal cosine: conv-head output − fc-head output", "> 0"),
        lambda: _paired(study, [(conv, spatial_offdiagonal(s[conv], "conv_output")),
                                ("-" + fc, spatial_offdiagonal(s[fc], "fc_output"))]))
    add(Claim("fig6-single-conv-scores", "§5.2, Fig. 6",
              "Single-Conv gives higher classification scores than Double-Conv to proposals with high IoU",
              "mean score, windows with IoU ≥ 0.5: Single-Conv − Double-Conv", "> 0"),
        lambda: _paired(study, [(conv, window_mean(s[conv], "conv", "s", HIGH_IOU_BIN)),
                                ("-" + DOUBLE_CONV_MODEL, window_mean(s[DOUBLE_CONV_MODEL], "conv", "s",
                                                                      HIGH_IOU_BIN))]))
    add(Claim("fig7-double-fc-scores", "§5.2, Fig. 7",
              "Double-FC gives slightly higher classification scores than Single-FC",
              "mean score, windows with IoU ≥ 0.5: Double-FC − Single-FC", "> 0 (slightly)"),
        lambda: _paired(study, [(DOUBLE_FC_MODEL, window_mean(s[DOUBLE_FC_MODEL], "fc", "s", HIGH_IOU_BIN)),
                                ("-" + fc, window_mean(s[fc], "fc", "s", HIGH_IOU_BIN))]))
    add(Claim("fig7-double-fc-regression", "§5.2, Fig. 7", "Double-FC regresses better than Single-FC",
              "mean regressed IoU, windows with IoU ≥ 0.4: Double-FC − Single-FC", "> 0"),
        lambda: _paired(study, [(DOUBLE_FC_MODEL, window_mean(s[DOUBLE_FC_MODEL], "fc", "r", REG_FROM_BIN)),
                                ("-" + fc, window_mean(s[fc], "fc", "r", REG_FROM_BIN))]))
    add(Claim("figA3-ext-conv-scores", "A.2, Fig. A.3",
              "the conv-head of Double-Head-Ext scores high-IoU proposals higher than the conv-head alone",
              "mean score, windows with IoU ≥ 0.5: Ext conv-head − Single-Conv", "> 0"),
        lambda: _paired(study, [(EXT_MODEL, window_mean(s[EXT_MODEL], "conv", "s", HIGH_IOU_BIN)),
                                ("-" + conv, window_mean(s[conv], "conv", "s", HIGH_IOU_BIN))]))
    add(Claim("figA3-ext-conv-regression", "A.2, Fig. A.3",
              "the conv-head of Double-Head-Ext regresses better than the conv-head alone",
              "mean regressed IoU, windows with IoU ≥ 0.4: Ext conv-head − Single-Conv", "> 0"),
        lambda: _paired(study, [(EXT_MODEL, window_mean(s[EXT_MODEL], "conv", "r", REG_FROM_BIN)),
                                ("-" + conv, window_mean(s[conv], "conv", "r", REG_FROM_BIN))]))
    return rows


TABLE1_AP = {"single-fc-w1": 36.8, "single-conv-w1": 35.9, "double-fc-w1": 37.3, "double-conv-w1": 33.8,
             "double-head-reverse-w1": 32.6, "double-head-w1": 38.8, "double-fc-w2": 38.1, "double-conv-w2": 34.3,
             "double-head-reverse-w2": 32.0, "double-head-w2": 39.5}
DEFAULT_MODES = {"single-fc": "fc", "single-conv": "conv", "double-fc": "fc", "double-conv": "conv",
                 "double-head-reverse": "conv-cls+fc-reg", "double-head": "fc-cls+conv-reg"}


def _t1(run: str) -> tuple[str, str]:
    return run, DEFAULT_MODES[run.rsplit("-w", 1)[0]]


def ap_claims(study: Study, ext_run: str, vanilla_run: str) -> list[dict]:
    """Table 1, Table 3 and Fig. 8 claims from COCO AP (paired bootstrap over the evaluated images)."""
    rows = []

    def add(claim: Claim, a: tuple[str, str], b: Sequence[tuple[str, str]], below: bool = False) -> None:
        try:
            rows.append(_row(claim, _ap_diff(study, a, b, below=below), study.protocol))
        except (DHError, KeyError) as exc:
            rows.append(_row(claim, None, study.protocol, f"missing {exc}"))

    def ap(run: str) -> str:
        return f"{TABLE1_AP[run]:.1f}"

    for tag, group in (("w1", "weight 1.0"), ("w2", "ω 2.0/2.5")):
        dh = f"double-head-{tag}"
        for other, name in (("single-fc-w1", "Single-FC"), ("single-conv-w1", "Single-Conv"),
                            (f"double-fc-{tag}", "Double-FC"), (f"double-conv-{tag}", "Double-Conv")):
            add(Claim(f"table1-{tag}-double-head-vs-{other.rsplit('-w', 1)[0]}", "§5.2, Table 1",
                      f"Double-Head ({group}) beats {name}", f"AP(Double-Head {tag}) − AP({name})",
                      f"{ap(dh)} vs {ap(other)}"), _t1(dh), [_t1(other)])
        reverse = f"double-head-reverse-{tag}"
        others = [r for r in TABLE1_AP if r != reverse and (r.endswith(tag) or r.startswith("single"))]
        add(Claim(f"table1-{tag}-reverse-worst", "§5.2, Table 1", f"Double-Head-Reverse ({group}) is the worst",
                  f"lowest other AP − AP(Reverse {tag})", f"{ap(reverse)}, lowest of its group"),
            _t1(reverse), [_t1(o) for o in others], below=True)
    add(Claim("table1-single-conv-beats-double-conv", "§5.2, Table 1", "Single-Conv beats Double-Conv",
              "AP(Single-Conv) − AP(Double-Conv, weight 1.0)", "35.9 vs 33.8"),
        _t1("single-conv-w1"), [_t1("double-conv-w1")])
    add(Claim("table1-double-fc-beats-single-fc", "§5.2, Table 1", "Double-FC beats Single-FC",
              "AP(Double-FC, weight 1.0) − AP(Single-FC)", "37.3 vs 36.8"),
        _t1("double-fc-w1"), [_t1("single-fc-w1")])
    add(Claim("table3-complementary-vs-none", "§5.2, Table 3", "complementary fusion beats no fusion",
              "AP(complementary) − AP(fc-cls+conv-reg), Double-Head-Ext", "40.3 vs 39.7"),
        (ext_run, "complementary"), [(ext_run, "fc-cls+conv-reg")])
    add(Claim("table3-complementary-vs-max-average", "§5.2, Table 3", "complementary fusion beats max and average",
              "AP(complementary) − max(AP(max), AP(average))", "40.3 vs 39.9, 40.1"),
        (ext_run, "complementary"), [(ext_run, "max"), (ext_run, "average")])
    add(Claim("fig8-two-heads-beat-one", "§5.2, Fig. 8 (c) vs (a), (b)",
              "classification from the fc-head and boxes from the conv-head beat either head alone",
              "AP(fc-cls+conv-reg) − max(AP(fc), AP(conv)), Double-Head-Ext", "≥ +0.9 for every λ pair"),
        (ext_run, "fc-cls+conv-reg"), [(ext_run, "fc"), (ext_run, "conv")])
    add(Claim("fig8-unfocused-tasks-help", "§5.2, Fig. 8",
              "unfocused-task supervision helps: Ext beats vanilla Double-Head (λ = 1, 1)",
              "AP(Ext, complementary) − AP(Double-Head λ = 1, fc-cls+conv-reg)", "40.3 vs 39.8"),
        (ext_run, "complementary"), [(vanilla_run, "fc-cls+conv-reg")])
    return rows


def fig8_peak(evals: pd.DataFrame, protocol: str) -> dict:
    """Where the λ grid peaks (descriptive; the paper: λ_fc = 0.7, λ_conv = 0.8, complementary fusion)."""
    claim = Claim("fig8-peak", "§5.2, Fig. 8 (d)", "the best Double-Head-Ext has λ_fc = 0.7, λ_conv = 0.8",
                  "λ pair of the highest complementary-fusion AP on the grid", "(0.7, 0.8): 40.3")
    comp = evals[evals["mode"] == "complementary"]
    if comp.empty:
        return _row(claim, None, protocol, "no complementary-mode AP on the λ grid")
    if comp["lambda_fc"].nunique() < 2 or comp["lambda_conv"].nunique() < 2 or len(comp) < 4:
        return _row(claim, None, protocol, f"no peak to locate on {len(comp)} λ pair(s) with complementary fusion")
    best = comp.loc[comp["AP"].idxmax()]
    row = _row(claim, None, protocol)
    row.update(ours=float(best["AP"]) * 100, verdict=f"peak at ({best['lambda_fc']:g}, {best['lambda_conv']:g})",
               n_images=0)
    return row


def ap_scale_rows(rows: list[dict]) -> list[dict]:
    """AP differences as AP points (× 100), like the paper's tables."""
    for row in rows:
        if row["claim"].startswith(("table", "fig8-two", "fig8-unf")):
            for k in ("ours", "ci_low", "ci_high"):
                row[k] = row[k] * 100 if np.isfinite(row[k]) else row[k]
    return rows


def findings_table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col in FINDINGS_COLUMNS:
        if col not in frame.columns:
            frame[col] = np.nan
    frame["ours"] = frame["ours"].astype(float)
    for k in ("ci_low", "ci_high"):
        frame[k] = frame[k].astype(float)
    return frame[list(FINDINGS_COLUMNS)]


def findings_markdown(frame: pd.DataFrame, header: str = "") -> str:
    """The findings as a Markdown table: claim, the paper's number, ours [95% interval], verdict."""
    lines = [header] if header else []
    lines += ["| claim | paper | measure | ours [95% CI] | verdict |", "|---|---|---|---|---|"]
    for r in frame.itertuples():
        if np.isfinite(r.ours) and np.isfinite(r.ci_low):
            ours = f"{r.ours:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        elif np.isfinite(r.ours):
            ours = f"{r.ours:.1f}"
        else:
            ours = "–"
        lines.append(f"| {r.section}: {r.statement} | {r.paper} | {r.measure} | {ours} | {r.verdict} |")
    return "\n".join(lines) + "\n"


def write_findings(frame: pd.DataFrame, out: Path, header: str = "") -> list[Path]:
    from dhanalysis.folders import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / FINDINGS_CSV, frame.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(out / FINDINGS_MD, findings_markdown(frame, header))
    return [out / FINDINGS_CSV, out / FINDINGS_MD]


def load_matches(coco_gt, run_folder: Path, modes: Sequence[str], image_ids: list[int]) -> dict[str, CocoMatches]:
    """Per mode, the matching of a run's ``detections_<mode>.json`` on ``image_ids``."""
    out = {}
    for mode in modes:
        path = Path(run_folder) / detections_file(mode)
        if path.is_file():
            out[mode] = CocoMatches.from_results(coco_gt, json.loads(path.read_text()), image_ids)
    return out
