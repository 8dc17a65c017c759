"""The report page of a results folder: its headline numbers equal the tables they come from (read here on their own),
every figure `render_all` draws from the folder is embedded as a PNG that decodes, the protocol is the one the folder
recorded, nothing outside the page is referenced, and a headless Chromium loads it without an error."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from dhanalysis.figures.report import DEFINITIONS, write_report
from dhanalysis.metrics import detections
from dhanalysis.vocab import ALIGNMENT_MEASURES, REPORT_HTML
from fixtures_results import write_fake_results
from test_detections import make_dets, make_gt, write

matplotlib.use("Agg")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPLICATES = 23  # odd numbers, so the page can only show them by reading the folder
PCC_REPLICATES, NMS_IOU, MAX_DETS = 137, 0.55, 77


class Page(HTMLParser):
    """Every tag's attributes, the images, and the headline table's rows (cells' attributes and text)."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[list[tuple[dict, str]]] = []
        self._in_headline = False
        self._cell: tuple[dict, list[str]] | None = None
        self.feed(text)

    @property
    def images(self) -> list[dict]:
        return [a for t, a in self.tags if t == "img"]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table" and "headline" in (attrs.get("class") or ""):
            self._in_headline = True
        elif self._in_headline and tag == "tr":
            self.rows.append([])
        elif self._in_headline and tag == "td":
            self._cell = (attrs, [])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_headline = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append((self._cell[0], "".join(self._cell[1]).strip()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1].append(data)

    def headline(self, source: str, measure: str, who: str | None = None, model: str | None = None
                 ) -> list[tuple[dict, str]]:
        """The one headline row of this file and measure (and ``who``, ``model``): its cells."""
        wanted = {"data-source": source, "data-measure": measure, "data-who": who, "data-model": model}
        found = [r for r in self.rows if len(r) > 3
                 and all(v is None or r[3][0].get(k) == v for k, v in wanted.items())]
        assert len(found) == 1, (wanted, len(found))
        return found[0]


@pytest.fixture(scope="module")
def det_folder(tmp_path_factory) -> Path:
    """A folder of the real `dhanalysis detections` on a small generated ground truth and results file."""
    tmp = tmp_path_factory.mktemp("det")
    gt = make_gt(1, images=12)
    gt_path, det_path = write(tmp, gt, make_dets(gt, 1))
    detections.compute_detections(gt_path, det_path, tmp / "out", replicates=REPLICATES, progress=lambda s: None)
    write_report(tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def sw_folder(tmp_path_factory) -> Path:
    """Three model folders of sliding-window statistics and pcc.csv; the Double-Head-Ext's pcc.csv with intervals
    and a pcc_summary.json as `dhanalysis pcc` writes them."""
    root = write_fake_results(tmp_path_factory.mktemp("sw"), models=["synth-single-fc", "synth-single-conv",
                                                                     "synth-double-head-ext"],
                              sweeps=False, architecture=False, parts=("stats", "pcc"))
    ext = root / "synth-double-head-ext"
    pcc = pd.read_csv(ext / "pcc.csv")
    spread = 0.01 + 0.001 * np.arange(len(pcc))
    pcc["ci_low"], pcc["ci_high"] = pcc["pcc"] - spread, pcc["pcc"] + spread
    pcc.to_csv(ext / "pcc.csv", index=False)
    config = {"model": {"variant": "double-head-ext", "nms_thresh": NMS_IOU, "score_thresh": 0.05,
                        "detections_per_img": MAX_DETS, "rpn": {"nms_thresh": 0.7, "post_nms_top_n_test": 1000}}}
    (ext / "pcc_summary.json").write_text(json.dumps({
        "run": {"analysis": "pcc", "config": config, "replicates": PCC_REPLICATES},
        "model": ext.name, "heads_with_classifier": ["fc", "conv"], "detection_modes": ["fc", "conv"],
        "proposals_per_gt": 100, "grid": "sliding", "positive_iou": 0.5, "bootstrap_replicates": PCC_REPLICATES,
        "images": 9}))
    write_report(root)
    return root


def page(folder: Path) -> str:
    return (folder / REPORT_HTML).read_text()


# ------------------------------------------------------------------------------------------------ the numbers
def three(value: float) -> str:
    return f"{value:.3f}"


def test_detection_headline_equals_the_summary_and_tables(det_folder):
    parsed = Page(page(det_folder))
    summary = json.loads((det_folder / "detections_summary.json").read_text())
    for metric, value in summary["coco"].items():
        cells = parsed.headline("detections_summary.json", metric)
        assert float(cells[3][0]["data-value"]) == pytest.approx(value, abs=1e-12)
        assert cells[3][1] == three(value) and cells[4][1] == "—"
    measures = pd.read_csv(det_folder / "det_measures.csv")
    overall = measures[measures["grouping"] == "all"]
    assert set(overall["measure"]) == set(ALIGNMENT_MEASURES)
    for r in overall.itertuples():
        attrs, text = parsed.headline("det_measures.csv", r.measure, r.score_field)[3]
        assert float(attrs["data-value"]) == pytest.approx(r.pcc, abs=1e-12)
        assert float(attrs["data-low"]) == pytest.approx(r.ci_low, abs=1e-12)
        assert float(attrs["data-high"]) == pytest.approx(r.ci_high, abs=1e-12)
        if abs(r.pcc) >= 1e-3:
            assert text == three(r.pcc)
    pooled = overall.set_index("measure").loc["pooled_pcc"]
    cells = parsed.headline("det_measures.csv", "pooled_pcc")
    assert cells[4][1] == f"[{three(pooled.ci_low)}, {three(pooled.ci_high)}]" and cells[5][1] == f"{pooled.n:,}"
    assert pooled.ci_low < pooled.pcc < pooled.ci_high  # a real interval is shown, not an empty one


def test_sliding_window_headline_equals_a_float64_recomputation(sw_folder):
    """The pooled PCC of every head, recomputed here from the moment sums, and pcc.csv's values and intervals."""
    parsed = Page(page(sw_folder))
    for folder in sorted(p for p in sw_folder.iterdir() if p.is_dir()):
        stats = pd.read_csv(folder / "sliding_window_stats.csv")
        for head, rows in stats.groupby("head"):
            rows = rows[rows["n_s"] > 0]
            n, x, s = rows["n_s"].sum(), rows["sum_x"].sum(), rows["sum_s"].sum()
            cov = rows["sum_xs"].sum() / n - x / n * s / n
            r = cov / np.sqrt((rows["sum_x2"].sum() / n - (x / n) ** 2) * (rows["sum_s2"].sum() / n - (s / n) ** 2))
            attrs = parsed.headline("sliding_window_stats.csv", "sw_pcc_score", head, folder.name)[3][0]
            assert float(attrs["data-value"]) == pytest.approx(r, abs=1e-9)
    pcc = pd.read_csv(sw_folder / "synth-double-head-ext" / "pcc.csv")
    for r in pcc[pcc["grouping"] == "all"].itertuples():
        who = " / ".join(v for v in (r.head, r.proposal_set, r.mode) if isinstance(v, str) and v)
        cells = parsed.headline("pcc.csv", r.measure, who, "synth-double-head-ext")
        assert float(cells[3][0]["data-value"]) == pytest.approx(r.pcc, abs=1e-12)
        assert float(cells[3][0]["data-low"]) == pytest.approx(r.ci_low, abs=1e-12)
        assert cells[4][1] == f"[{three(r.ci_low)}, {three(r.ci_high)}]"


def test_every_alignment_measure_is_defined_on_the_page(det_folder):
    assert set(ALIGNMENT_MEASURES) <= set(DEFINITIONS)
    text = page(det_folder)
    for m in ALIGNMENT_MEASURES:
        assert f"<code>{m}</code>" in text


# ------------------------------------------------------------------------------------------------ the protocol
def test_protocol_is_what_the_folder_recorded(det_folder, sw_folder):
    det = page(det_folder)
    assert f"B = {REPLICATES} replicates, seed 0" in det
    assert "percentile intervals (95%) over images resampled with replacement" in det  # the summary's own words
    assert "not stated" in det and "average recall at 1, 10, 100 per image" in det
    assert "LRP τ 0.5" in det and "D-ECE 0.5, 0.75" in det
    sw = page(sw_folder)
    assert f"B = {PCC_REPLICATES} replicates" in sw
    assert f"NMS (IoU {NMS_IOU}," in sw and f"at most {MAX_DETS} per image" in sw
    assert "none: the table holds moment sums" in sw


# ------------------------------------------------------------------------------------------------ the figures
def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("which", ["det_folder", "sw_folder"])
def test_every_allowed_figure_is_an_embedded_png(which, request, tmp_path):
    from dhanalysis.figures.render import FIGURES, render_all

    folder = request.getfixturevalue(which)
    drawn = render_all(folder, tmp_path, only=list(FIGURES), formats=("png",), log=lambda s: None)
    expected = {p.stem for p in drawn if p.suffix == ".png"}
    images = Page(page(folder)).images
    assert expected and sorted(i["data-key"] for i in images) == sorted(expected)
    for image in images:
        head, _, payload = image["src"].partition(",")
        assert head == "data:image/png;base64"
        data = base64.b64decode(payload, validate=True)
        width, height = png_size(data)
        assert len(data) > 5000 and width > 200 and height > 100


@pytest.mark.parametrize("which", ["det_folder", "sw_folder"])
def test_nothing_outside_the_page_is_referenced(which, request):
    text = page(request.getfixturevalue(which))
    parsed = Page(text)
    assert not [t for t, _ in parsed.tags if t in ("link", "script", "iframe", "object", "embed", "base")]
    for tag, attrs in parsed.tags:
        for name, value in attrs.items():
            if name in ("src", "srcset", "poster", "data"):
                assert (value or "").startswith("data:"), (tag, name)
            if name in ("href", "action"):
                assert (value or "").startswith("#"), (tag, name, value)
    rest = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    for needle in ("http:", "https:", "//", "url(", "@import", "@font-face"):
        assert needle not in rest


def test_an_empty_folder_is_refused(tmp_path):
    from dhanalysis.errors import DHError

    with pytest.raises(DHError, match="holds no results"):
        write_report(tmp_path)
    with pytest.raises(DHError, match="not a folder"):
        write_report(tmp_path / "missing")


def test_the_report_command_keeps_a_page_it_did_not_write(det_folder, tmp_path, capsys):
    """`dhanalysis report` writes the page; a file at --out that another program wrote stays unless --overwrite,
    and the command's own page is replaced freely."""
    from dhanalysis.cli import main

    out = tmp_path / "page.html"
    out.write_text("<html>someone else's</html>")
    assert main(["report", "--results", str(det_folder), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "<html>someone else's</html>"
    assert main(["report", "--results", str(det_folder), "--out", str(out), "--overwrite"]) == 0
    assert page(det_folder) .count("<img") == out.read_text().count("<img") > 0
    assert main(["report", "--results", str(det_folder), "--out", str(out)]) == 0  # its own page: replaced


# ------------------------------------------------------------------------------------------------ in a browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# appended to a copy of the page: records load errors (images included) and each image's decoded width
CHECK_SCRIPT = ("<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push("
                "String(e.message||(e.target&&e.target.tagName)||'error'))},true);window.addEventListener('load',"
                "function(){var d=document.createElement('div');d.id='check';d.textContent=JSON.stringify({errors:"
                "window.__errors,images:Array.prototype.map.call(document.images,function(i){return i.naturalWidth})"
                "});document.body.appendChild(d)});</script>")


def load_in_chromium(html_path: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """({errors, images: [naturalWidth ...]} as the page saw them on load, the console lines Chromium logged)."""
    checked = html_path.with_name(html_path.stem + "_check.html")
    checked.write_text(html_path.read_text().replace("</head>", CHECK_SCRIPT + "</head>", 1))
    profile = tmp_path / f"profile-{html_path.stem}"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120)
    found = re.search(r'<div id="check">(.*?)</div>', done.stdout)
    assert found, f"Chromium dumped no check ({done.returncode}): {done.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(found.group(1))), [l for l in done.stderr.splitlines() if ":CONSOLE" in l]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: the headless-browser check needs one")
def test_chromium_loads_the_pages_without_errors(det_folder, sw_folder, tmp_path):
    for folder in (det_folder, sw_folder):
        copy = tmp_path / f"{folder.name}.html"
        shutil.copy(folder / REPORT_HTML, copy)
        seen, console = load_in_chromium(copy, tmp_path)
        assert seen["errors"] == [] and console == []
        assert len(seen["images"]) == len(Page(copy.read_text()).images) > 0
        assert all(w > 0 for w in seen["images"])
    # the check sees a broken image and a console message
    broken = tmp_path / "broken.html"
    broken.write_text("<html><head></head><body><img src=\"data:image/png;base64,iVBORw0KGgoAAAA\">"
                      "<script>console.error('boom')</script></body></html>")
    seen, console = load_in_chromium(broken, tmp_path)
    assert seen["images"] == [0] and seen["errors"] and console
