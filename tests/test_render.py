"""`dhanalysis.figures.render` read directly: which folders are models and of which variant, the tables it reads, the
curves and class difficulty it derives, which figures and tables each kind of result file makes possible, the
wording of a substitute head, and missing inputs skipped with one line each instead of a crash."""

from __future__ import annotations

import json
import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dhanalysis.figures.render import (FIGURES, TABLE_CAPTIONS, Results, curves, discover_models,  # noqa: E402
                                       figure, render_all, substitute_note, table, variant_from_name)
from fixtures_results import MODELS, write_fake_results, write_model, write_sweeps  # noqa: E402

EXT = "synth-double-head-ext"
ALL_KEYS = [*FIGURES, *TABLE_CAPTIONS]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_results(tmp_path_factory.mktemp("results"))


def _label(key: str) -> str:
    """How `render_all` names an item in its log: "Fig. A.1", "Table 3"."""
    return FIGURES[key][0] if key in FIGURES else key.replace("table", "Table ")


def _available(res: Results) -> tuple[list[str], dict[str, str]]:
    """(the keys whose inputs are present, key -> skip reason of the others), building each figure without saving."""
    drawn, skipped = [], {}
    for key in ALL_KEYS:
        out = FIGURES[key][1](res) if key in FIGURES else table(res, key)
        if isinstance(out, str):
            skipped[key] = out
        else:
            drawn.append(key)
            if key in FIGURES:
                plt.close(out[0])
    return drawn, skipped


# ---------------------------------------------------------------------------------------------- model folders
def test_model_folders_are_found_and_filtered(fake, tmp_path):
    assert set(Results(fake).models) == set(MODELS)  # the sweeps folder is not a model
    assert set(discover_models(fake / "synth-single-fc")) == {"synth-single-fc"}  # a model folder itself
    # by folder name or by variant
    assert set(discover_models(fake, ["single-fc", "double-conv"])) == {"synth-single-fc", "double-conv"}
    assert discover_models(tmp_path / "missing") == {}
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "eval.csv").write_text("model,mode,AP\nrun,fc,0.3\n")
    assert set(discover_models(tmp_path)) == {"run"}


