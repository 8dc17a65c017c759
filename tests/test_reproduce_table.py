"""docs/reproduce.md maps every paper item to a config: each row builds the model the paper describes.

The expectations below are read from the paper's text (§3, §5.2, Tables 1-3 and 5, Figs. 2-8), independently of the
table; the test resolves each row's config with its overrides (and its sweep run, where it names one) and compares.
"""

from __future__ import annotations

import re

import pytest

from dhanalysis.config import load_config, preset_path
from dhanalysis.engine.sweep import grid_runs
from dhanalysis.model.variants import get_variant, parse_mode

from helpers import ROOT

TABLE = ROOT / "docs" / "reproduce.md"
VARIANT_NAMES = {"Single-FC": "single-fc", "Single-Conv": "single-conv", "Double-FC": "double-fc",
                 "Double-Conv": "double-conv", "Double-Head-Reverse": "double-head-reverse",
                 "Double-Head": "double-head", "Double-Head-Ext": "double-head-ext"}


def table_rows() -> list[dict[str, str]]:
    lines = [ln for ln in TABLE.read_text().splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip().strip("`") for c in ln.strip("|").split("|")))) for ln in lines[1:]]


ROWS = table_rows()


def paper_model(item: str) -> dict:
    """(variant, NL, K, ω_fc, ω_conv, λ_fc, λ_conv, mode) of a paper item, from the paper's text."""
    single_fc = dict(variant="single-fc", nl=None, k=None, w=(1.0, 1.0), lam=(1.0, 1.0), mode="fc")
    single_conv = dict(variant="single-conv", nl=False, k=5, w=(1.0, 1.0), lam=(1.0, 1.0), mode="conv")
    ext = dict(variant="double-head-ext", nl=True, k=5, w=(2.0, 2.5), lam=(0.7, 0.8), mode="complementary")
    source, _, what = item.partition(" · ")
    if source == "Table 1":
        name = what.split(" (")[0]
        variant = VARIANT_NAMES[name]
        w = (2.0, 2.5) if "2.0 / 2.5" in what else (1.0, 1.0)
        has_conv = any(b.head == "conv" for b in get_variant(variant).branches)
        return dict(variant=variant, nl=False if has_conv else None, k=5 if has_conv else None, w=w,
                    lam=(1.0, 1.0), mode=get_variant(variant).default_mode)
    if source == "Table 2":
        k = int(re.search(r"K = (\d)", what).group(1))
        if k == 0:
            return single_fc
        return dict(variant="double-head", nl=what.startswith("NL"), k=k, w=(2.0, 2.5), lam=(1.0, 1.0),
                    mode="fc-cls+conv-reg")
    if source == "Table 3":
        fusion = {"No fusion": "fc-cls+conv-reg", "Max": "max", "Average": "average",
                  "Complementary": "complementary"}[what]
        return ext | {"mode": fusion}
    if source == "Table 5":
        if what.startswith("FPN baseline"):
            return single_fc
        if what.startswith("Double-Head-Ext"):
            return ext
        return ext | {"variant": "double-head", "lam": (1.0, 1.0), "mode": "fc-cls+conv-reg"}
    if source in ("Fig. 2", "Fig. 3", "Fig. 4"):
        return single_fc if what == "fc-head" else single_conv
    if source == "Fig. 6":  # the middle group of Table 1: the same weights as the single head
        return single_conv if what == "Single-Conv" else single_conv | {"variant": "double-conv"}
    if source == "Fig. 7":
        return single_fc if what == "Single-FC" else single_fc | {"variant": "double-fc"}
    if source == "Fig. 8":
        lam = tuple(float(v) for v in re.search(r"\(([\d.]+), ([\d.]+)\)", what).groups())
        return ext | {"lam": lam, "mode": "complementary" if "(d)" in what else "fc-cls+conv-reg"}
    raise AssertionError(f"unknown paper item {item!r}")


def test_every_table_row_and_figure_panel_is_listed():
    items = [r["Paper item"] for r in ROWS]
    assert sum(i.startswith("Table 1 ·") for i in items) == 10
    assert sum(i.startswith("Table 2 ·") for i in items) == 11
    assert sum(i.startswith("Table 3 ·") for i in items) == 4
    assert sum(i.startswith("Table 5 ·") for i in items) == 6  # FPN, Double-Head, Ext for ResNet-50 and -101
    for fig in ("Fig. 2", "Fig. 3", "Fig. 4", "Fig. 6", "Fig. 7", "Fig. 8"):
        assert sum(i.startswith(f"{fig} ·") for i in items) == 2, fig


@pytest.mark.parametrize("row", ROWS, ids=[r["Paper item"] for r in ROWS])
def test_row_builds_the_papers_model(row):
    expected = paper_model(row["Paper item"])
    overrides = re.findall(r"[\w.]+=[\w.]+", row["Overrides (`--set`)"])
    cfg = load_config(preset_path(row["Config"]), overrides)
    if "ResNet-101" in row["Paper item"]:
        assert cfg.model.backbone.name == "resnet101"
    else:
        assert cfg.model.backbone.name == "resnet50"
    m = cfg.model
    has_conv = any(b.head == "conv" for b in get_variant(m.variant).branches)
    got = dict(variant=m.variant, nl=m.head.non_local if has_conv else None, k=m.head.num_blocks if has_conv else None,
               w=(m.loss.w_fc, m.loss.w_conv), lam=(m.loss.lambda_fc, m.loss.lambda_conv), mode=row["Mode"])
    assert got == expected
    parse_mode(row["Mode"])  # a real inference mode
    assert m.head.conv_roi_scale == 1.0 == float(row["conv RoI scale"])
    # the table's own columns say the same
    assert row["NL"] == ("–" if not has_conv else "yes" if m.head.non_local else "no")
    assert row["K"] == ("–" if not has_conv else str(m.head.num_blocks))
    assert (float(row["ω_fc"]), float(row["ω_conv"])) == expected["w"]
    assert (float(row["λ_fc"]), float(row["λ_conv"])) == expected["lam"]
    if row["Sweep run"]:  # the sweep run on the same config builds the same model
        grid, name = row["Sweep run"].split("/")
        (run,) = [r for r in grid_runs(grid) if r.name == name]
        swept = load_config(preset_path(row["Config"]), values=run.overrides).model
        assert swept == m
        if run.modes:
            assert row["Mode"] in run.modes
