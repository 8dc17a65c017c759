"""The machinery of checking a paper's claims on trained models: per-image evidence, estimates with seed × image
intervals, verdicts raw and Holm-adjusted, and the findings table (findings.csv / findings.md).

Each claim is a signed difference that the paper says is positive ("the fc-head's score correlates more with IoU
than the conv-head's": PCC_fc − PCC_conv > 0). With models trained from several seeds, the estimate is the mean over
seeds of the per-seed difference (both sides of a difference trained with the same seed: paired). Every seed is
measured on the same images, so a bootstrap replicate draws those images once for every seed and model (crossed and
paired), and the 95% interval is a t interval from the seed and image variance components
(`bootstrap.seed_image_t`): it covers training noise as well as which images were drawn, and its coverage is
measured by simulation (tests/test_interval_coverage.py). AP claims resample the images AP was evaluated on, the
analysis claims the analysed images (``Estimate.image_set``, ``n_images``). A claim **holds** when the whole
interval is above 0, is **contradicted** when it is below 0, and is **inconclusive** otherwise; the Holm verdict
applies the same rule after Holm's correction over every decisive-kind claim of the table (`holm_verdicts`). Which
claims a study checks, and which model plays which role in them, is the study's business (`dhanalysis.study.claims`).

Inputs, per analysed model folder: the per-image chunks the analyses keep (``chunks/sliding_window``,
``chunks/pcc``, ``chunks/spatial_corr``; one image per chunk, ``--chunk-size 1``) and, per evaluated run,
``detections_<mode>.json`` with the dataset's ground truth, for AP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dhanalysis.metrics.resampled_ap import CocoMatches
from dhanalysis.stats.bootstrap import (DEFAULT_REPLICATES, holm, pcc_of_sums, ratio_of_sums,
                                           replicate_counts, seed_image_t, t_interval, t_p_value)
from dhanalysis.stats.moments import MOMENTS, NUM_BINS, PCC_MOMENTS
from dhanalysis.errors import DHError
from dhanalysis.vocab import (CHUNKS_DIR, FINDINGS_CSV, FINDINGS_MD, HEAD_TYPES, MODEL_PROPOSAL_SETS,
                              PCC_CHUNKS, PCC_STATS_CSV, SIZE_GROUPS, SLIDING_WINDOW_CHUNKS,
                              SLIDING_WINDOW_STATS_CSV, SPATIAL_CORR_CHUNKS, detections_file)

FINDINGS_COLUMNS = ("claim", "section", "statement", "quote", "measure", "paper", "trunk", "ours", "ci_low",
                    "ci_high", "p_value", "verdict", "verdict_holm", "role", "n_seeds", "n_images", "image_set",
                    "protocol", "alignment")
COL = {name: i for i, name in enumerate(MOMENTS)}
HIGH_IOU_BIN = NUM_BINS // 2  # windows with proposal IoU ≥ 0.5
REG_FROM_BIN = 8  # windows with proposal IoU ≥ 0.4, where §3.3 says the conv-head regresses better


# ----------------------------------------------------------------------------------------- per-image sums
def _chunks(chunk_dir: Path, task: str) -> list[dict]:
    """The per-image payloads of ``task`` in an analysis's chunk folder, one image per chunk."""
    from dhanalysis.probes.harness import per_image_payloads

    return per_image_payloads(chunk_dir, task)


@dataclass
class ImageSums:
    """Per-image sums of one model: ``window`` (N, H, K, G, B, 11), ``proposal`` (N, H, sets, G, B, 6), the
    within-object rank sums ``window_rank`` (N, H, G, 2) and ``proposal_rank`` (N, H, sets, G, 2) (Σ Spearman's ρ
    over the objects with one, and their count: `measures.object_values`), ``spatial`` {map: (N, cells, cells)} and
    ``objects`` (N,), on the common ``image_ids``."""

    image_ids: list[int]
    window_heads: list[str] = field(default_factory=list)
    window: np.ndarray | None = None
    proposal_heads: list[str] = field(default_factory=list)
    proposal: np.ndarray | None = None
    spatial: dict[str, np.ndarray] = field(default_factory=dict)
    objects: np.ndarray | None = None
    window_rank: np.ndarray | None = None
    proposal_rank: np.ndarray | None = None


