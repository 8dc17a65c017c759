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
    assert read_section(ROOT / "README.md", CHECKS_START, CHECKS_END) == checks_section(summary)
