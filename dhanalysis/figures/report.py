"""One self-contained page per results folder (``report.html``): the headline numbers with their intervals, every
figure the folder allows, the definitions of the measures and the protocol the run recorded.

A reader who was not there should be able to judge a result from one file that opens anywhere (mailed, attached to
an issue, opened offline), so the page carries everything inline: figures as base64 PNG, one small style sheet, no
script, no font and no address outside the page. It reads what `dhanalysis.figures.render` reads (the `Results`
tree: a model folder of ``dhanalysis detections``, ``compare``, ``sliding-window``, ``pcc`` … or a folder of them)
and draws each figure with `render.figure_and_table`, so the page and ``dhanalysis figures`` never disagree on what
a folder allows. Every setting it states (replicates, IoU thresholds, stage, maximum detections) is read from the
folder's summaries and tables; what a run did not record is said to be not recorded, never filled in.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from dhanalysis.errors import DHError
from dhanalysis.figures.render import FIGURES, SKIPPED, TABLE_CAPTIONS, Results, figure_and_table, table
from dhanalysis.figures.style import RC
from dhanalysis.folders import atomic_write_text
from dhanalysis.results import RESULTS, ModelResults
from dhanalysis.stats.bootstrap import CONFIDENCE
from dhanalysis.stats.moments import pcc_from_stats
from dhanalysis.vocab import (ALIGNMENT_MEASURE_LABELS, COMPARE_CSV, COMPARE_SUMMARY_JSON,
                              DETECTIONS_ALIGNMENT_CSV, DETECTIONS_CALIBRATION_CSV, DETECTIONS_CONFUSION_CSV,
                              DETECTIONS_LRP_CSV, DETECTIONS_MEASURES_CSV, DETECTIONS_ORACLE_CSV,
                              DETECTIONS_RECALL_CSV, DETECTIONS_SUMMARY_JSON, DETECTIONS_THRESHOLDS_CSV,
                              DETECTIONS_TIDE_CSV, EVAL_CSV, METRICS, PCC_CSV, REPORT_HTML,
                              SLIDING_WINDOW_STATS_CSV, STAGE_NOT_STATED)

PNG_DPI = 110  # sharp on a screen at the page's width, a few hundred kB per figure
MAX_ROWS = 40  # a table longer than this shows its first rows and names its file for the rest
HEADLINE_COLUMNS = ("source", "who", "measure", "label", "group", "value", "ci_low", "ci_high", "n")

# What each number means, in one sentence each (alignment measures: `dhanalysis.metrics.measures`; COCO:
# COCOeval's summarize(), fractions in [0, 1]).
DEFINITIONS: dict[str, str] = {
    "AP": "COCO average precision: the mean over IoU thresholds 0.50:0.05:0.95 and over classes of the 101-point "
          "interpolated precision, area 'all', 100 detections per image",
    "AP50": "AP at the single IoU threshold 0.50", "AP75": "AP at the single IoU threshold 0.75",
    "APs": "AP of small objects (area < 32²)", "APm": "AP of medium objects (32² to 96²)",
    "APl": "AP of large objects (area ≥ 96²)",
    "AR1": "COCO average recall at IoU 0.50:0.95 with 1 detection per image",
    "AR10": "average recall with 10 detections per image", "AR100": "average recall with 100 detections per image",
    "ARs": "AR100 of small objects", "ARm": "AR100 of medium objects", "ARl": "AR100 of large objects",
    "tide_ap50": "AP50 as TIDE computes it, the base its error contributions (dAP) are measured against",
    "ece_50": "D-ECE: detection expected calibration error, TP = match at IoU 0.5",
    "ece_75": "D-ECE with TP = match at IoU 0.75",
    "mce_50": "maximum calibration error (largest bin gap) at IoU 0.5", "mce_75": "the same at IoU 0.75",
    "laece": "LaECE_0: localisation-aware calibration error (score against IoU × TP), mean over classes",
    "olrp": "moLRP: mean over classes of the optimal localisation-recall-precision error (lower is better)",
    "olrp_loc": "oLRP's localisation component", "olrp_fp": "oLRP's false-positive component",
    "olrp_fn": "oLRP's false-negative component",
    "spearman": "Spearman's rank correlation of score and IoU, every detection pooled",
    "kendall": "Kendall's τ-b of score and IoU, every detection pooled",
    "pooled_pcc": "Pearson's r of score and IoU over every box of every object (the paper's PCC, §3.2)",
    "positive_pcc": "Pearson's r over the positives only (IoU at or above the positive threshold)",
    "object_spearman": "for each object with two or more positive boxes, Spearman's ρ of their IoUs and scores; the "
                       "mean over objects",
    "object_kendall": "the same with Kendall's τ-b",
    "nms_gap": "mean over objects of (best IoU among its positives − IoU of its top-scored positive): the IoU NMS "
               "loses by the ranking",
    "nms_near_best": "share of objects whose top-scored positive is within 0.05 IoU of their best",
    "curve_pcc": "corr(IoU, mean score of the IoU bin): how straight the mean-score curve is",
    "explained_share": "var(bin-mean score) / var(score): how much of the score varies with the IoU bin",
    "within_bin": "the rest of the pooled r left within IoU bins of width 0.05 (pooled = curve · √explained + rest)",
    "sw_pcc_score": "Pearson's r of a head's classification score with the window's IoU, every sliding window "
                    "pooled (from the moment sums)",
    "sw_pcc_reg_iou": "Pearson's r of the IoU after the head's box regression with the window's IoU, pooled",
    "difference": "second results file minus the first, with the paired bootstrap interval of the difference",
}

# the headline's words for a measure (the tables' names otherwise)
LABELS = {**ALIGNMENT_MEASURE_LABELS, "sw_pcc_score": "PCC score vs IoU, every window",
          "sw_pcc_reg_iou": "PCC regressed IoU vs IoU, every window", "spearman": "Spearman, every detection",
          "kendall": "Kendall, every detection"}


# ---------------------------------------------------------------------------------------------- formatting
def fmt(value: object) -> str:
    """A number as the page shows it: three decimals for values of order one, thousands separated for counts,
    scientific for tiny ones, an em dash for missing; anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"


