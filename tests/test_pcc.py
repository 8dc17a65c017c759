"""The RPN set of the PCC analysis (§3.2): --rpn-background keep (default) and drop, against torchvision's box_iou,
the model's own scores and scipy's pearsonr; the choice reaches the task and the run identity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr
from torchvision.ops import box_iou

from dhanalysis.probes.pcc import ProposalPCCTask, pcc_table
from dhanalysis.metrics.measures import MEASURES, object_frame
from dhanalysis.vocab import MODEL_PROPOSAL_SETS
from dhanalysis.probes.harness import image_context
from dhanalysis.probes.scoring import AdaptiveBatch, score_boxes
from dhanalysis.cli import main
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.errors import DHError
from dhanalysis.model import build_model, save_checkpoint
from dhanalysis.model.checkpoint import load_checkpoint

from helpers import tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two synthetic 64-pixel images and a tiny random single-fc checkpoint (its RPN misses the objects often)."""
    base = tmp_path_factory.mktemp("pcc")
    make_synth_dataset(base / "data", num_train=1, num_val=2, image_size=64, seed=0)
    torch.manual_seed(0)
    cfg = tiny_config("single-fc", "model.num_classes=6", "model.min_size=64", "model.max_size=64",
                      f"data.root={base / 'data'}")
    save_checkpoint(base / "fc.pth", build_model(cfg))
    return base


def rpn_rows(frame: pd.DataFrame) -> pd.Series:
    """The rpn sums of a `ProposalPCCTask.frame` over size groups."""
    return frame[frame["proposal_set"] == "rpn"][["n", "sum_x", "sum_x2", "sum_s", "sum_s2", "sum_xs"]].sum()


def test_drop_leaves_out_exactly_the_proposals_that_overlap_nothing(tiny):
    model = load_checkpoint(tiny / "fc.pth")
    dataset = CocoDataset(tiny / "data", "val")
    tasks = {mode: ProposalPCCTask(model, 64, mode) for mode in ("keep", "drop")}
    states = {mode: task.new_state() for mode, task in tasks.items()}
    zero, xs, ss = 0, [], []
    with torch.inference_mode():
        for i in range(len(dataset)):
            image, target = dataset[i]
            ctx, _, _ = image_context(model, image, target, torch.device("cpu"))
            for mode, task in tasks.items():
                task.process(ctx, states[mode])
            # the reference: the RPN's proposals, their best IoU by torchvision, the kept ones scored directly
            proposals = model.rpn(ctx.image_list, ctx.features)[0][0]
            iou, best = box_iou(proposals, ctx.boxes).max(dim=1)
            hit = iou > 0
            zero += int((~hit).sum())
            scored = score_boxes(model, ctx.features, ctx.image_size, proposals[hit], ctx.labels[best[hit]],
                                 ctx.boxes[best[hit]], AdaptiveBatch(64))
            xs.append(iou[hit].double())
            ss.append(scored["fc"]["score"].double())
    assert zero > 0, "the tiny RPN should miss the objects with some proposals"
    keep = tasks["keep"].frame(states["keep"], "m")
    drop = tasks["drop"].frame(states["drop"], "m")
    k, d = rpn_rows(keep), rpn_rows(drop)
    assert k["n"] - d["n"] == zero == states["drop"].counts["rpn_background_dropped"]
    assert states["keep"].counts["rpn_background_dropped"] == 0
    assert states["keep"].counts["rpn_proposals"] == states["drop"].counts["rpn_proposals"] == k["n"]
    # background rows have x = 0: Σx, Σx², Σxs are the same; only Σs and Σs² lose the background's scores
    np.testing.assert_allclose(d[["sum_x", "sum_x2", "sum_xs"]], k[["sum_x", "sum_x2", "sum_xs"]], rtol=1e-6)
    assert d["sum_s"] < k["sum_s"] and d["sum_s2"] < k["sum_s2"]
    # the drop PCC is Pearson's r of the overlapping pairs
    x, s = torch.cat(xs).numpy(), torch.cat(ss).numpy()
    pooled = "measure == 'pooled_pcc'"
    table = pcc_table(pcc_stats=drop).query(pooled).set_index(["proposal_set", "grouping"])
    assert table.loc[("rpn", "all"), "n"] == len(x) == d["n"]
    np.testing.assert_allclose(table.loc[("rpn", "all"), "pcc"], pearsonr(x, s)[0], rtol=1e-5)
    assert table.loc[("rpn", "all"), "pcc"] != pcc_table(pcc_stats=keep).query(pooled).set_index(
        ["proposal_set", "grouping"]).loc[("rpn", "all"), "pcc"]
    # the object rows hold the same boxes as the sums: their moments add up to them, per set
    for task, state, sums in ((tasks["keep"], states["keep"], keep), (tasks["drop"], states["drop"], drop)):
        rows = object_frame(torch.cat(state.rows["objects"]).numpy(), task.heads, MODEL_PROPOSAL_SETS, "m",
                            list(range(1, 7)), [str(c) for c in range(1, 7)])
        for which in MODEL_PROPOSAL_SETS:
            got = rows[rows["proposal_set"] == which][["n", "sum_x", "sum_s", "sum_xs"]].sum().to_numpy(float)
            want = sums[sums["proposal_set"] == which][["n", "sum_x", "sum_s", "sum_xs"]].sum().to_numpy(float)
            np.testing.assert_allclose(got, want, rtol=1e-9)
        on_objects = rows[rows["box"] >= 0]
        assert (on_objects["sum_x"] > 0).all() and (rows.loc[rows["box"] < 0, "sum_x"] == 0).all()
        with_objects = pcc_table(pcc_stats=sums, objects=rows.assign(mode=""), replicates=20)
        assert set(with_objects["measure"]) == set(MEASURES)
    # detections do not depend on the choice
    dets = ["n", "sum_x", "sum_s"]
    np.testing.assert_allclose(keep[keep["proposal_set"] == "detections"][dets].to_numpy(float),
                               drop[drop["proposal_set"] == "detections"][dets].to_numpy(float), rtol=1e-6)


