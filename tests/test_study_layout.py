"""The study's names have one home each: its folders and replicates (`study.layout`), the runs it names by role
(`study.plan.ANALYSED`), and the package imports without a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dhanalysis
from dhanalysis.engine.sweep import fig8_runs, table1_runs
from dhanalysis.study.layout import Layout, Replicate
from dhanalysis.study.plan import ANALYSED, EXT_RUN, SECTION3_RUNS, TINY, UNTRAINED, Trunk
from dhanalysis.study.ship import checks_section


def test_layout_places_each_replicate_in_its_own_folder():
    layout = Layout(Path("work"), "tag", "synth")
    trunk = Trunk("single-fc", "single-fc")
    assert layout.replicate(trunk, 2) == Replicate("single-fc", 2)
    assert layout.replicate_results(trunk, 2) == Path("work/results/tag/single-fc-trunk/seed2")
    assert layout.runs(trunk, 2) == Path("work/checkpoints/tag/single-fc-trunk/seed2")
    assert layout.trunk_results(trunk) == Path("work/results/tag/trunks/single-fc")


def test_a_summary_entry_gives_back_its_replicate():
    rep = Replicate("double-head", 4)
    assert Replicate.of({"single_fc": {}, **rep.fields()}, rep.name) == rep
    # a summary written before the fields were recorded names the replicate only
    assert Replicate.of({"single_fc": {}}, "double-head-trunk/seed4") == rep


def test_checks_section_reads_trunk_and_seed_from_the_summary():
    """Each replicate's Single-FC AP is listed under its trunk and seed as recorded, in the summary's order."""
    def rep(trunk, seed, ap):
        return {"single_fc": {"AP": ap, "AP50": ap + 0.25}, "trunk": trunk, "seed": seed}

    summary = {"split": "test", "plan": {"data": {"num_test": 10}, "proposals_per_gt": 7},
               "checks": {"trunks": {"single-fc": {"AP": 0.5, "AP50": 0.75}},
                          "replicates": {"a": rep("single-fc", 0, 0.5), "b": rep("single-fc", 3, 0.25),
                                         "c": rep("double-head", 1, 0.125)}}}
    lines = checks_section(summary).splitlines()
    assert lines[0] == ("**Detectors that learned** (the shipped study, `test` split: AP on 10 images, window scores "
                        "on 10 of them, 7 windows per ground-truth box):")
    assert lines[2] == "- the single-fc trunk, trained end to end: box AP 0.500, AP50 0.750"
    assert lines[3] == ("- Single-FC heads on the frozen single-fc trunk (seeds 0, 3): box AP 0.500 / 0.250, "
                        "AP50 0.750 / 0.500")
    assert lines[4] == "- Single-FC heads on the frozen double-head trunk (seeds 1): box AP 0.125, AP50 0.375"


# the paper's role of each analysed model: its variant and Table 1's weights, or Fig. 8's λ pair (§5.2)
ROLES = {"single-fc": ("single-fc", {"w_fc": 1.0, "w_conv": 1.0}),
         "single-conv": ("single-conv", {"w_fc": 1.0, "w_conv": 1.0}),
         "double-fc": ("double-fc", {"w_fc": 1.0, "w_conv": 1.0}),
         "double-conv": ("double-conv", {"w_fc": 1.0, "w_conv": 1.0}),
         "double-head-ext": (None, {"lambda_fc": 0.7, "lambda_conv": 0.8})}


@pytest.mark.parametrize("role", sorted(ANALYSED))
def test_each_analysed_role_names_the_run_of_its_model(role):
    grid, run = ANALYSED[role]
    runs = {"table1": table1_runs(), "fig8": fig8_runs(TINY.lambda_fc, TINY.lambda_conv)}[grid]
    meta = next(r.meta for r in runs if r.name == run)
    variant, values = ROLES[role]
    assert variant is None or meta["variant"] == variant
    assert {k: meta[k] for k in values} == values


def test_the_section3_pair_and_its_baseline_are_single_fc_and_single_conv():
    assert SECTION3_RUNS == (ANALYSED["single-fc"][1], ANALYSED["single-conv"][1])
    assert set(UNTRAINED.values()) == set(SECTION3_RUNS) and EXT_RUN == ANALYSED["double-head-ext"][1]


def package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports, at the top or inside a function."""
    root = Path(dhanalysis.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("dhanalysis"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("dhanalysis")}
        graph[name] = deps - {name}
    return graph


def test_no_module_imports_itself_through_others():
    graph = package_imports()
    for start in graph:
        if start == "dhanalysis":  # the package's own __init__ re-exports; a module naming the package is no circle
            continue
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep == start:
                    pytest.fail(f"{start} imports itself through others")
                if dep not in seen and dep != "dhanalysis":
                    seen.add(dep)
                    todo.append(dep)