def _rank_sums(chunk_dir: Path, task: str, image_ids: list[int], heads: int, sets: int) -> np.ndarray:
    """``(N, heads, sets, G, 2)`` per image: Σρ and the number of objects with a within-object Spearman ρ, from the
    chunks' object rows (one row per object, head and box set; rows of boxes on no object are left out)."""
    from dhanalysis.metrics.measures import OBJECT_VALUES, ROW_KEYS
    from dhanalysis.probes.harness import iter_rows

    order = np.asarray(image_ids, dtype=np.int64)  # sorted: the chunks are read in image-id order
    out = np.zeros((len(image_ids), heads, sets, len(SIZE_GROUPS), 2))
    rho_col = ROW_KEYS + OBJECT_VALUES.index("spearman")
    for rows in iter_rows(chunk_dir, task, "objects"):
        a = rows.numpy().reshape(-1, ROW_KEYS + len(OBJECT_VALUES)) if rows.shape[-1] != 0 else None
        if a is None or not len(a):
            continue
        rho = a[:, rho_col]
        keep = (a[:, 3] >= 0) & np.isfinite(rho)
        a, rho = a[keep], rho[keep]
        index = (np.searchsorted(order, a[:, 2].astype(np.int64)), a[:, 0].astype(np.int64),
                 a[:, 1].astype(np.int64), a[:, 5].astype(np.int64))
        np.add.at(out[..., 0], index, rho)
        np.add.at(out[..., 1], index, 1.0)
    return out


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
        sums.window_rank = _rank_sums(window_dir, "sliding_window", ids["window"], h, 1)[:, :, 0]
    if pcc_dir.is_dir():
        chunks = sorted(_chunks(pcc_dir, "pcc"), key=lambda c: c["image_id"])
        sums.proposal_heads = _heads_of(folder / PCC_STATS_CSV)
        arr = np.stack([c["sums"]["pcc"].numpy() for c in chunks])
        cells = len(MODEL_PROPOSAL_SETS) * num_classes * len(SIZE_GROUPS) * NUM_BINS
        if arr.shape[2] != cells:  # the sums before classes and IoU bins were kept
            raise DHError(f"{folder}: the pcc chunks were written before the alignment measures; rerun dhanalysis pcc "
                          "with --overwrite (and --chunk-size 1)")
        # (N, H, sets, K, G, B, 6) summed over classes: a claim compares whole sets (the bins give the positives)
        sums.proposal = arr.reshape(len(chunks), arr.shape[1], len(MODEL_PROPOSAL_SETS), num_classes,
                                    len(SIZE_GROUPS), NUM_BINS, len(PCC_MOMENTS)).sum(axis=3)
        ids["proposal"] = [c["image_id"] for c in chunks]
        sums.proposal_rank = _rank_sums(pcc_dir, "pcc", ids["proposal"], arr.shape[1], len(MODEL_PROPOSAL_SETS))
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


def window_positive_pcc(s: ImageSums, head: str, size: str | None = None, from_bin: int = HIGH_IOU_BIN) -> Stat:
    """PCC of score and proposal IoU over the positive windows only (bins ≥ ``from_bin``, IoU ≥ 0.5): how the score
    ranks boxes that are all on an object, without the recognition of object against background that the pooled PCC
    also holds (`measures`)."""
    m = _window_moments(s, head, size, slice(from_bin, None))
    cols = [COL[c] for c in ("n_s", "sum_x", "sum_x2", "sum_s", "sum_s2", "sum_xs")]
    return m[:, cols], pcc_of_sums


def window_object_rank(s: ImageSums, head: str, size: str | None = None) -> Stat:
    """Mean over objects of the within-object Spearman ρ of the positive windows' IoU and score (`measures`): the
    ranking of boxes on one object, each object weighing the same whatever its score level."""
    if s.window_rank is None or s.window is None or head not in s.window_heads:
        raise DHError(f"no within-object rank sums of the {head}-head's windows")
    r = s.window_rank[:, s.window_heads.index(head)]  # (N, G, 2)
    r = r[:, SIZE_GROUPS.index(size)] if size is not None else r.sum(axis=1)
    return r, ratio_of_sums


def window_mean(s: ImageSums, head: str, value: str, from_bin: int) -> Stat:
    """Mean score (``value="s"``) or regressed IoU (``"r"``) over windows with proposal IoU in bins ≥ ``from_bin``."""
    m = _window_moments(s, head, None, slice(from_bin, None))
    return m[:, [COL[f"sum_{value}"], COL[f"n_{value}"]]], ratio_of_sums


def proposal_pcc(s: ImageSums, head: str, which: str) -> Stat:
    """PCC of score and IoU for the model's own RPN proposals or final detections (§3.2, Fig. 3 right)."""
    if s.proposal is None or head not in s.proposal_heads:
        raise DHError(f"no rpn/detection PCC sums of the {head}-head")
    p = s.proposal[:, s.proposal_heads.index(head), MODEL_PROPOSAL_SETS.index(which)].sum(axis=(1, 2))
    return p, pcc_of_sums