def test_rpn_background_flag_reaches_the_task_and_the_run_identity(tiny, capsys):
    out = tiny / "drop"
    args = ["pcc", "--ckpt", str(tiny / "fc.pth"), "--out", str(out), "--proposals-per-gt", "60", "--max-images",
            "1", "--no-progress"]
    assert main(args + ["--rpn-background", "drop"]) == 0
    summary = json.loads((out / "pcc_summary.json").read_text())
    assert summary["rpn_background"] == "drop" and summary["run"]["rpn_background"] == "drop"
    assert summary["grid"] == "spiral" and summary["rpn_background_dropped"] > 0
    table = pd.read_csv(out / "pcc.csv", keep_default_na=False)
    rpn = table[(table["proposal_set"] == "rpn") & (table["grouping"] == "all") & (table["measure"] == "pooled_pcc")]
    assert int(rpn["n"].iloc[0]) == summary["rpn_proposals"] - summary["rpn_background_dropped"]

    capsys.readouterr()
    assert main(args) == 2  # keep (the default) would mix with the dropped results
    err = capsys.readouterr().err
    assert "rpn_background: 'drop' vs absent" in err and "--overwrite" in err and err.count("\n") == 1
    assert main(args + ["--rpn-background", "ignore"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dhanalysis: error: --rpn-background: ") and "'ignore'" in err and err.count("\n") == 1
    with pytest.raises(DHError, match="'ignore'"):
        ProposalPCCTask(load_checkpoint(tiny / "fc.pth"), 64, "ignore")


def test_pcc_csv_has_intervals_for_the_decomposition_and_old_rows_are_refused(tiny, capsys):
    """The real path (sliding windows, RPN proposals, object rows in chunks, pcc.csv): the decomposition terms get a
    bootstrap interval like every other measure; a folder whose object rows have no per-bin sums (measures format
    1) is refused in one line by both analyses, nothing changed."""
    from refusals import refused

    from dhanalysis.metrics.measures import BIN_VALUES
    from dhanalysis.vocab import PCC_SUMMARY_JSON, SLIDING_WINDOW_OBJECTS_CSV, SLIDING_WINDOW_SUMMARY_JSON

    out = tiny / "measures"
    args = ["pcc", "--ckpt", str(tiny / "fc.pth"), "--out", str(out), "--proposals-per-gt", "60", "--max-images",
            "2", "--no-progress"]
    assert main(args) == 0
    table = pd.read_csv(out / "pcc.csv", keep_default_na=False, na_values=[""])
    rows = table[table["measure"].isin(["curve_pcc", "explained_share", "within_bin"]) & (table["grouping"] == "all")
                 & table["proposal_set"].isin(["predefined", "rpn"])]
    assert len(rows) == 6 and rows["pcc"].notna().all()
    assert rows[["ci_low", "ci_high"]].notna().all().all() and (rows["ci_low"] <= rows["ci_high"]).all()
    objects = pd.read_csv(out / SLIDING_WINDOW_OBJECTS_CSV)
    assert set(BIN_VALUES) <= set(objects.columns) and objects[[c for c in BIN_VALUES if c.endswith("_n")]].sum(
        axis=1).tolist() == objects["n"].tolist()  # every window in one bin of its object

    for name in (SLIDING_WINDOW_SUMMARY_JSON, PCC_SUMMARY_JSON):
        summary = json.loads((out / name).read_text())
        summary["run"].pop("measures_format")
        (out / name).write_text(json.dumps(summary))
    sliding = ["sliding-window", *args[1:]]
    for argv in (args, sliding):
        message = refused(argv, capsys, out)
        assert "measures format 1, written before format 2" in message and "--overwrite" in message