def test_variant_from_config_else_the_longest_name_in_the_folder(tmp_path):
    assert variant_from_name("synth-double-head-ext-v2") == "double-head-ext"  # not "double-head"
    assert variant_from_name("Run-Single-FC") == "single-fc"
    assert variant_from_name("baseline") is None
    for name, config in (("synth-single-fc", '{"model": {"variant": "double-fc"}}'),  # the config wins
                         ("double-conv-x", "{not json"),  # unreadable config: the folder name
                         ("baseline", '{"name": "baseline"}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(config)
    res = Results(tmp_path)
    assert {n: m.variant for n, m in res.models.items()} == {"synth-single-fc": "double-fc",
                                                           "double-conv-x": "double-conv", "baseline": None}


def test_tables_are_read_with_model_and_variant(fake, tmp_path):
    res = Results(fake)
    stats = res.stats("synth-single-fc")
    raw = pd.read_csv(fake / "synth-single-fc" / "sliding_window_stats.csv")
    pd.testing.assert_frame_equal(stats[raw.columns], raw)
    assert set(stats["variant"]) == {"single-fc"} and set(stats["model"]) == {"synth-single-fc"}
    assert res.stats("synth-single-fc") is stats  # read once
    assert res.heads(EXT) == {"fc", "conv"} and res.heads("synth-single-conv") == {"conv"}
    assert res.stats("no-such-model") is None and res.spatial("no-such-model") == {}
    evals = res.evals()
    assert len(evals) == sum(len(pd.read_csv(fake / m / "eval.csv")) for m in MODELS)
    assert set(evals.loc[evals["model"] == "double-conv", "variant"]) == {"double-conv"}
    # a table with a header and no rows is no table
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "eval.csv").write_text("model,mode,AP\n")
    empty = Results(tmp_path)
    assert set(empty.models) == {"empty"} and empty.evals() is None
    assert table(empty, "table5") == "needs eval.csv of at least one model (dhanalysis eval)"


# ---------------------------------------------------------------------------------------------- derived tables
def test_curves_are_the_bin_means_of_the_statistics(fake):
    res = Results(fake)
    raw = pd.read_csv(fake / "synth-single-fc" / "sliding_window_stats.csv")
    for group, keys in (("size", ["size", "bin"]), (None, ["bin"])):
        out = curves(res, [("synth-single-fc", "fc")], group)
        ref = raw.groupby(keys).sum(numeric_only=True).reset_index()
        if group is None:
            assert set(out["group"]) == {"all"}
            ref["group"] = "all"
        else:
            ref = ref.rename(columns={"size": "group"})
        merged = out.merge(ref, on=["group", "bin"], suffixes=("", "_ref"))
        assert len(merged) == len(out) == len(ref)
        score = merged["sum_s"] / merged["n_s"]
        np.testing.assert_allclose(merged["score_mean"], score, rtol=1e-12)
        np.testing.assert_allclose(merged["score_std"], np.sqrt(merged["sum_s2"] / merged["n_s"] - score**2),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(merged["reg_iou_mean"], merged["sum_r"] / merged["n_r"], rtol=1e-12)
        assert (merged["n"] == merged["n_ref"]).all()
    # a head without regression has no regression curve; a head the model lacks has no curves at all
    cls_only = curves(res, [("synth-double-head", "fc")])
    assert cls_only["reg_iou_mean"].isna().all() and cls_only["score_mean"].notna().all()
    assert curves(res, [("synth-single-fc", "conv")]) is None
    assert curves(res, [("synth-single-fc", "fc"), ("no-such-model", "fc")]) is None


def _ranking(per_class: pd.DataFrame) -> dict[int, str]:
    """Terciles of the classes by AP, highest first (six classes: two per group)."""
    order = per_class.sort_values("AP", ascending=False)["category_id"].tolist()
    return {int(c): g for g, part in zip(("easy", "medium", "hard"), (order[:2], order[2:4], order[4:])) for c in part}


def test_difficulty_is_ranked_by_the_single_fc_model(fake):
    res = Results(fake)
    ranking, reference = res.difficulty
    assert reference == "synth-single-fc"
    assert ranking == _ranking(pd.read_csv(fake / "synth-single-fc" / "per_class_ap.csv"))
    # the difficulty curves count the windows of each group's classes
    out = curves(res, [("synth-single-fc", "fc")], "difficulty")
    raw = pd.read_csv(fake / "synth-single-fc" / "sliding_window_stats.csv")
    raw["group"] = raw["category_id"].map(ranking)
    expected = raw.groupby(["group", "bin"])["n"].sum()
    assert out.set_index(["group", "bin"])["n"].sort_index().to_dict() == expected.sort_index().to_dict()


def test_difficulty_of_a_model_with_modes_takes_its_preferred_else_best_mode(fake, tmp_path):
    folder = tmp_path / EXT
    shutil.copytree(fake / EXT, folder)
    per_class = pd.read_csv(folder / "per_class_ap.csv")
    # two modes that rank the classes in opposite orders; "max" has the better AP overall
    ap = {"fc": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1], "max": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
    per_class = pd.concat([per_class[per_class["mode"] == m].assign(AP=v) for m, v in ap.items()])
    per_class.to_csv(folder / "per_class_ap.csv", index=False)
    evals = pd.read_csv(folder / "eval.csv")
    evals["AP"] = np.where(evals["mode"] == "max", 0.5, 0.3)
    evals.to_csv(folder / "eval.csv", index=False)

    ranking, reference = Results(tmp_path).difficulty
    assert reference == EXT and ranking == _ranking(per_class[per_class["mode"] == "max"])
    (folder / "config.json").write_text(json.dumps({"name": EXT, "model": {"variant": "double-head-ext",
                                                                           "mode": "fc"}}))
    assert Results(tmp_path).difficulty[0] == _ranking(per_class[per_class["mode"] == "fc"])
    # Table 5 follows the same choice: the preferred mode, not the best
    row = table(Results(tmp_path), "table5").iloc[0]
    assert row["mode"] == "fc" and row["AP"] == 30.0


# ---------------------------------------------------------------------------------------------- what each input allows
STATS_FIGURES = ["fig2", "fig3", "fig6", "fig7", "figA3"]


@pytest.mark.parametrize("parts, expected", [
    (("eval",), ["table5"]),
    (("spatial",), ["fig4"]),
    (("stats",), STATS_FIGURES),
    (("stats", "eval"), [*STATS_FIGURES, "figA1", "figA2", "table5"]),
    (("pcc",), ["fig3"]),
], ids=lambda v: "+".join(v) if isinstance(v, tuple) else None)
def test_each_kind_of_result_file_enables_its_items(parts, expected, tmp_path):
    root = write_fake_results(tmp_path, sweeps=False, architecture=False, parts=parts)
    drawn, skipped = _available(Results(root))
    assert sorted(drawn) == sorted(expected)
    for key, reason in skipped.items():
        assert reason.startswith("needs") or reason.startswith("no image"), key
        assert "\n" not in reason, key


def test_sweeps_and_architecture_enable_theirs(fake, tmp_path):
    write_sweeps(tmp_path / "sweeps", np.random.default_rng(0))
    assert sorted(_available(Results(tmp_path))[0]) == ["fig8", "table1", "table2", "table3"]
    # the sweeps may live elsewhere; a results.csv without a grid column is not a sweep
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "sweeps", moved)
    pd.DataFrame({"model": ["x"], "AP": [0.3]}).to_csv(moved / "results.csv", index=False)
    res = Results(tmp_path, sweeps=moved)
    assert set(res.sweeps["grid"]) == {"table1", "table2", "table3", "fig8"}
    assert len(res.sweep("table3")) == len(pd.read_csv(moved / "table3" / "results.csv"))
    assert res.sweep("no-such-grid") is None and Results(tmp_path).sweeps is None

    only_architecture = tmp_path / "arch"
    only_architecture.mkdir()
    shutil.copy(fake / EXT / "architecture.csv", only_architecture)
    assert _available(Results(only_architecture))[0] == ["fig5"]


def test_architecture_of_the_results_folder_comes_first(fake, tmp_path):
    shutil.copytree(fake / EXT, tmp_path / EXT)
    from_model = pd.read_csv(tmp_path / EXT / "architecture.csv", dtype={"block_M": str})
    pd.testing.assert_frame_equal(Results(tmp_path).architecture, from_model)
    own = from_model.assign(weights=from_model["weights"] + 1)
    own.to_csv(tmp_path / "architecture.csv", index=False)
    pd.testing.assert_frame_equal(Results(tmp_path).architecture, own)


# ---------------------------------------------------------------------------------------------- missing inputs
@pytest.mark.parametrize("where", ["missing", "empty"])
def test_nothing_to_draw_skips_every_item_with_one_line(where, tmp_path):
    root = tmp_path / where
    if where == "empty":
        root.mkdir()
    lines: list[str] = []
    out = tmp_path / "out"
    assert render_all(root, out, log=lines.append) == []
    assert [line.split(" skipped: ")[0] for line in lines] == [_label(k) for k in ALL_KEYS]
    assert all(" skipped: needs " in line and "\n" not in line for line in lines)
    assert not out.exists() or not any(out.iterdir())
    res = Results(root)
    assert res.head_pair is None and substitute_note(res) is None and res.difficulty is None
    logged: list[str] = []
    assert figure(res, "fig2", log=logged.append) is None
    assert logged == [lines[0]]


# ---------------------------------------------------------------------------------------------- render_all
def test_render_all_writes_only_what_was_asked_in_the_asked_formats(fake, tmp_path):
    lines: list[str] = []
    out = tmp_path / "out"
    before = set(plt.get_fignums())
    paths = render_all(fake, out, only=["table3", "fig4"], formats=("png", "svg"), close=False, log=lines.append)
    assert paths == [out / "table3.md", out / "table3.csv", out / "fig4.png", out / "fig4.svg", out / "fig4.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert lines == [f"Table 3: {out / 'table3.md'}, {out / 'table3.csv'}",
                     f"Fig. 4: {out / 'fig4.png'}, {out / 'fig4.svg'}, {out / 'fig4.csv'}"]
    assert (out / "fig4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in (out / "fig4.svg").read_bytes()
    assert (out / "table3.md").read_text().startswith(TABLE_CAPTIONS["table3"])
    opened = set(plt.get_fignums()) - before  # close=False leaves the figure open (a notebook shows it)
    assert len(opened) == 1
    plt.close(opened.pop())
    # by default every figure is closed once saved
    assert render_all(fake, out, only=["fig4"], formats=(), log=lambda line: None) == [out / "fig4.csv"]
    assert set(plt.get_fignums()) == before
    with pytest.raises(ValueError, match=r"unknown figure or table \['fig9'\]; choose from fig2, "):
        render_all(fake, tmp_path / "bad", only=["fig9"])
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------- substitute heads
def test_head_pair_prefers_double_head_ext_then_any_model_with_both_heads(fake, tmp_path):
    both = {"fc": (EXT, "fc"), "conv": (EXT, "conv")}
    assert Results(fake, models=["synth-double-head", EXT]).head_pair == both
    assert Results(fake, models=["synth-single-fc", "synth-double-fc"]).head_pair is None  # no conv-head anywhere
    # a model of no known variant, with both heads, is used and named by its folder
    write_model(tmp_path / "custom", "double-head-ext", {"fc": (True, True), "conv": (True, True)},
                np.random.default_rng(0), config=False, parts=("stats",))
    res = Results(tmp_path)
    assert res.models["custom"].variant is None
    assert res.head_pair == {"fc": ("custom", "fc"), "conv": ("custom", "conv")}
    assert substitute_note(res) == ("Substitute: Single-FC and Single-Conv results not found — both heads of model "
                                    "'custom', not the paper's two single-head models")


def test_substitute_note_names_a_head_of_the_other_type(fake):
    res = Results(fake, fc_head=(EXT, "conv"))
    assert res.head_pair == {"fc": (EXT, "conv"), "conv": ("synth-single-conv", "conv")}
    assert substitute_note(res) == (
        f"Substitute: fc-head chosen by override — fc-head from Double-Head-Ext (model '{EXT}') (its conv-head), not "
        "the paper's Single-FC fc-head; conv-head from Single-Conv (model 'synth-single-conv') as in the paper")
    # overriding with the paper's own head is no substitute
    assert substitute_note(Results(fake, fc_head=("synth-single-fc", "fc"))) is None


def test_substitute_note_for_given_sources_and_inputs(fake):
    res = Results(fake)
    assert substitute_note(res, {"fc": ("synth-single-fc", "fc")}) is None
    assert substitute_note(res, {"conv": ("double-conv", "conv")}, {"conv": None},
                           inputs="spatial-correlation results") == (
        "Substitute: Single-Conv spatial-correlation results not found — conv-head from Double-Conv (model "
        "'double-conv'), not the paper's Single-Conv conv-head")
    # the paper's model exists but another was drawn: it says which was set aside
    assert substitute_note(res, {"conv": ("double-conv", "conv")}) == (
        "Substitute: Single-Conv (model 'synth-single-conv') set aside to keep both heads from one model — conv-head "
        "from Double-Conv (model 'double-conv'), not the paper's Single-Conv conv-head")
