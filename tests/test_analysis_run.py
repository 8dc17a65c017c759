"""The analyses end to end on a tiny synthetic dataset and tiny random checkpoints (CPU): scoring is what decoding by
hand gives, tables equal the raw values, shards merge, a killed run resumes exactly, and the commands write the
documented columns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kendalltau, pearsonr, spearmanr
from torchvision.ops import box_iou, clip_boxes_to_image

from dhanalysis.probes.pcc import PCC_COLUMNS, PCC_STATS_COLUMNS
from dhanalysis.metrics.measures import MEASURES
from dhanalysis.probes.proposals import sliding_window_proposals
from dhanalysis.probes.harness import RunOptions, image_context, merge_chunks, process_shard, selected_indices, shard
from dhanalysis.probes.scoring import AdaptiveBatch, score_boxes
from dhanalysis.probes.sliding_window import RAW_COLUMNS, SlidingWindowTask
from dhanalysis.stats.moments import STATS_COLUMNS, bin_summary, merge_stats, pcc_from_stats
from dhanalysis.cli import main
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.errors import DHError
from dhanalysis.model import build_model, save_checkpoint

from helpers import ROOT, assert_same_statistics, tiny_config

WINDOWS = "150"  # windows per box: enough for every bin, small enough for a CPU test
KEYS = ["head", "category_id", "size", "bin"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("analysis")
    data = base / "data"
    make_synth_dataset(data, num_train=1, num_val=4, image_size=64, seed=0)
    ckpts = {}
    for variant in ("single-fc", "double-head", "double-head-ext"):
        torch.manual_seed(0)
        cfg = tiny_config(variant, "model.num_classes=6", "model.min_size=64", "model.max_size=64", f"data.root={data}")
        ckpts[variant] = base / f"{variant}.pth"
        save_checkpoint(ckpts[variant], build_model(cfg))
    return {"base": base, "data": data, "ckpt": ckpts}


def sliding_window_args(setup, variant: str, out, *extra: str) -> list[str]:
    return ["sliding-window", "--ckpt", str(setup["ckpt"][variant]), "--out", str(out), "--proposals-per-gt",
            WINDOWS, "--no-progress", *extra]


@pytest.fixture(scope="module")
def full_run(setup):
    """One uninterrupted single-fc run keeping every window as a raw row (the reference for the other tests)."""
    out = setup["base"] / "full"
    assert main(sliding_window_args(setup, "single-fc", out, "--raw-sample", "100000", "--chunk-size", "3")) == 0
    return out


def load_first_image(setup, model):
    dataset = CocoDataset(setup["data"], "val")
    image, target = dataset[0]
    ctx, _, _ = image_context(model, image, target, torch.device("cpu"))
    return ctx


def test_scores_and_regressed_iou_equal_decoding_by_hand(setup):
    from dhanalysis.model.checkpoint import load_checkpoint

    model = load_checkpoint(setup["ckpt"]["double-head-ext"])
    with torch.inference_mode():
        ctx = load_first_image(setup, model)
        windows, owner = sliding_window_proposals(ctx.boxes, ctx.image_size, 60)
        labels, gt = ctx.labels[owner], ctx.boxes[owner]
        ours = score_boxes(model, ctx.features, ctx.image_size, windows, labels, gt, AdaptiveBatch(37))
        unclipped = score_boxes(model, ctx.features, ctx.image_size, windows, labels, gt, AdaptiveBatch(37),
                                clip_regressed=False)
        heads = model.roi_heads.head_outputs(model.roi_heads.branch_outputs(ctx.features, [windows],
                                                                             [ctx.image_size]))
    rows = torch.arange(len(windows))
    assert set(ours) == {"fc", "conv"}
    for head, parts in heads.items():
        score = parts["cls"].softmax(-1)[rows, labels]
        decoded = model.roi_heads.box_coder.decode(parts["reg"], [windows])[rows, labels]  # the GT class's deltas
        torch.testing.assert_close(ours[head]["score"], score, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(unclipped[head]["reg_iou"], box_iou(decoded, gt).diagonal(), rtol=1e-5, atol=1e-5)
        clipped = clip_boxes_to_image(decoded, ctx.image_size)
        torch.testing.assert_close(ours[head]["reg_iou"], box_iou(clipped, gt).diagonal(), rtol=1e-5, atol=1e-5)


def test_nan_scores_and_boxes_are_refused(setup):
    from dhanalysis.model.checkpoint import load_checkpoint

    model = load_checkpoint(setup["ckpt"]["single-fc"])
    predictor = model.roi_heads.branches["fc"].predictor
    with torch.inference_mode():
        ctx = load_first_image(setup, model)
        args = (model, ctx.features, ctx.image_size, ctx.boxes, ctx.labels, ctx.boxes, AdaptiveBatch(8))
        with torch.no_grad():
            predictor.bbox_pred.bias.fill_(float("nan"))
        with pytest.raises(DHError, match="NaN regressed boxes"):
            score_boxes(*args)
        with torch.no_grad():
            predictor.cls_score.bias.fill_(float("nan"))
        with pytest.raises(DHError, match="NaN scores"):
            score_boxes(*args)


def test_statistics_table_equals_the_raw_values(full_run):
    stats = pd.read_csv(full_run / "sliding_window_stats.csv")
    raw = pd.read_csv(full_run / "raw_sample.csv")
    assert list(stats.columns) == list(STATS_COLUMNS)
    assert list(raw.columns) == list(RAW_COLUMNS)
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["proposals"] == stats["n"].sum() == len(raw)  # raw rows hold every window (one head)
    assert summary["images"] == 4 and summary["boxes"] > 0
    assert summary["proposals_per_box"] == pytest.approx(summary["proposals"] / summary["boxes"])
    assert len(summary["bin_counts"]) == 20 and sum(summary["bin_counts"]) == summary["proposals"]
    assert {"seconds_wall", "seconds_compute", "device"} <= set(summary)
    config = json.loads((full_run / "config.json").read_text())
    assert config["model"]["variant"] == "single-fc"

    pcc = pcc_from_stats(stats, ["head"]).set_index("head")
    np.testing.assert_allclose(pcc.loc["fc", "pcc"], pearsonr(raw["iou"], raw["score"])[0], rtol=1e-9)
    # the object rows: each object's rank measures over its positive windows are scipy's on the raw windows
    objects = pd.read_csv(full_run / "sliding_window_objects.csv").set_index(["image_id", "box"])
    assert len(objects) == raw.groupby(["image_id", "box"]).ngroups
    checked = 0
    for (image, box), part in raw.groupby(["image_id", "box"]):
        pos = part[(part["iou"].to_numpy(np.float32) * np.float32(20)).astype(int) >= 10]
        row = objects.loc[(image, box)]
        assert row["n"] == len(part) and row["n_pos"] == len(pos)
        if len(pos) >= 2:
            np.testing.assert_allclose(row["spearman"], spearmanr(pos["iou"], pos["score"])[0], rtol=1e-9)
            np.testing.assert_allclose(row["kendall"], kendalltau(pos["iou"], pos["score"])[0], rtol=1e-9)
            assert row["best_iou"] == pytest.approx(pos["iou"].max(), rel=1e-12)
            assert row["top_iou"] == pytest.approx(pos.loc[pos["score"] == pos["score"].max(), "iou"].mean())
            checked += 1
    assert checked > 0
    raw["bin"] = np.minimum((raw["iou"].to_numpy() * 20).astype(int), 19)
    summary_bins = bin_summary(stats, ["head", "size"]).set_index(["size", "bin"])
    for (size, b), part in raw.groupby(["size", "bin"]):
        row = summary_bins.loc[(size, b)]
        assert row["n"] == len(part)
        np.testing.assert_allclose(row["score_mean"], part["score"].mean(), rtol=1e-9)
        np.testing.assert_allclose(row["reg_iou_mean"], part["reg_iou"].mean(), rtol=1e-9)
        np.testing.assert_allclose(row["score_std"], part["score"].std(ddof=0), rtol=1e-6, atol=1e-12)


def test_two_shards_merge_to_one_run(setup, full_run):
    from dhanalysis.model.checkpoint import load_checkpoint

    model = load_checkpoint(setup["ckpt"]["single-fc"])
    dataset = CocoDataset(setup["data"], "val")
    task = SlidingWindowTask(model, dataset.num_classes, 512, int(WINDOWS))
    cat_ids = [dataset.label_to_cat_id[k] for k in range(1, 7)]
    tables = []
    for rank in range(2):
        chunk_dir = setup["base"] / f"shard{rank}"
        chunk_dir.mkdir()
        indices = shard(selected_indices(len(dataset), None), rank, 2)
        assert indices == [i for i in range(4) if i % 2 == rank]
        options = RunOptions(chunk_size=1, progress=False, rank=rank, world_size=2)
        process_shard(model, dataset, [task], indices, chunk_dir, rank, options, torch.device("cpu"))
        merged = merge_chunks(chunk_dir, [dataset.ids[i] for i in indices])
        tables.append(task.frame(merged.states[task.name], "synth-single-fc", cat_ids, dataset.category_names))
    both = merge_stats(*tables).sort_values(KEYS).reset_index(drop=True)
    whole = pd.read_csv(full_run / "sliding_window_stats.csv").sort_values(KEYS).reset_index(drop=True)
    assert_same_stats(both, whole)


def assert_same_stats(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Shards run other batch compositions than one whole run: model outputs agree to float32 rounding."""
    assert_same_statistics(a, b, KEYS)