def _number(value: object) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _count(value: object) -> str:
    number = _number(value)
    return "—" if number is None else f"{round(number):,}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def html_table(frame: pd.DataFrame, caption: str | None = None, source: str | None = None) -> str:
    """A table through pandas (cells escaped, numbers by `fmt`), cut to `MAX_ROWS` with a line naming its file."""
    shown = frame.head(MAX_ROWS)
    body = shown.to_html(index=False, escape=True, border=0, classes="data", na_rep="—",
                         formatters={c: fmt for c in shown.columns if pd.api.types.is_numeric_dtype(shown[c])})
    more = (f'<p class="note">First {MAX_ROWS} of {len(frame):,} rows; all of them in {_esc(source)}.</p>'
            if len(frame) > MAX_ROWS and source else "")
    head = f"<h4>{_esc(caption)}</h4>" if caption else ""
    return head + body + more


# ---------------------------------------------------------------------------------------------- headline numbers
def _rows(source: str, who: str, values: Iterable[tuple[str, float, float | None, float | None, object]],
          group: str = "all") -> list[dict]:
    return [{"source": source, "who": who, "measure": m, "label": m, "group": group, "value": v, "ci_low": lo,
             "ci_high": hi, "n": n} for m, v, lo, hi, n in values]


def _detections_rows(model: ModelResults) -> list[dict]:
    """COCO, calibration and LRP numbers of the summary (point values), then the score-IoU measures (with
    intervals) of det_alignment.csv and det_measures.csv, overall."""
    summary = json.loads(model.path(DETECTIONS_SUMMARY_JSON).read_text())
    coco = summary.get("coco") or {}
    rows = _rows(DETECTIONS_SUMMARY_JSON, "COCOeval", ((k, v, None, None, summary.get("images"))
                                                       for k, v in coco.items()))
    rows += _rows(DETECTIONS_SUMMARY_JSON, "calibration, LRP, TIDE",
                  ((k, summary[k], None, None, None) for k in ("ece_50", "ece_75", "laece", "olrp", "tide_ap50")
                   if k in summary))
    if model.path(DETECTIONS_ALIGNMENT_CSV):
        align = pd.read_csv(model.path(DETECTIONS_ALIGNMENT_CSV))
        for r in align[align["grouping"] == "all"].to_dict("records"):
            rows += _rows(DETECTIONS_ALIGNMENT_CSV, r["score_field"],
                          ((c, r[c], r[f"{c}_lo"], r[f"{c}_hi"], r["n"]) for c in ("spearman", "kendall")))
    if model.path(DETECTIONS_MEASURES_CSV):
        rows += _measure_rows(pd.read_csv(model.path(DETECTIONS_MEASURES_CSV)), DETECTIONS_MEASURES_CSV,
                              ("score_field",))
    return rows


