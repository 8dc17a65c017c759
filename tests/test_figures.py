"""`dhanalysis figures`: every figure draws the table written beside it, missing inputs are skipped with one
line, tables hold the evaluated numbers, and Fig. 5 draws the analysed model's widths."""

from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dhanalysis.figures import ablation  # noqa: E402
from dhanalysis.figures.render import (FIGURES, TABLE_CAPTIONS, Results, figure, render_all,  # noqa: E402
                                       substitute_note)
from fixtures_results import write_fake_results  # noqa: E402


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def rendered(fake, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    lines: list[str] = []
    paths = render_all(fake, out, log=lines.append)
    return out, paths, lines


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


# Figs. A.4-A.5 draw the dataset's images, which fake results do not have (tests/test_qualitative.py draws them);
# the figures of `dhanalysis detections` need its folder (tests/test_detections.py draws them)
DETECTION_FIGURES = [key for key in FIGURES if key.startswith("det-")]
FROM_TABLES = [key for key in FIGURES if key not in ("figA4", "figA5", *DETECTION_FIGURES)]


def _drawn_lines(fig) -> list[np.ndarray]:
    """The y values of every marked curve the figure draws (the means; reference lines have no markers)."""
    return [np.asarray(line.get_ydata(), float) for ax in fig.axes for line in ax.get_lines()
            if line.get_marker() not in (None, "None", "", " ")]


def _drawn_bars(fig) -> list[float]:
    return [p.get_height() for ax in fig.axes for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)
            and p.get_width() < 1 and p.get_height() != 0]


def _curves_by_hand(fake, model: str, head: str, by: str | None) -> pd.DataFrame:
    """Mean score per IoU bin (and group) straight from a model's sums, in float64: sum_s / n_s."""
    stats = pd.read_csv(fake / model / "sliding_window_stats.csv")
    stats = stats[stats["head"] == head]
    g = stats.groupby([by, "bin"] if by else ["bin"])[["sum_s", "n_s"]].sum()
    return (g["sum_s"] / g["n_s"]).rename("score_mean").reset_index()


@pytest.mark.slow
def test_every_figure_draws_the_numbers_of_the_table_beside_it(rendered, fake):
    """Each figure's CSV is written beside it; what the figure draws is that table's numbers, and the table is the
    analysed models' (the paper's Single-FC / Single-Conv heads for Fig. 2), recomputed here from their sums."""
    out, paths, lines = rendered
    assert [line for line in lines if "skipped" in line and not line.startswith("Detections:")] == [
        f"Fig. A.{n} skipped: needs qualitative.csv of a Double-Head-Ext model (dhanalysis.probes.qualitative, "
        "written by dhanalysis reproduce)" for n in (4, 5)]
    res = Results(fake)
    for key in FROM_TABLES:
        assert out / f"{key}.png" in paths and out / f"{key}.csv" in paths, key
        table = pd.read_csv(out / f"{key}.csv")
        fig = figure(res, key, log=lambda line: None)
        if "score_mean" in table.columns:  # the curves: every drawn mean is one of the table's, and all are drawn
            drawn = np.concatenate(_drawn_lines(fig))
            table_values = np.concatenate([table["score_mean"].dropna(), table["reg_iou_mean"].dropna()])
            np.testing.assert_allclose(np.unique(drawn[np.isfinite(drawn)]), np.unique(table_values), rtol=1e-9)
        elif "pcc" in table.columns:  # the bars: one per PCC row the figure shows
            bars = sorted(_drawn_bars(fig))
            shown = table[table["grouping"] == "difficulty"] if key == "figA2" else table[
                ((table["proposal_set"] == "predefined") & (table["grouping"] == "size"))
                | ((table["proposal_set"] != "predefined") & (table["grouping"] == "all"))]
            np.testing.assert_allclose(bars, np.sort(shown["pcc"].to_numpy(float)), rtol=1e-9)
        elif key == "fig4":
            images = [im.get_array() for ax in fig.axes for im in ax.get_images()]
            assert len(images) == table["map"].nunique()
            assert sorted(float(np.nansum(im)) for im in images) == pytest.approx(
                sorted(table.groupby("map")["value"].sum()), rel=1e-9)
        elif key == "fig8":
            cells = set(_texts(fig))
            assert {f"{100 * v:.1f}" for v in table["AP"].dropna()} <= cells
        plt.close(fig)
    fig2 = pd.read_csv(out / "fig2.csv")
    assert set(zip(fig2["model"], fig2["head"])) == {("synth-single-fc", "fc"), ("synth-single-conv", "conv")}
    for (model, head), part in fig2.groupby(["model", "head"]):
        want = _curves_by_hand(fake, model, head, "size").rename(columns={"size": "group"})
        got = part.merge(want, on=["group", "bin"], suffixes=("", "_by_hand"))
        assert len(got) == len(part)
        np.testing.assert_allclose(got["score_mean"], got["score_mean_by_hand"], rtol=1e-9)
    fig3 = pd.read_csv(out / "fig3.csv")
    stored = pd.concat([pd.read_csv(fake / m / "pcc.csv") for m in ("synth-single-fc", "synth-single-conv")])
    keys = ["model", "head", "proposal_set", "grouping", "group", "measure"]  # one row per alignment measure
    merged = fig3.merge(stored, on=keys, suffixes=("", "_stored"))
    assert len(merged) == len(stored) and np.allclose(merged["pcc"], merged["pcc_stored"])  # pcc.csv, as written
    for key in TABLE_CAPTIONS:
        assert (out / f"{key}.md").is_file() and (out / f"{key}.csv").is_file()