@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_double_counting(setup, full_run):
    out = setup["base"] / "killed"
    args = sliding_window_args(setup, "single-fc", out, "--chunk-size", "1")
    manifest = out / "chunks" / "sliding_window" / "manifest.rank0.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dhanalysis", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = json.loads(manifest.read_text())["chunks"]
    assert 1 <= len(done) < 4 and not (out / "summary.json").exists()

    assert main(args) == 0  # the same command resumes
    chunks = json.loads(manifest.read_text())["chunks"]
    ids = [i for c in chunks for i in c["image_ids"]]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 4
    assert_same_stats(pd.read_csv(out / "sliding_window_stats.csv"),
                      pd.read_csv(full_run / "sliding_window_stats.csv"))


def test_pcc_reuses_the_sliding_window_result_and_groups_by_difficulty(setup, full_run):
    per_class = setup["base"] / "per_class_ap.csv"
    dataset = CocoDataset(setup["data"], "val")
    pd.DataFrame({"model": "ref", "mode": "fc", "category_id": list(dataset.label_to_cat_id.values()),
                  "category": dataset.category_names, "AP": np.linspace(0.9, 0.1, 6)}).to_csv(per_class, index=False)
    before = (full_run / "sliding_window_stats.csv").stat().st_mtime_ns
    args = ["pcc", "--ckpt", str(setup["ckpt"]["single-fc"]), "--out", str(full_run), "--proposals-per-gt",
            WINDOWS, "--no-progress", "--difficulty-from", str(per_class)]
    assert main(args) == 0
    assert (full_run / "sliding_window_stats.csv").stat().st_mtime_ns == before
    assert json.loads((full_run / "pcc_summary.json").read_text())["sliding_window_reused"] is True
    table = pd.read_csv(full_run / "pcc.csv", keep_default_na=False)
    assert list(table.columns) == list(PCC_COLUMNS)
    assert set(table["proposal_set"]) == {"predefined", "rpn", "detections"}
    predefined = table[table["proposal_set"] == "predefined"]
    assert {"all", "size", "class", "difficulty"} == set(predefined["grouping"])
    assert set(table["measure"]) == set(MEASURES) and table.loc[table["grouping"] == "all", "ci_low"].notna().any()
    assert set(predefined.loc[predefined["grouping"] == "difficulty", "group"]) <= {"easy", "medium", "hard"}
    assert (table.loc[table["proposal_set"] == "detections", "mode"] == "fc").all()
    stats = pd.read_csv(full_run / "sliding_window_stats.csv")
    overall = predefined[predefined["grouping"] == "all"].set_index("measure")
    assert overall.loc["pooled_pcc", "n"] == stats["n"].sum()
    assert overall.loc["positive_pcc", "n"] == stats.loc[stats["bin"] >= 10, "n"].sum()
    objects = pd.read_csv(full_run / "sliding_window_objects.csv")
    assert objects["n"].sum() == stats["n"].sum() and set(objects["proposal_set"]) == {"predefined"}
    assert overall.loc["object_kendall", "n"] == objects["kendall"].notna().sum() > 0
    assert list(pd.read_csv(full_run / "pcc_stats.csv").columns) == list(PCC_STATS_COLUMNS)