def proposal_positive_pcc(s: ImageSums, head: str, which: str, from_bin: int = HIGH_IOU_BIN) -> Stat:
    """PCC of score and IoU over the positives (IoU ≥ 0.5) of the model's RPN proposals or detections."""
    if s.proposal is None or head not in s.proposal_heads:
        raise DHError(f"no rpn/detection PCC sums of the {head}-head")
    p = s.proposal[:, s.proposal_heads.index(head), MODEL_PROPOSAL_SETS.index(which), :, from_bin:].sum(axis=(1, 2))
    return p, pcc_of_sums


def proposal_object_rank(s: ImageSums, head: str, which: str) -> Stat:
    """Mean within-object Spearman ρ of the positives among the model's RPN proposals or detections (before NMS
    for proposals; after it an object rarely keeps two positives, and such objects are left out)."""
    if s.proposal_rank is None or head not in s.proposal_heads:
        raise DHError(f"no within-object rank sums of the {head}-head's {which}")
    return s.proposal_rank[:, s.proposal_heads.index(head), MODEL_PROPOSAL_SETS.index(which)].sum(axis=1), \
        ratio_of_sums


def spatial_offdiagonal(s: ImageSums, name: str) -> Stat:
    """Mean off-diagonal cosine of a head's output map over objects (§3.4, Fig. 4): lower = more spatially
    sensitive."""
    if name not in s.spatial:
        raise DHError(f"no spatial-correlation sums of {name}")
    maps = s.spatial[name]
    cells = maps.shape[-1]
    off = maps.sum(axis=(1, 2)) - np.trace(maps, axis1=1, axis2=2)
    return np.stack([off, s.objects * cells * (cells - 1)], axis=1), ratio_of_sums


# ----------------------------------------------------------------------------------------- estimates
ANALYSED_IMAGES, EVALUATED_IMAGES = "analysed", "evaluated"  # the image sets an estimate can be measured on