def _measure_rows(frame: pd.DataFrame, source: str, who: tuple[str, ...]) -> list[dict]:
    """The overall rows of a measures table (det_measures.csv, pcc.csv): value ``pcc`` with ci_low / ci_high."""
    rows = []
    for r in frame[frame["grouping"] == "all"].to_dict("records"):
        name = " / ".join(str(r[c]) for c in who if isinstance(r.get(c), str) and r[c])
        # a table written before the alignment measures holds the paper's pooled PCC only, without intervals
        rows += _rows(source, name, [(r.get("measure", "pooled_pcc"), r["pcc"], r.get("ci_low"), r.get("ci_high"),
                                      r.get("n"))])
    return rows


def _compare_rows(model: ModelResults) -> list[dict]:
    names = json.loads(model.path(COMPARE_SUMMARY_JSON).read_text()).get("names") or {}
    who = f"{names.get('b', 'b')} − {names.get('a', 'a')}"
    frame = pd.read_csv(model.path(COMPARE_CSV))
    return _rows(COMPARE_CSV, who, ((r["metric"], r["difference"], r["ci_low"], r["ci_high"], r["n_images"])
                                    for r in frame.to_dict("records")))


def _sliding_window_rows(model: ModelResults) -> list[dict]:
    """Pooled PCCs of score and regressed IoU with the window IoU per head, from the moment sums (no interval: the
    sums hold no per-image split)."""
    stats = pd.read_csv(model.path(SLIDING_WINDOW_STATS_CSV))
    rows = []
    for y in ("score", "reg_iou"):
        for r in pcc_from_stats(stats, ("head",), y).to_dict("records"):
            rows += _rows(SLIDING_WINDOW_STATS_CSV, r["head"], [(f"sw_pcc_{y}", r["pcc"], None, None, r["n"])])
    return rows


def _eval_rows(model: ModelResults) -> list[dict]:
    frame = pd.read_csv(model.path(EVAL_CSV))
    return [row for r in frame.to_dict("records")
            for row in _rows(EVAL_CSV, f"mode {r['mode']}", ((m, r[m], None, None, None) for m in METRICS if m in r))]


# (file that must be present, its headline rows)
HEADLINES: tuple[tuple[str, Callable[[ModelResults], list[dict]]], ...] = (
    (DETECTIONS_SUMMARY_JSON, _detections_rows),
    (COMPARE_CSV, _compare_rows),
    (EVAL_CSV, _eval_rows),
    (SLIDING_WINDOW_STATS_CSV, _sliding_window_rows),
    (PCC_CSV, lambda m: _measure_rows(pd.read_csv(m.path(PCC_CSV)), PCC_CSV, ("head", "proposal_set", "mode"))),
)


def headline(model: ModelResults) -> pd.DataFrame:
    """The headline numbers of one model folder (`HEADLINE_COLUMNS`), each measure labelled in words."""
    rows = [r for file, read in HEADLINES if model.path(file) for r in read(model)]
    frame = pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS))
    frame["label"] = [LABELS.get(m, m) for m in frame["measure"]]
    return frame


def _interval(low: object, high: object) -> str:
    lo, hi = _number(low), _number(high)
    return "—" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]"


def headline_html(frame: pd.DataFrame, model: str = "") -> str:
    """The headline table; each value cell carries its file, measure and exact value (``data-*``), so what the page
    shows can be checked against the tables it was read from."""
    head = "".join(f"<th>{h}</th>" for h in ("Source", "Of", "Measure", "Value", f"{CONFIDENCE:.0%} interval", "n"))
    body = []
    for r in frame.to_dict("records"):
        data = {"model": model, "source": r["source"], "who": r["who"], "measure": r["measure"], "value": repr(_number(r["value"])),
                "low": repr(_number(r["ci_low"])), "high": repr(_number(r["ci_high"]))}
        attrs = " ".join(f'data-{k}="{_esc(v)}"' for k, v in data.items())
        title = _esc(DEFINITIONS.get(r["measure"], r["measure"]))
        body.append(f"<tr><td>{_esc(r['source'])}</td><td>{_esc(r['who'])}</td>"
                    f'<td title="{title}">{_esc(r["label"])}</td><td class="num headline" {attrs}>'
                    f"{fmt(_number(r['value']))}</td><td class=\"num\">{_interval(r['ci_low'], r['ci_high'])}</td>"
                    f"<td class=\"num\">{_count(r['n'])}</td></tr>")
    return f'<table class="data headline"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ---------------------------------------------------------------------------------------------- figures and tables