def test_pcc_on_vanilla_double_head_computes_what_it_needs(setup):
    out = setup["base"] / "double-head"
    args = ["pcc", "--ckpt", str(setup["ckpt"]["double-head"]), "--out", str(out), "--proposals-per-gt", "60",
            "--max-images", "1", "--no-progress"]
    assert main(args) == 0
    assert (out / "sliding_window_stats.csv").exists() and (out / "summary.json").exists()
    stats = pd.read_csv(out / "sliding_window_stats.csv")
    by_head = stats.groupby("head")[["n", "n_s", "n_r"]].sum()
    assert by_head.loc["fc", "n_r"] == 0 and by_head.loc["conv", "n_s"] == 0  # each head has one task (λ = 1)
    table = pd.read_csv(out / "pcc.csv", keep_default_na=False)
    assert set(table["head"]) == {"fc"}  # the conv-head has no classifier
    assert set(table.loc[table["proposal_set"] == "detections", "mode"]) == {"fc-cls+conv-reg"}
    assert json.loads((out / "pcc_summary.json").read_text())["sliding_window_reused"] is False


def test_spatial_corr_end_to_end(setup):
    out = setup["base"] / "spatial"
    args = ["spatial-corr", "--ckpt", str(setup["ckpt"]["double-head-ext"]), "--ckpt", str(setup["ckpt"]["single-fc"]),
            "--out", str(out), "--max-images", "1", "--no-progress"]
    assert main(args) == 0
    ext = np.load(out / "synth-double-head-ext" / "spatial_corr.npz")
    assert sorted(ext.files) == ["conv_output", "conv_output_pre_relu", "fc_output", "fc_weight"]
    assert all(ext[k].shape == (49, 49) for k in ext.files)
    np.testing.assert_allclose(np.diagonal(ext["fc_weight"]), 1.0, rtol=1e-6)
    fc = np.load(out / "synth-single-fc" / "spatial_corr.npz")
    assert sorted(fc.files) == ["fc_output", "fc_weight"]
    table = pd.read_csv(out / "synth-single-fc" / "spatial_corr.csv")
    assert list(table.columns) == ["model", "map", "cell_i", "cell_j", "value"] and len(table) == 2 * 49 * 49