@dataclass
class Evidence:
    """What estimates are computed from, for one trunk: per seed (in ``seeds`` order) the analysed models' per-image
    sums and the evaluated runs' AP matches, and the bootstrap draws the claims share.

    The analyses and AP may cover different images (the study analyses 100 of the 300 test images it measures AP
    on), so each image set has its own draws (`draws`): a claim's replicates resample the images its estimate is
    computed from. Every seed and every model on a set reads the same draw of a replicate (crossed and paired).

    Models may have different numbers of seeds (the study trains the §3 models on more): a model's entry is ``None``
    for a seed it lacks, and a comparison uses the seeds every one of its models has (`Estimate.seeds`)."""

    seeds: list[int]
    sums: dict[str, list[ImageSums | None]]  # model -> per seed
    matches: dict[tuple[str, str], list[CocoMatches | None]]  # (run, mode) -> per seed
    replicates: int = DEFAULT_REPLICATES
    seed: int = 0
    _draws: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)
    _ap_cache: dict = field(default_factory=dict, repr=False)

    def draws(self, image_ids: Sequence[int]) -> np.ndarray:
        """``(B, N)`` how often each of the N images of ``image_ids`` is drawn in each replicate: drawn once per image
        set and shared by every claim measured on it."""
        key = tuple(int(i) for i in image_ids)
        if key not in self._draws:
            self._draws[key] = replicate_counts(len(key), self.replicates, self.seed)
        return self._draws[key]

    def ap(self, key: tuple[str, str], metric: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """AP of run/mode ``key``: ``(S,)`` per seed on every image it was evaluated on, and ``(B, S)`` per replicate
        and seed on that replicate's draw of those images (computed once, shared by every claim); NaN columns for
        the seeds the run lacks."""
        if key not in self._ap_cache:  # AP and AP50 come out of one accumulation: both are kept
            if key not in self.matches or all(m is None for m in self.matches[key]):
                raise DHError(f"run {key[0]} has no '{key[1]}' detections to measure AP on")
            per_seed = self.matches[key]
            ids = next(m for m in per_seed if m is not None).image_ids
            if any(m is not None and m.image_ids != ids for m in per_seed):
                raise DHError(f"the seeds of run {key[0]} were evaluated on different images")
            own = np.array([m.ap() if m is not None else (np.nan, np.nan) for m in per_seed])  # (S, 2)
            reps = np.full((self.replicates, len(per_seed), 2), np.nan)
            for s, m in enumerate(per_seed):
                if m is not None:
                    reps[:, s] = m.ap_replicates(self.draws(ids))
            self._ap_cache[key] = (own, reps)
        own, reps = self._ap_cache[key]
        return own[:, metric], reps[..., metric]

    def image_ids_of(self, key: tuple[str, str]) -> list[int]:
        return next(m for m in self.matches[key] if m is not None).image_ids


StatFn = Callable[[ImageSums], Stat]


@dataclass(frozen=True)
class Estimate:
    """A claim's measurement: the estimate (mean over seeds), its interval, the p-value of "it is 0" from the same t
    (`bootstrap.seed_image_t`), each seed's value, and the images it was measured on (``image_set``: the analysed
    images or the images AP was evaluated on; ``n_images`` of them). ``se`` and ``df`` are the t's standard error
    and degrees of freedom."""

    value: float
    ci_low: float
    ci_high: float
    p_value: float
    per_seed: tuple[float, ...]
    n_images: int
    image_set: str = ""
    se: float = float("nan")
    df: float = float("nan")
    seeds: tuple[int, ...] = ()
    label: str = ""  # which component an all-pairs estimate reports (its weakest pair)

    def above(self, magnitude: float) -> Estimate:
        """The same estimate tested against ``magnitude`` instead of 0: value, interval and p-value shifted (so its
        verdict says whether the difference is above the magnitude)."""
        value = self.value - magnitude
        return replace(self, value=value, ci_low=self.ci_low - magnitude, ci_high=self.ci_high - magnitude,
                       p_value=t_p_value(value, self.se, self.df) if np.isfinite(self.se) else float("nan"))


def _estimate(per_seed: np.ndarray, reps: np.ndarray, n_images: int, image_set: str,
              seeds: Sequence[int] = ()) -> Estimate:
    """``per_seed`` ``(S,)`` and its replicates ``(B, S)`` (one image draw per replicate, shared by the seeds)."""
    value, se, df = (float(v) for v in seed_image_t(per_seed, reps, n_images))
    lo, hi = t_interval(value, se, df)
    return Estimate(value, lo, hi, t_p_value(value, se, df), tuple(float(v) for v in per_seed), n_images, image_set,
                    se, df, tuple(int(x) for x in seeds))


def paired_difference(evidence: Evidence, parts: Sequence[tuple[float, str, StatFn]]) -> Estimate:
    """Σ sign · f(model) over ``parts`` ((sign, model, statistic of its per-image sums)), within each seed, then
    averaged over seeds; every part and seed of a replicate reads the same drawn images (of the analysed set)."""
    ids = None
    for _, model, _ in parts:
        if model not in evidence.sums:
            raise DHError(f"model {model} was not analysed")
        for sums in evidence.sums[model]:
            ids = sums.image_ids if ids is None and sums is not None else ids
            if sums is not None and sums.image_ids != ids:
                raise DHError(f"models {', '.join(m for _, m, _ in parts)} were analysed on different images; "
                              "analyse them on the same images to compare them")
    slots = [i for i in range(len(evidence.seeds)) if all(evidence.sums[m][i] is not None for _, m, _ in parts)]
    if not slots:
        raise DHError(f"models {', '.join(m for _, m, _ in parts)} share no seed")
    counts = evidence.draws(ids)
    values, reps = np.zeros(len(slots)), np.zeros((len(counts), len(slots)))
    for j, s in enumerate(slots):
        for sign, model, fn in parts:
            x, f = fn(evidence.sums[model][s])
            values[j] += sign * float(f(x.sum(axis=0)))
            reps[:, j] += sign * f(counts @ x)
    return _estimate(values, reps, len(ids), ANALYSED_IMAGES, [evidence.seeds[s] for s in slots])


def ap_difference(evidence: Evidence, a: tuple[str, str], b: Sequence[tuple[str, str]], metric: int = 0,
                  below: bool = False) -> Estimate:
    """AP(a) − max AP(b) (a above all of b), or with ``below`` min AP(b) − AP(a) (a below all of b), within each
    seed, averaged over seeds, in AP points (× 100, as the paper's tables); replicates resample the images AP was
    evaluated on, the same draw for every run and seed."""
    for other in (a, *b):
        if other not in evidence.matches or all(m is None for m in evidence.matches[other]):
            raise DHError(f"run {other[0]} has no '{other[1]}' detections to measure AP on")
        if evidence.image_ids_of(other) != evidence.image_ids_of(a):
            raise DHError(f"runs {a[0]} and {other[0]} were evaluated on different images")
    slots = [i for i in range(len(evidence.seeds)) if all(evidence.matches[k][i] is not None for k in (a, *b))]
    if not slots:
        raise DHError(f"runs {', '.join(k[0] for k in (a, *b))} share no seed")
    own, own_reps = (v[..., slots] for v in evidence.ap(a, metric))
    others = [tuple(v[..., slots] for v in evidence.ap(o, metric)) for o in b]
    other_vals, other_reps = np.stack([v for v, _ in others]), np.stack([r for _, r in others])
    if below:
        per_seed, reps = other_vals.min(0) - own, other_reps.min(0) - own_reps
    else:
        per_seed, reps = own - other_vals.max(0), own_reps - other_reps.max(0)
    n = len(evidence.image_ids_of(a))
    return _estimate(per_seed * 100, reps * 100, n, EVALUATED_IMAGES, [evidence.seeds[s] for s in slots])


def all_hold(components: Sequence[Estimate], labels: Sequence[str] = ()) -> Estimate:
    """"For every pair": the estimate and interval of the *weakest* component, the one that decides the verdict (the
    claim holds only where every component holds): a contradicted component if there is one (the lowest upper
    bound), else the component with the lowest lower bound. The p-value is the intersection-union one (the largest
    component's): rejecting the union of nulls needs each one rejected. ``labels`` name the components; the
    estimate's ``label`` says which one it reports."""
    contradicted = [i for i, c in enumerate(components) if c.ci_high < 0]
    pick = (min(contradicted, key=lambda i: components[i].ci_high) if contradicted
            else min(range(len(components)), key=lambda i: components[i].ci_low))
    w = components[pick]
    return replace(w, p_value=max(c.p_value for c in components), per_seed=(),
                   label=labels[pick] if labels else "")


def verdict(lo: float, hi: float) -> str:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return "not measured"
    if lo > 0:
        return "holds"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


def holm_verdicts(frame: pd.DataFrame) -> list[str]:
    """The Holm-adjusted verdict of every row: over the rows whose raw verdict is decisive-kind (holds, contradicted
    or inconclusive) and that are claims of their own (not components of a "for every pair" row), a row keeps its
    direction when Holm's rule rejects "the difference is 0" for it, and is inconclusive otherwise."""
    family = [i for i, (v, role) in enumerate(zip(frame["verdict"], frame["role"]))
              if v in ("holds", "contradicted", "inconclusive") and role != "component"]
    rejected = holm([float(frame["p_value"].iloc[i]) for i in family])
    out = ["" for _ in range(len(frame))]
    for i, r in zip(family, rejected):
        out[i] = frame["verdict"].iloc[i] if r and frame["verdict"].iloc[i] != "inconclusive" else "inconclusive"
    return out


def findings_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as findings.csv's table (`FINDINGS_COLUMNS`), with the Holm verdict of each filled in."""
    frame = pd.DataFrame(rows)
    for col in FINDINGS_COLUMNS:
        if col not in frame.columns:
            frame[col] = np.nan
    for k in ("ours", "ci_low", "ci_high", "p_value"):
        frame[k] = frame[k].astype(float)
    frame["role"] = frame["role"].fillna("claim")
    frame["verdict_holm"] = holm_verdicts(frame)
    return frame[list(FINDINGS_COLUMNS)].reset_index(drop=True)


def format_estimate(r) -> str:
    """A findings row's estimate as text: "+0.123 [+0.100, +0.150]", a descriptive number, or "–"."""
    if np.isfinite(r.ours) and np.isfinite(r.ci_low):
        return f"{r.ours:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
    if np.isfinite(r.ours):
        return f"{r.ours:.1f}"
    return "–"


def findings_markdown(frame: pd.DataFrame, header: str = "") -> str:
    """The findings as a Markdown table: claim, the paper's number, the measure, the trunk, ours [95% interval],
    the raw and the Holm-adjusted verdicts, the number of seeds."""
    lines = [header] if header else []
    lines += ["| claim | paper | measure | trunk | ours [95% CI] | verdict | Holm | seeds |",
              "|---|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        seeds = "" if not np.isfinite(r.n_seeds) else f"{int(r.n_seeds)}"
        holm_v = r.verdict_holm if isinstance(r.verdict_holm, str) else ""
        lines.append(f"| {r.section}: {r.statement} | {r.paper} | {r.measure} | {r.trunk} | {format_estimate(r)} | "
                     f"{r.verdict} | {holm_v} | {seeds} |")
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