def test_figures_import_without_the_analyses():
    """The figures layer reads tables: it imports with the model probes (and torch) unavailable."""
    code = (
        "import importlib, pkgutil, sys\n"
        "sys.modules['dhanalysis.probes'] = None\n"  # any import of it fails
        "import dhanalysis.figures, dhanalysis.results\n"
        "for m in pkgutil.iter_modules(dhanalysis.figures.__path__, 'dhanalysis.figures.'):\n"
        "    importlib.import_module(m.name)\n"
        "from dhanalysis.figures.render import Results\n"
        "sys.exit('torch' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow
def test_tables_hold_the_evaluated_numbers(rendered, fake):
    out, _, _ = rendered
    t1 = (out / "table1.md").read_text()
    assert "| single | Single-FC | 1.0 | 1.0 | - | - | 36.8 |" in t1
    assert "| Double-Head-Reverse | - | 1.0 | 1.0 | - | 32.6 |" in t1
    assert "| Double-Head | 2.0 | - | - | 2.5 | 39.5 |" in t1
    t2 = (out / "table2.md").read_text()
    assert "|  | 0 | - | 36.8 | - | 58.7 | 40.4 |" in t2
    assert "| ✓ | 5 | - | 39.8 | +3.0 | 59.6 | 43.6 |" in t2
    assert "|  | 1 | - | 36.7 | -0.1 | 59.3 | 39.6 |" in t2
    t3 = (out / "table3.md").read_text()
    for row in ("| No fusion | 39.7 | 59.5 | 43.4 |", "| Complementary | 40.3 | 60.3 | 44.2 |"):
        assert row in t3
    t5 = pd.read_csv(out / "table5.csv")
    ext = pd.read_csv(fake / "synth-double-head-ext" / "eval.csv")
    best = ext.loc[ext["AP"].idxmax()]
    row = t5[t5["model"] == "synth-double-head-ext"].iloc[0]
    assert row["mode"] == best["mode"] and row["AP"] == round(100 * best["AP"], 1)


def test_missing_inputs_are_skipped_with_one_line(fake, tmp_path):
    lines: list[str] = []
    res = Results(fake, models=["synth-single-fc"], sweeps=tmp_path / "no-sweeps")
    paths = render_all(res, tmp_path / "out", only=["fig6", "fig8", "table1", "figA3", "table5"], log=lines.append)
    skipped = [line for line in lines if "skipped" in line]
    assert skipped == [
        "Fig. 6 skipped: needs sliding-window results of a single-conv and a double-conv model "
        "(dhanalysis sliding-window)",
        "Fig. 8 skipped: needs the fig8 sweep (results.csv from dhanalysis sweep --grid fig8)",
        "Table 1 skipped: needs the table1 sweep (results.csv from dhanalysis sweep --grid table1)",
        "Fig. A.3 skipped: needs sliding-window results of a double-head-ext model and of a single-fc and/or "
        "single-conv model (dhanalysis sliding-window)",
    ]
    assert [p.name for p in paths] == ["table5.md", "table5.csv"]


def test_one_double_head_model_gives_both_heads(fake):
    res = Results(fake, models=["synth-double-head-ext"])
    assert res.head_pair == {"fc": ("synth-double-head-ext", "fc"), "conv": ("synth-double-head-ext", "conv")}
    assert Results(fake).head_pair == {"fc": ("synth-single-fc", "fc"), "conv": ("synth-single-conv", "conv")}
    chosen = Results(fake, fc_head=("synth-double-fc", "fc"))
    assert chosen.head_pair["fc"] == ("synth-double-fc", "fc")


def test_variant_from_config_else_folder_name(fake):
    res = Results(fake)
    assert res.models["double-conv"].variant == "double-conv"  # no config.json: the folder name
    assert res.models["synth-double-head-ext"].variant == "double-head-ext"


def test_fig8_marks_missing_modes_and_the_best_cell(fake):
    results = pd.read_csv(fake / "sweeps" / "fig8" / "results.csv")
    fig = ablation.plot_fig8(results)
    axes = fig.axes[:4]
    na = [sum(t.get_text() == "n/a" for t in ax.texts) for ax in axes]
    assert na == [6, 6, 0, 6]  # λ_conv = 1 row of (a) and (d), λ_fc = 1 column of (b)
    grid = ablation.fig8_grid(results, "complementary")
    best = f"{np.nanmax(grid.to_numpy()):.1f}"
    assert best in [t.get_text() for t in axes[3].texts]
    assert any(p.get_edgecolor()[:3] == matplotlib.colors.to_rgb(ablation.BEST_COLOR) for p in axes[3].patches)
    plt.close(fig)


def test_fig5_draws_the_model_widths_not_the_papers(tmp_path):
    from dhanalysis.probes.architecture import write_architecture
    from dhanalysis.figures.architecture import plot_fig5
    from dhanalysis.model.heads import ConvHead

    head = ConvHead(in_channels=16, dim=32, bottleneck=8, num_blocks=3, non_local=True, non_local_dim=16)
    table = pd.read_csv(write_architecture(head, tmp_path), dtype={"block_M": str})
    assert list(table["block"].unique()) == ["residual", "bottleneck", "non_local"]
    for row in table.itertuples():
        module = getattr(head.blocks[row.block_index], row.layer)
        conv = module[0] if isinstance(module, torch_sequential()) else module
        assert (row.in_channels, row.out_channels) == (conv.in_channels, conv.out_channels)
        assert row.weights == conv.weight.numel() and row.kernel == "x".join(map(str, conv.kernel_size))
    fig = plot_fig5(table)
    text = "\n".join(_texts(fig))
    for row in table.itertuples():
        assert f"{row.weights:,} weights" in text
        assert f", {row.out_channels}" in text
    totals = table.groupby("block")["block_weights"].first()
    assert totals.to_dict() == {"residual": 16 * 16 * 9 + 2 * 16 * 32, "bottleneck": 2 * 32 * 8 + 8 * 8 * 9,
                                "non_local": 4 * 32 * 16}
    for total in totals:
        assert f"block: {total:,} weights" in text
    assert "input: 16 ch" in text and "output: 32 ch" in text
    assert "589,824" not in text and "1.06M" not in text and "1024" not in text  # nothing of the paper's widths
    plt.close(fig)


def test_describe_reads_the_models_conv_branch_else_the_paper_width():
    from types import SimpleNamespace

    from torch import nn

    from dhanalysis.probes.architecture import describe_conv_head
    from dhanalysis.model.heads import Branch, ConvHead, FCHead, Predictor

    fc = Branch("fc", FCHead(16, 7, 32), Predictor(32, 3, cls=True, reg=False))
    conv = Branch("conv", ConvHead(16, 32, 8, 1, False), Predictor(32, 3, cls=False, reg=True))
    model = SimpleNamespace(roi_heads=SimpleNamespace(branches=nn.ModuleDict({"fc": fc, "conv": conv})))
    table = describe_conv_head(model)
    assert set(table["branch"]) == {"conv"} and set(table["source"]) == {"model"}
    assert list(table["block"].unique()) == ["residual"] and table["in_channels"].iloc[0] == 16
    fc_only = describe_conv_head(SimpleNamespace(roi_heads=SimpleNamespace(branches=nn.ModuleDict({"fc": fc}))))
    assert fc_only["source"].iloc[0] == "paper-width ConvHead() (the model has no conv-head)"
    assert fc_only.groupby("block")["block_M"].first().to_dict() == {"residual": "1.06", "bottleneck": "1.06",
                                                                     "non_local": "2.00"}


def torch_sequential():
    from torch import nn

    return nn.Sequential


def test_table1_weights_follow_the_variant_table():
    from dhanalysis.config import LossConfig
    from dhanalysis.model.variants import effective_loss_weights

    loss = LossConfig(w_fc=2.0, w_conv=2.5, lambda_fc=1.0, lambda_conv=1.0)
    for variant, tasks in ablation.TABLE1_TASKS.items():
        trained = {key for key, w in effective_loss_weights(variant, loss).items() if w > 0}
        assert trained == set(tasks), variant


@pytest.mark.slow
def test_figures_package_imports_no_torch():
    code = ("import sys, dhanalysis.figures, dhanalysis.figures.render, dhanalysis.cli.figures; "
            "assert 'torch' not in sys.modules, 'figures imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_prints_where_the_outputs_went(fake, tmp_path, capsys):
    from dhanalysis.cli import main

    assert main(["figures", "--results", str(fake), "--out", str(tmp_path), "--only", "table3,table5"]) == 0
    out = capsys.readouterr().out
    assert f"wrote 4 file(s) to {tmp_path}" in out and "Table 3: " in out
    assert main(["figures", "--results", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------------------------------------- substitute heads
PAIR_FIGURES = ("fig2", "fig3", "fig4", "figA1", "figA2")
EXT = "synth-double-head-ext"


def _drawn(res: Results, key: str) -> tuple[str, list[str]]:
    """(every text of the drawn figure, whitespace-normalised so wrapped titles read as one line; the logged lines)."""
    lines: list[str] = []
    fig = figure(res, key, log=lines.append)
    assert fig is not None, lines
    text = "\n".join(" ".join(t.split()) for t in _texts(fig))
    plt.close(fig)
    return text, lines


def test_paper_models_give_no_substitute_note_or_warning(fake):
    res = Results(fake)
    assert substitute_note(res) is None
    for key in PAIR_FIGURES:
        text, lines = _drawn(res, key)
        assert "Substitute" not in text and not [line for line in lines if "WARNING" in line], key


def test_one_double_head_ext_model_is_named_as_a_substitute(fake, tmp_path, capsys):
    res = Results(fake, models=[EXT])
    note = ("Substitute: Single-FC and Single-Conv results not found — both heads of Double-Head-Ext "
            f"(model '{EXT}'), not the paper's two single-head models")
    assert substitute_note(res) == note
    fig4_note = note.replace("results not found", "spatial-correlation results not found")
    for key in PAIR_FIGURES:
        expected = fig4_note if key == "fig4" else note
        text, lines = _drawn(res, key)
        assert expected in text, key
        assert lines == [f"WARNING: {FIGURES[key][0]}: {expected}"]
    from dhanalysis.cli import main

    assert main(["figures", "--results", str(fake), "--models", EXT, "--out", str(tmp_path), "--only", "fig2",
                 "--formats", "png"]) == 0
    assert f"WARNING: Fig. 2: {note}\n" in capsys.readouterr().out


def test_mixed_sources_name_the_substituted_head(fake, tmp_path):
    # Single-FC present, Single-Conv missing: the pair stays within Double-Head-Ext and says why
    res = Results(fake, models=["synth-single-fc", EXT])
    assert res.head_pair == {"fc": (EXT, "fc"), "conv": (EXT, "conv")}
    assert substitute_note(res) == (
        "Substitute: Single-Conv results not found; Single-FC (model 'synth-single-fc') set aside to keep both heads "
        f"from one model — both heads of Double-Head-Ext (model '{EXT}'), not the paper's two single-head models")
    # one head overridden: only it is the substitute, the other is the paper's
    res = Results(fake, conv_head=(EXT, "conv"))
    note = (f"Substitute: conv-head chosen by override — conv-head from Double-Head-Ext (model '{EXT}'), not the "
            "paper's Single-Conv conv-head; fc-head from Single-FC (model 'synth-single-fc') as in the paper")
    for key in PAIR_FIGURES:
        text, lines = _drawn(res, key)
        assert note in text and lines == [f"WARNING: {FIGURES[key][0]}: {note}"], key
    # the paper's heads for the curves, but Single-Conv has no spatial maps: only Fig. 4's conv map is a substitute
    root = write_fake_results(tmp_path, models=["synth-single-fc", "synth-single-conv", EXT], sweeps=False,
                              architecture=False)
    (root / "synth-single-conv" / "spatial_corr.npz").unlink()
    res = Results(root)
    assert substitute_note(res) is None
    text, lines = _drawn(res, "fig4")
    note = (f"Substitute: Single-Conv spatial-correlation results not found — conv-head from Double-Head-Ext (model "
            f"'{EXT}'), not the paper's Single-Conv conv-head; fc-head from Single-FC (model 'synth-single-fc') as in "
            "the paper")
    assert note in text and lines == [f"WARNING: Fig. 4: {note}"]
    assert not _drawn(res, "fig2")[1]


# ---------------------------------------------------------------------------------------------- det_measures.csv
def _det_measures_folder(folder, table: pd.DataFrame | None):
    """A `dhanalysis detections` folder holding its summary and ``table`` as det_measures.csv (None: no table)."""
    from dhanalysis.vocab import DETECTIONS_MEASURES_CSV, DETECTIONS_SUMMARY_JSON

    folder.mkdir(parents=True, exist_ok=True)
    (folder / DETECTIONS_SUMMARY_JSON).write_text("{}")
    if table is not None:
        table.to_csv(folder / DETECTIONS_MEASURES_CSV, index=False)
    return folder


def _measures_table() -> pd.DataFrame:
    """det_measures.csv of two score fields: every measure overall, per size and per class, random values and
    intervals; one row without an interval (no replicates) and one without a value."""
    from dhanalysis.vocab import ALIGNMENT_MEASURES

    rng = np.random.default_rng(0)
    rows = []
    for field in ("score", "fc_score"):
        for grouping, groups in (("all", ["all"]), ("size", ["large", "medium", "small"]), ("class", ["cat", "dog"])):
            for group in groups:
                for measure in ALIGNMENT_MEASURES:
                    v = rng.uniform(-0.5, 0.9)
                    rows.append({"score_field": field, "grouping": grouping, "group": group, "measure": measure,
                                 "n": 10, "pcc": v, "ci_low": v - rng.uniform(0.01, 0.1),
                                 "ci_high": v + rng.uniform(0.01, 0.1)})
    table = pd.DataFrame(rows)
    no_interval = (table["score_field"] == "score") & (table["group"] == "small") & (table["measure"] == "nms_gap")
    table.loc[no_interval, ["ci_low", "ci_high"]] = np.nan
    no_value = (table["score_field"] == "fc_score") & (table["group"] == "all") & (table["measure"] == "object_kendall")
    table.loc[no_value, ["pcc", "ci_low", "ci_high"]] = np.nan
    return table


def _drawn_measures(fig) -> dict[str, tuple[list, list]]:
    """measure -> (points (x, y), intervals (x, low, high)) as drawn: bars (pooled PCC) or dots, and the vertical
    segments."""
    from dhanalysis.vocab import ALIGNMENT_MEASURE_LABELS

    by_title = {label: m for m, label in ALIGNMENT_MEASURE_LABELS.items()}
    out = {}
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_title() not in by_title:
            continue
        points = [(p.get_x() + p.get_width() / 2, p.get_height()) for p in ax.patches]
        points += [(x, y) for line in ax.get_lines() if line.get_marker() == "o"
                   for x, y in zip(line.get_xdata(), line.get_ydata())]
        segments = [(s[0][0], s[0][1], s[1][1]) for c in ax.collections for s in c.get_segments()]
        out[by_title[ax.get_title()]] = (points, segments)
    return out


def test_det_measures_draws_every_measure_and_interval_of_the_table(tmp_path):
    """Each mark sits at its (group, score field) place with the table's value, each segment spans the table's
    interval; the pooled PCC is drawn as bars; the table beside the figure is det_measures.csv as written."""
    from dhanalysis.figures.detections import plot_measures
    from dhanalysis.vocab import ALIGNMENT_MEASURES

    table = _measures_table()
    folder = _det_measures_folder(tmp_path / "det", table)
    written = render_all(tmp_path, tmp_path / "out", only=["det-measures"], formats=("png",), log=lambda s: None)
    assert sorted(p.name for p in written) == ["det-measures.csv", "det-measures.png"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "det-measures.csv"),
                                  pd.read_csv(folder / "det_measures.csv"))
    fig = figure(Results(tmp_path), "det-measures", log=lambda s: None)
    drawn = _drawn_measures(fig)
    assert list(drawn) == list(ALIGNMENT_MEASURES)  # the paper's pooled PCC first
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["all", "small", "medium", "large"]
    pooled = fig.axes[0]
    assert len(pooled.patches) == 8 and not [line for line in pooled.get_lines() if line.get_marker() == "o"]
    slots, fields = ["all", "small", "medium", "large"], ["score", "fc_score"]

    def place(x: float) -> tuple[str, str]:  # two fields per group: the first left of the slot's centre
        slot = int(round(x))
        return fields[0 if x < slot else 1], slots[slot]

    shown = table[table["grouping"].isin(["all", "size"])].set_index(["measure", "score_field", "group"])
    for measure, (points, segments) in drawn.items():
        want = shown.loc[measure]
        finite = want[want["pcc"].notna()]
        assert sorted(place(x) for x, _ in points) == sorted(finite.index), measure
        for x, y in points:
            assert y == pytest.approx(want.loc[place(x), "pcc"], abs=1e-12), (measure, place(x))
        with_interval = want[want["ci_low"].notna()]
        assert sorted(place(x) for x, _, _ in segments) == sorted(with_interval.index), measure
        for x, low, high in segments:
            assert (low, high) == pytest.approx(tuple(want.loc[place(x), ["ci_low", "ci_high"]]), abs=1e-12)
    plt.close(fig)
    # the classes, when asked for
    by_class = plot_measures(table, groupings=("class",))
    assert [t.get_text() for t in by_class.axes[0].get_xticklabels()] == ["cat", "dog"]
    plt.close(by_class)


def test_det_measures_without_rows_or_table_is_skipped_in_one_line(tmp_path, capsys):
    from refusals import refused

    from dhanalysis.errors import DHError
    from dhanalysis.figures.detections import plot_measures

    empty = _measures_table().iloc[:0]
    _det_measures_folder(tmp_path / "empty" / "det", empty)
    _det_measures_folder(tmp_path / "missing" / "det", None)
    for root, reason in (("empty", "needs det_measures.csv with rows (the folder's has none; rerun dhanalysis "
                                   "detections on a results file with detections)"),
                         ("missing", "needs det_measures.csv (dhanalysis detections)")):
        lines: list[str] = []
        assert render_all(tmp_path / root, tmp_path / "out", only=["det-measures"], formats=("png",),
                          log=lines.append) == []
        assert lines == [f"Detections: alignment measures skipped: {reason}"]
        message = refused(["figures", "--results", tmp_path / root, "--out", tmp_path / "out", "--only",
                           "det-measures"], capsys, tmp_path / root)
        assert message.endswith(reason) and "nothing to draw" in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(DHError, match="no rows of grouping all, size"):
        plot_measures(empty)