def test_a_folder_of_another_run_is_refused_unless_overwrite(setup, full_run, capsys):
    capsys.readouterr()
    assert main(sliding_window_args(setup, "single-fc", full_run)[:-3] + ["--proposals-per-gt", "90",
                                                                          "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "proposals_per_gt: 150 vs 90" in err and "--overwrite" in err and err.count("\n") == 1
    assert main(sliding_window_args(setup, "double-head", full_run)) == 2
    err = capsys.readouterr().err
    assert "another model or configuration (model." in err and "--overwrite" in err
    out = setup["base"] / "overwritten"
    assert main(sliding_window_args(setup, "single-fc", out, "--max-images", "1")) == 0
    assert main(sliding_window_args(setup, "double-head", out, "--max-images", "1", "--overwrite")) == 0
    assert json.loads((out / "config.json").read_text())["model"]["variant"] == "double-head"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_one_line_error(setup, capsys):
    assert main(sliding_window_args(setup, "single-fc", setup["base"] / "cuda", "--device", "cuda")) == 2
    err = capsys.readouterr().err
    assert err.startswith("dhanalysis: error: ") and err.count("\n") == 1 and "--device" in err


def test_overwrite_leaves_no_file_of_the_previous_model(setup):
    """Every command that writes into a model's folder, then another model claims it with overwrite: only the new
    model's config.json is left (Figs. A.4, A.5 and 5 must not draw the previous model's qualitative and layer
    tables)."""
    from dhanalysis.probes.architecture import write_architecture
    from dhanalysis.probes.qualitative import disagreements, write_disagreements
    from dhanalysis.probes.harness import claim_model_folder
    from dhanalysis.model.checkpoint import load_checkpoint

    out = setup["base"] / "overwrite"
    ckpt, few = str(setup["ckpt"]["double-head-ext"]), ["--max-images", "1", "--no-progress"]
    assert main(sliding_window_args(setup, "double-head-ext", out, "--max-images", "1", "--raw-sample", "10")) == 0
    assert main(["pcc", "--ckpt", ckpt, "--out", str(out), "--proposals-per-gt", WINDOWS, *few]) == 0
    assert main(["spatial-corr", "--ckpt", ckpt, "--out", str(out), *few]) == 0
    assert main(["eval", "--ckpt", ckpt, "--out", str(out), "--max-images", "1", "--device", "cpu"]) == 0
    model = load_checkpoint(ckpt)
    write_disagreements(*disagreements(model, CocoDataset(setup["data"], "val"), max_images=1), out)
    write_architecture(model, out)
    before = {p.name for p in out.rglob("*") if p.is_file()}
    assert {"qualitative.csv", "qualitative_images.csv", "architecture.csv", "eval.csv", "pcc.csv",
            "spatial_corr.npz", "sliding_window_stats.csv"} <= before and any(n.startswith("detections_") for n in
                                                                              before)
    other = json.loads((out / "config.json").read_text())
    other["model"]["variant"] = "single-fc"
    claim_model_folder(out, other, overwrite=True)
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == ["config.json"]
    assert json.loads((out / "config.json").read_text())["model"]["variant"] == "single-fc"