def png_uri(fig) -> str:
    """``fig`` as a ``data:image/png;base64,...`` address (the figure is closed)."""
    buffer = io.BytesIO()
    with plt.rc_context(RC):
        fig.savefig(buffer, format="png", dpi=PNG_DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figures_html(res: Results) -> tuple[str, list[str]]:
    """Every figure of `render.FIGURES` the folder allows, as embedded PNGs, and the keys drawn; the figures it
    does not allow are listed with the line saying what would produce them."""
    drawn, blocks, skipped, warnings = [], [], [], []

    def log(line: str) -> None:
        (skipped if SKIPPED in line else warnings).append(line)

    for key, (name, _) in FIGURES.items():
        out = figure_and_table(res, key, log)
        if out is None:
            continue
        drawn.append(key)
        blocks.append(f'<figure id="fig-{_esc(key)}"><img src="{png_uri(out[0])}" alt="{_esc(name)}" '
                      f'data-key="{_esc(key)}"><figcaption>{_esc(name)}</figcaption></figure>')
    notes = "".join(f'<p class="warning">{_esc(w)}</p>' for w in warnings)
    missing = ("<details><summary>Figures this folder does not allow ({})</summary><ul>{}</ul></details>"
               .format(len(skipped), "".join(f"<li>{_esc(s)}</li>" for s in skipped)) if skipped else "")
    body = "".join(blocks) if blocks else '<p class="note">No figure: the folder holds none of their inputs.</p>'
    return notes + body + missing, drawn


# (file, caption, the rows shown); every table is shown as the analysis wrote it, filtered at most
TABLES: tuple[tuple[str, str, Callable[[pd.DataFrame], pd.DataFrame] | None], ...] = (
    (EVAL_CSV, "COCO metrics per inference mode (eval)", None),
    (COMPARE_CSV, "Every metric of the two detectors, their difference and its paired interval", None),
    (DETECTIONS_ORACLE_CSV, "AP with the real scores, and with each detection's IoU or score × IoU as its score",
     None),
    (DETECTIONS_TIDE_CSV, "TIDE: the AP50 each error type costs (dAP)", None),
    (DETECTIONS_THRESHOLDS_CSV, "Precision, recall and F1 at the fixed and the best-F1 score threshold", None),
    (DETECTIONS_RECALL_CSV, "Average recall per area range and maximum detections, all classes",
     lambda t: t[t["category_id"] == -1]),
    (DETECTIONS_LRP_CSV, "oLRP and its components, all classes and per class", None),
    (DETECTIONS_MEASURES_CSV, "Score-IoU alignment measures overall and by size",
     lambda t: t[t["grouping"].isin(["all", "size"])]),
    (PCC_CSV, "Alignment measures per head and box set, overall and by size",
     lambda t: t[t["grouping"].isin(["all", "size"])]),
)


def tables_html(res: Results) -> str:
    """The paper's tables the folder allows (Tables 1, 2, 3, 5) and each model's small result tables."""
    parts = []
    for key, caption in TABLE_CAPTIONS.items():
        tab = table(res, key)
        if isinstance(tab, pd.DataFrame):
            parts.append(html_table(tab, caption))
    for name, model in res.models.items():
        for file, caption, keep in TABLES:
            if model.path(file):
                frame = pd.read_csv(model.path(file))
                frame = keep(frame) if keep else frame
                parts.append(html_table(frame, f"{name}: {caption} ({file})", file))
    return "".join(parts) or '<p class="note">No table.</p>'


def definitions_html(measures: Iterable[str]) -> str:
    """The definition of every measure the page shows that has one."""
    shown = set(measures)
    items = [f"<dt>{_esc(LABELS.get(m, m))} <code>{_esc(m)}</code></dt><dd>{_esc(text)}</dd>"
             for m, text in DEFINITIONS.items() if m in shown]
    return f"<dl>{''.join(items)}</dl>" if items else '<p class="note">No measure to define.</p>'


# ---------------------------------------------------------------------------------------------- protocol
NOT_RECORDED = "not recorded"


def _short(value: object) -> str:
    """A setting as written: 0.5, not 0.500."""
    return f"{value:g}" if isinstance(value, float) else fmt(value)


def _listed(values: Iterable[object]) -> str:
    return ", ".join(_short(v) for v in values)


def _unique(model: ModelResults, file: str, column: str, where: Mapping[str, object] | None = None) -> list:
    """The distinct values of one column of one table (rows filtered by ``where``), empty when absent."""
    if not model.path(file):
        return []
    frame = pd.read_csv(model.path(file))
    for key, value in (where or {}).items():
        frame = frame[frame[key] == value] if key in frame else frame.iloc[:0]
    return sorted(frame[column].dropna().unique().tolist()) if column in frame else []


def intervals_words(replicates: object, seed: object, method: str | None) -> str:
    """How the intervals were computed: the recorded method and number of replicates, or that there are none."""
    if replicates is None:
        return f"replicates {NOT_RECORDED}"
    if int(replicates) == 0:
        return "none (0 bootstrap replicates): point values only"
    return f"{method or NOT_RECORDED}; B = {int(replicates):,} replicates, seed {seed if seed is not None else '—'}"


def _detections_facts(model: ModelResults, s: dict) -> list[tuple[str, str]]:
    run, protocol = s.get("run") or {}, s.get("protocol") or {}
    source = f" (from {s['stage_source']})" if s.get("stage_source") else ""
    ious = [("precision / recall / F1", _unique(model, DETECTIONS_THRESHOLDS_CSV, "iou")),
            ("D-ECE", _unique(model, DETECTIONS_CALIBRATION_CSV, "iou", {"measure": "D-ECE"})),
            ("LaECE", _unique(model, DETECTIONS_CALIBRATION_CSV, "iou", {"measure": "LaECE"})),
            ("LRP τ", _unique(model, DETECTIONS_LRP_CSV, "tau")),
            ("confusion matrix IoU >", _unique(model, DETECTIONS_CONFUSION_CSV, "iou_threshold")),
            ("alignment positives IoU ≥", [run["positive_iou"]] if "positive_iou" in run else [])]
    dets = _unique(model, DETECTIONS_RECALL_CSV, "max_dets")
    return [
        ("Input", f"{fmt(s.get('detections'))} detections ({fmt(s.get('evaluated'))} evaluated) on "
                  f"{fmt(s.get('images'))} images, {fmt(s.get('ground_truths'))} ground truths; results file "
                  f"{(run.get('results') or {}).get('name', NOT_RECORDED)}"),
        ("Which detections", f"{s.get('stage', NOT_RECORDED)}{source}"
         + (" (before or after NMS: neither an eval sidecar nor the user said)"
            if s.get("stage") == STAGE_NOT_STATED else "")),
        ("IoU thresholds", "; ".join(f"{k} {_listed(v)}" for k, v in ious if v) or NOT_RECORDED),
        ("Maximum detections", (f"average recall at {_listed(dets)} per image; " if dets else "")
         + protocol.get("matching", NOT_RECORDED)),
        ("Score threshold", f"{_short(s.get('score_threshold'))} (precision / recall / F1, confusion matrix)"),
        ("Intervals", intervals_words(run.get("replicates"), run.get("seed"), protocol.get("bootstrap"))
         + "; COCO AP / AR, calibration, LRP and TIDE are point values on every image"),
    ]


def _compare_facts(model: ModelResults, s: dict) -> list[tuple[str, str]]:
    protocol, holm = s.get("protocol") or {}, s.get("holm") or {}
    names = s.get("names") or {}
    method = "; ".join(protocol[k] for k in ("interval", "bootstrap") if k in protocol) or None
    return [
        ("Detectors", f"a = {names.get('a', NOT_RECORDED)}, b = {names.get('b', NOT_RECORDED)}; "
                      f"{fmt(s.get('images'))} images; difference {s.get('difference', NOT_RECORDED)}"),
        ("Intervals", intervals_words(s.get("replicates"), s.get("seed"), method)),
        ("Tests", f"Holm at family-wise {_short(holm.get('alpha'))} over {fmt(holm.get('family'))} metrics; "
                  f"rejected: {', '.join(holm.get('rejected') or []) or 'none'}"),
    ]


def _box_sets(model: ModelResults, s: dict) -> str:
    """What each box set of pcc.csv is, with the model's settings that shape it (its config as the run recorded)."""
    cfg = (((s.get("run") or {}).get("config") or model.config or {}).get("model") or {})
    rpn = cfg.get("rpn") or {}
    words = {
        "predefined": f"sliding windows around each ground truth ({fmt(s.get('proposals_per_gt'))} per box, grid "
                      f"'{s.get('grid', NOT_RECORDED)}'), before any NMS",
        "rpn": f"the RPN's proposals before the box head (after the RPN's NMS at IoU "
               f"{_short(rpn.get('nms_thresh'))}, at most {fmt(rpn.get('post_nms_top_n_test'))} per image)",
        "detections": f"the detections after the box head's NMS (IoU {_short(cfg.get('nms_thresh'))}, score ≥ "
                      f"{_short(cfg.get('score_thresh'))}, at most {fmt(cfg.get('detections_per_img'))} per image; "
                      f"modes {', '.join(s.get('detection_modes') or []) or NOT_RECORDED})",
    }
    sets = _unique(model, PCC_CSV, "proposal_set")
    return "; ".join(f"{k}: {words.get(k, k)}" for k in sets) or NOT_RECORDED


def _pcc_facts(model: ModelResults, s: dict) -> list[tuple[str, str]]:
    method = f"{CONFIDENCE:.0%} percentile intervals over images resampled with replacement"
    return [("Box sets", _box_sets(model, s)),
            ("Positives", f"IoU ≥ {_short(s.get('positive_iou'))}"),
            ("Images", fmt(s.get("images"))),
            ("Intervals", intervals_words(s.get("bootstrap_replicates"), (s.get("run") or {}).get("seed"), method))]


def _sliding_window_facts(model: ModelResults, s: dict) -> list[tuple[str, str]]:
    grid = s.get("grid") or {}
    return [("Windows", f"{fmt(s.get('proposals'))} windows around {fmt(s.get('boxes'))} ground-truth boxes of "
                        f"{fmt(s.get('images'))} images (grid {grid.get('kind', NOT_RECORDED)}), scored by every "
                        "head without NMS"),
            ("Scoring", f"{s.get('scoring', NOT_RECORDED)} path, {s.get('precision', NOT_RECORDED)}"),
            ("Intervals", "none: the table holds moment sums over every window, not per image")]


def _eval_facts(model: ModelResults, s: dict) -> list[tuple[str, str]]:
    return [("Which detections", f"{s.get('stage', NOT_RECORDED)}: score ≥ {_short(s.get('score_thresh'))}, NMS IoU "
                                 f"{_short(s.get('nms_thresh'))}, at most {fmt(s.get('max_per_image'))} per image"),
            ("Modes", ", ".join(s.get("modes") or []) or NOT_RECORDED)]


FACTS: dict[str, Callable[[ModelResults, dict], list[tuple[str, str]]]] = {
    "detections": _detections_facts, "compare": _compare_facts, "pcc": _pcc_facts,
    "sliding-window": _sliding_window_facts, "eval": _eval_facts,
}


def _flat(obj: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts as dotted keys; lists as text."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    if isinstance(obj, list):
        text = ", ".join(map(str, obj))
        return {prefix[:-1]: text if len(text) <= 200 else text[:197] + "..."}
    return {prefix[:-1]: obj}


def protocol_html(model: ModelResults) -> str:
    """Each analysis of the folder: the facts read from its summary and tables, its recorded protocol, and every
    recorded setting."""
    parts = []
    for outputs in RESULTS.values():
        path = model.path(outputs.summary) if outputs.summary and outputs.analysis != "model" else None
        if path is None:
            continue
        summary = json.loads(path.read_text())
        facts = FACTS.get(outputs.analysis, lambda m, s: [])(model, summary)
        recorded = summary.get("protocol") or {}
        settings = pd.DataFrame([{"setting": k, "value": v} for k, v in
                                 _flat({k: v for k, v in summary.items() if k != "protocol"}).items()])
        parts.append(
            f"<h4>{_esc(outputs.analysis)} <span class=\"note\">({_esc(outputs.summary)})</span></h4>"
            + "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts) + "</dl>"
            + ("<details open><summary>Protocol as recorded</summary><dl>"
               + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in recorded.items())
               + "</dl></details>" if recorded else "")
            + f"<details><summary>Every recorded setting ({len(settings)})</summary>"
            + settings.to_html(index=False, escape=True, border=0, classes="data", na_rep="—") + "</details>")
    return "".join(parts) or '<p class="note">No summary: the folder records no protocol.</p>'


# ---------------------------------------------------------------------------------------------- the page
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1150px;
padding:1em 2em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
nav a{margin-right:1em}table.data{border-collapse:collapse;margin:.5em 0 1em;font-size:.88em}
table.data th,table.data td{padding:.2em .6em;border-bottom:1px solid #e2e2e2;text-align:left}
table.data th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.headline{font-weight:600}figure{margin:1em 0;padding:.5em;border:1px solid #e2e2e2;display:inline-block;
max-width:100%;box-sizing:border-box}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.9em;color:#555;margin-top:.3em}dt{font-weight:600;margin-top:.4em}dd{margin-left:1.5em}
.note{color:#666;font-size:.9em}.warning{color:#a00}code{font-size:.85em;color:#555}
details{margin:.4em 0}summary{cursor:pointer;color:#444}
"""
SECTIONS = (("headline", "Headline numbers"), ("figures", "Figures"), ("tables", "Tables"),
            ("definitions", "Definitions of the measures"), ("protocol", "Protocol"))


def _model_title(model: ModelResults) -> str:
    return f"<h3>{_esc(model.name)}" + (f' <span class="note">({_esc(model.variant)})</span>' if model.variant
                                        else "") + "</h3>"


def report_html(res: Results, title: str) -> str:
    """The whole page of one results tree."""
    heads = {name: headline(m) for name, m in res.models.items()}
    headline_part = "".join(_model_title(res.models[n]) + (headline_html(h, n) if len(h) else
                                                            '<p class="note">No headline number.</p>')
                            for n, h in heads.items()) or '<p class="note">No model folder.</p>'
    figures_part, drawn = figures_html(res)
    shown = {m for h in heads.values() for m in h["measure"]}
    bodies = {
        "headline": headline_part, "figures": figures_part, "tables": tables_html(res),
        "definitions": definitions_html(shown),
        "protocol": "".join(_model_title(m) + protocol_html(m) for m in res.models.values())
        or '<p class="note">No model folder.</p>',
    }
    models = ", ".join(f"{n} ({m.variant or 'variant unknown'})" for n, m in res.models.items()) or "none"
    nav = "".join(f'<a href="#{key}">{name}</a>' for key, name in SECTIONS)
    sections = "".join(f'<section id="{key}"><h2>{name}</h2>{bodies[key]}</section>' for key, name in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"generator\" content=\"{GENERATOR}\">"
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{_esc(title)}</h1><p class=\"note\">Model folders: {_esc(models)}. "
            f"{len(drawn)} figures. Numbers are as the tables hold them (AP and other rates as fractions).</p>"
            f"<nav>{nav}</nav></header>{sections}</body></html>\n")


GENERATOR = "dhanalysis report"  # marks a page this module wrote: only such a page is replaced without --overwrite


def written_by_us(path: Path) -> bool:
    """Whether ``path`` is a report page this module wrote (its generator tag within the first few kB)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f'<meta name="generator" content="{GENERATOR}">' in f.read(4096)
    except OSError:
        return False


def write_report(folder: Path, out: Path | None = None, overwrite: bool = False) -> Path:
    """Write the report page of a results folder (default ``folder / report.html``) atomically; returns its path.

    ``folder``: a model folder (``dhanalysis detections``, ``compare``, ``sliding-window``, ``pcc``, ``eval`` …) or a
    folder of them. A folder holding no results is a `DHError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DHError(f"{folder} is not a folder; give a results folder (written by dhanalysis detections, compare, "
                      "sliding-window, pcc or eval)")
    res = Results(folder)
    if not res.models and res.sweeps is None:
        raise DHError(f"{folder} holds no results (no model folder and no sweeps); give the folder a dhanalysis "
                      "analysis wrote")
    out = Path(out) if out is not None else folder / REPORT_HTML
    if out.exists() and not overwrite and not written_by_us(out):
        raise DHError(f"{out} exists and is not a report this command wrote; choose another --out or pass --overwrite")
    atomic_write_text(out, report_html(res, f"Results: {folder.resolve().name}"))
    return out
