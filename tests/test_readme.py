"""The README's layout section names every module of the package, one line each, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

import dhanalysis

ROOT = Path(__file__).resolve().parents[1]


def layout_entries() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    block = section[section.index("```") + 3:]
    block = block[:block.index("```")]
    return [m.group(1) for line in block.splitlines() if (m := re.match(r"\s{2}(\S+\.py)\s", line))]


def test_layout_lists_each_module_once():
    package = Path(dhanalysis.__file__).parent
    modules = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    listed = layout_entries()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(listed) == modules


def test_readme_findings_equal_the_shipped_findings_csv():
    """The findings section is the one `reproduce --ship` writes from docs/reproduction/findings.csv, never edited by
    hand: it names every contradicted claim and lists every claim row with its verdict."""
    import pandas as pd

    from dhanalysis.study.ship import findings_section, readme_findings

    shipped = pd.read_csv(ROOT / "docs" / "reproduction" / "findings.csv")
    section = readme_findings(ROOT / "README.md")
    assert section == findings_section(shipped)
    for r in shipped[shipped["verdict"] == "contradicted"].itertuples():
        assert f"- {r.section}: {r.statement}" in section


def test_readme_checks_equal_the_shipped_summary():
    """The "detectors that learned" paragraph is the one `reproduce --ship` writes from the shipped summary's quality
    checks, never edited by hand."""
    import json

    import pytest

    from dhanalysis.study.ship import CHECKS_END, CHECKS_START, checks_section, read_section

    summary = json.loads((ROOT / "docs" / "reproduction" / "reproduction_summary.json").read_text())
    if "replicates" not in summary.get("checks", {}):
        pytest.skip("docs/reproduction holds a study from before the per-replicate checks; "
                    "`dhanalysis reproduce --ship docs/reproduction` regenerates it")
    section = read_section(ROOT / "README.md", CHECKS_START, CHECKS_END)
    assert section == checks_section(summary)  # not edited by hand
    # and what it says, read from the summary here: each trunk's AP, Single-FC's AP per trunk in seed order (a
    # replicate's folder is <trunk>-trunk/seed<seed>), and the worst of each target over every replicate
    checks, lines = summary["checks"], section.splitlines()
    for name, v in checks["trunks"].items():
        assert f"- the {name} trunk, trained end to end: box AP {v['AP']:.3f}, AP50 {v['AP50']:.3f}" in lines
    reps = checks["replicates"]
    per_trunk: dict[str, list[tuple[int, dict]]] = {}
    for rep, v in reps.items():
        trunk, seed = re.fullmatch(r"(.+)-trunk/seed(\d+)", rep).groups()
        if "single_fc" in v:
            per_trunk.setdefault(trunk, []).append((int(seed), v["single_fc"]))
    for trunk, seeds in per_trunk.items():
        seeds.sort(key=lambda s: s[0])
        names = ", ".join(str(seed) for seed, _ in seeds)
        ap, ap50 = (" / ".join(format(v[metric], ".3f") for _, v in seeds) for metric in ("AP", "AP50"))
        assert f"- Single-FC heads on the frozen {trunk} trunk (seeds {names}): box AP {ap}, AP50 {ap50}" in lines

    def row(what: str) -> list[str]:
        return next(ln for ln in lines if ln.startswith(f"| {what}")).strip("|").split(" | ")

    worst_ap = min((v["single_fc"]["AP"], rep) for rep, v in reps.items() if "single_fc" in v)
    assert row("Single-FC box AP")[1:3] == [f"{worst_ap[0]:.3f}", worst_ap[1]]
    worst_ap50 = min((ap, f"{rep} {run}") for rep, v in reps.items() for run, ap in v["default_mode_AP50"].items())
    assert row("every Table 1 variant's")[1:3] == [f"{worst_ap50[0]:.3f}", worst_ap50[1]]
