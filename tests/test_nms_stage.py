"""Detections before NMS (`eval --before-nms`) and the stage a results file states (`detections`).

Untrained tiny models with ``model.score_thresh=0.0``: every proposal gives a box per class, so before NMS each object
has many overlapping same-class boxes; nothing is trained, so the module takes seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torchvision.ops import box_iou, clip_boxes_to_image, remove_small_boxes

from dhanalysis.metrics.detections import STATED, compute_detections
from dhanalysis.cli import main
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.engine.evaluate import evaluate
from dhanalysis.errors import DHError
from dhanalysis.folders import FolderTaken
from dhanalysis.model import build_model, save_checkpoint
from dhanalysis.results import RESULTS
from dhanalysis.vocab import (AFTER_NMS, BEFORE_NMS, DETECTIONS_INFO_JSON, DETECTIONS_SUMMARY_JSON, EVAL_CSV,
                              STAGE_NOT_STATED, detections_file)

from helpers import tiny_config, two_images
from refusals import refused

MODES = ["fc", "complementary"]


def tiny_model(*overrides: str, num_classes: int = 3):
    torch.manual_seed(0)
    cfg = tiny_config("double-head-ext", f"model.num_classes={num_classes}", "model.score_thresh=0.0", *overrides)
    return build_model(cfg, pretrained=False).eval()


def records(dets: dict[str, torch.Tensor]) -> set[tuple[float, ...]]:
    """One image's detections as exact (label, score, x1, y1, x2, y2) tuples."""
    return {(int(lab), float(s), *map(float, box)) for box, s, lab in zip(dets["boxes"], dets["scores"],
                                                                           dets["labels"])}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """A two-image synthetic set, an untrained checkpoint for it, and the CLI's eval of it before NMS."""
    base = tmp_path_factory.mktemp("nms-stage")
    data = base / "data"
    make_synth_dataset(data, num_train=2, num_val=2, image_size=96, seed=1)
    ckpt = base / "model.pth"
    model = tiny_model(f"data.root={data}", num_classes=CocoDataset(data, "val").num_classes)
    save_checkpoint(ckpt, model)
    before = base / "before"
    assert main(["eval", "--ckpt", str(ckpt), "--data-root", str(data), "--device", "cpu", "--modes", ",".join(MODES),
                 "--out", str(before), "--before-nms"]) == 0
    return SimpleNamespace(base=base, data=data, ckpt=ckpt, model=model, before=before,
                           gt=data / "annotations" / "instances_val.json")


# ------------------------------------------------------------------------------------------------ the model
def test_before_nms_detections_are_a_superset_with_overlapping_same_class_boxes():
    """Every detection after NMS is among those before it (same box, score, label); before NMS, same-class boxes
    overlap beyond the NMS threshold and the per-image cap no longer applies."""
    model = tiny_model("model.detections_per_img=5")
    images, _ = two_images()
    after = model.predict_modes(images, MODES)
    before = model.predict_modes(images, MODES, suppress=False)
    nms = model.roi_heads.nms_thresh
    for mode in MODES:
        for a, b in zip(after[mode], before[mode]):
            assert records(a) <= records(b), mode
            assert len(a["boxes"]) <= 5 < len(b["boxes"])
            assert {"fc_score", "conv_score"} <= set(b)
            assert torch.all(b["scores"][:-1] >= b["scores"][1:])  # highest first, as after NMS
            overlaps = []
            for label in b["labels"].unique():
                same = b["boxes"][b["labels"] == label]
                iou = box_iou(same, same).fill_diagonal_(0)
                overlaps.append(iou.max())
                kept = a["boxes"][a["labels"] == label]
                assert len(kept) < 2 or box_iou(kept, kept).fill_diagonal_(0).max() <= nms
            assert max(overlaps) > nms


def reference_detections(scores: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                         score_thresh: float, head_scores: dict[str, torch.Tensor]) -> set[tuple[float, ...]]:
    """Detections before NMS from class probabilities ``(N, C+1)`` and decoded boxes ``(N, C+1, 4)``: clip, drop the
    background, keep scores above the threshold and boxes torchvision's small-box rule keeps (>= 0.01 px)."""
    boxes = clip_boxes_to_image(boxes, image_size)[:, 1:].reshape(-1, 4)
    labels = torch.arange(scores.shape[1]).expand_as(scores)[:, 1:].reshape(-1)
    rows = torch.arange(len(scores)).view(-1, 1).expand_as(scores)[:, 1:].reshape(-1)
    flat = scores[:, 1:].reshape(-1)
    keep = torch.where(flat > score_thresh)[0]
    keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
    extra = [h[rows[keep], labels[keep]] for h in head_scores.values()]
    return {(int(lab), float(s), *map(float, box), *map(float, e)) for lab, s, box, *e in
            zip(labels[keep], flat[keep], boxes[keep], *extra)}


@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_before_nms_equals_a_reference_from_the_heads_outputs(mode):
    """The RoI heads' detections before NMS are exactly the (proposal, class) pairs of the heads' probabilities and
    decoded boxes above the score threshold that the small-box rule keeps: a near duplicate stays, a degenerate
    proposal's boxes go."""
    model = tiny_model()
    heads = model.roi_heads
    images, _ = two_images(seed=3)
    trunk = model.trunk_pass(images)
    # a near copy of a proposal (its boxes overlap the original's far above any NMS threshold) and a degenerate one
    proposals = [torch.cat([p, p[:1] + 0.01, torch.tensor([[10.0, 10.0, 10.001, 30.0]])]) for p in trunk.proposals]
    # the whole batch in one probe, as detection runs it (kernels may round differently for other batch shapes)
    probed = heads.probe(trunk.features, proposals, trunk.image_sizes)
    counts = [len(p) for p in proposals]
    fc, conv = probed["fc"]["scores"].split(counts), probed["conv"]["scores"].split(counts)
    if mode == "fc":
        scores, boxes = fc, probed["fc"]["boxes"].split(counts)
        heads.score_thresh = float(torch.cat(fc)[:, 1:].median())  # about half the pairs pass: the threshold bites
    else:  # Eq. 4 written as the complement of both heads missing the class, boxes from the conv-head
        scores, boxes = [1 - (1 - f) * (1 - c) for f, c in zip(fc, conv)], probed["conv"]["boxes"].split(counts)
    got = heads.detect(trunk.features, proposals, trunk.image_sizes, [mode], with_head_scores=True,
                       suppress=False)[mode]
    for i, dets in enumerate(got):
        ours = {(int(lab), float(s), *map(float, box), float(f), float(c)) for lab, s, box, f, c in
                zip(dets["labels"], dets["scores"], dets["boxes"], dets["fc_score"], dets["conv_score"])}
        expected = reference_detections(scores[i], boxes[i], trunk.image_sizes[i], heads.score_thresh,
                                        {"fc": fc[i], "conv": conv[i]})
        assert len(ours) == len(expected) == len(dets["boxes"])
        if mode == "fc":
            assert 0 < len(ours) < (len(proposals[i]) - 1) * (scores[i].shape[1] - 1)
            assert ours == expected
        else:  # threshold 0: every pair but the degenerate proposal's
            assert len(ours) == (len(proposals[i]) - 1) * (scores[i].shape[1] - 1)
            # the fused score comes from another order of operations: equal to float32 rounding
            key = lambda r: (r[0], *r[2:6])  # noqa: E731 - label and box, which do not depend on the fusion
            mine, theirs = sorted(ours, key=key), sorted(expected, key=key)
            assert [key(r) for r in mine] == [key(r) for r in theirs]
            assert all(abs(a[1] - b[1]) < 1e-6 and a[6:] == b[6:] for a, b in zip(mine, theirs))
        assert not any(r[4] - r[2] < 1e-2 for r in ours)  # the degenerate proposal's boxes are gone


# ------------------------------------------------------------------------------------------------ eval
def test_eval_before_nms_writes_the_sidecar_and_a_superset_of_the_files_after_nms(world):
    info = json.loads((world.before / DETECTIONS_INFO_JSON).read_text())
    assert info == {"stage": BEFORE_NMS, "score_thresh": 0.0, "nms_thresh": None, "max_per_image": None,
                    "modes": MODES}
    after = world.base / "after"
    evaluate(world.model, CocoDataset(world.data, "val"), MODES, batch_size=1, out=after, progress=False)
    info = json.loads((after / DETECTIONS_INFO_JSON).read_text())
    assert info == {"stage": AFTER_NMS, "score_thresh": 0.0, "nms_thresh": 0.5, "max_per_image": 100, "modes": MODES}
    assert DETECTIONS_INFO_JSON in RESULTS["eval"].files
    for mode in MODES:
        b = json.loads((world.before / detections_file(mode)).read_text())
        a = json.loads((after / detections_file(mode)).read_text())
        assert len(b) > len(a) > 0 and {"fc_score", "conv_score"} <= set(b[0])
        as_keys = {json.dumps(r, sort_keys=True) for r in b}
        assert all(json.dumps(r, sort_keys=True) in as_keys for r in a), mode
    assert (world.before / EVAL_CSV).is_file()  # AP of the detections before NMS


def test_an_eval_folder_keeps_one_stage_unless_overwritten(world, tmp_path, capsys):
    folder = tmp_path / "ev"
    shutil.copytree(world.before, folder)
    dataset = CocoDataset(world.data, "val")
    with pytest.raises(FolderTaken, match="holds detections before NMS and this evaluation writes them after NMS"):
        evaluate(world.model, dataset, ["fc"], out=folder, progress=False)
    line = refused(["eval", "--ckpt", world.ckpt, "--data-root", world.data, "--device", "cpu", "--out", folder],
                   capsys, folder)
    assert "--overwrite" in line and "before NMS" in line
    evaluate(world.model, dataset, ["fc"], out=folder, progress=False, overwrite=True)
    assert json.loads((folder / DETECTIONS_INFO_JSON).read_text())["stage"] == AFTER_NMS
    assert not (folder / detections_file("complementary")).exists()  # the other stage's files went with it
    # a folder evaluated before the sidecar existed held detections after NMS
    (folder / DETECTIONS_INFO_JSON).unlink()
    with pytest.raises(FolderTaken, match="holds detections after NMS"):
        evaluate(world.model, dataset, ["fc"], out=folder, progress=False, before_nms=True)
    evaluate(world.model, dataset, ["fc"], out=folder, progress=False)  # the same stage: evaluated again
    assert json.loads((folder / DETECTIONS_INFO_JSON).read_text())["stage"] == AFTER_NMS
    (folder / DETECTIONS_INFO_JSON).write_text('{"stage": "sorted"}')  # a damaged sidecar: refused, or replaced
    with pytest.raises(FolderTaken, match="does not name the stage"):
        evaluate(world.model, dataset, ["fc"], out=folder, progress=False)
    evaluate(world.model, dataset, ["fc"], out=folder, progress=False, before_nms=True, overwrite=True)
    assert json.loads((folder / DETECTIONS_INFO_JSON).read_text())["stage"] == BEFORE_NMS


# ------------------------------------------------------------------------------------------------ detections
def run_detections(world, results: Path, out: Path, *extra: str) -> dict:
    assert main(["detections", "--gt", str(world.gt), "--results", str(results), "--out", str(out), "--bootstrap",
                 "0", *extra]) == 0
    return json.loads((out / DETECTIONS_SUMMARY_JSON).read_text())


def test_detections_states_the_stage_from_the_sidecar_the_flag_or_neither(world, tmp_path, capsys):
    summary = run_detections(world, world.before / detections_file("fc"), tmp_path / "sidecar")
    assert (summary["stage"], summary["stage_source"]) == (BEFORE_NMS, DETECTIONS_INFO_JSON)
    assert "detections stage: before_nms (from eval_stage.json" in capsys.readouterr().out
    # the same stage stated agrees with the sidecar: the finished folder is found again
    run_detections(world, world.before / detections_file("fc"), tmp_path / "sidecar", "--stage", BEFORE_NMS)
    assert "nothing recomputed" in capsys.readouterr().out
    outside = tmp_path / "dets.json"  # another detector's file: no sidecar beside it
    shutil.copy(world.before / detections_file("fc"), outside)
    summary = run_detections(world, outside, tmp_path / "unstated")
    assert (summary["stage"], summary["stage_source"]) == (STAGE_NOT_STATED, None)
    assert "detections stage: not stated" in capsys.readouterr().out
    summary = run_detections(world, outside, tmp_path / "stated", "--stage", AFTER_NMS)
    assert (summary["stage"], summary["stage_source"]) == (AFTER_NMS, STATED)
    assert "detections stage: after_nms (from --stage)" in capsys.readouterr().out


def test_a_stage_contradicting_the_sidecar_is_refused_in_one_line(world, tmp_path, capsys):
    out = tmp_path / "out"
    line = refused(["detections", "--gt", world.gt, "--results", world.before / detections_file("complementary"),
                    "--out", out, "--stage", AFTER_NMS], capsys, out, world.before)
    assert line.startswith("--stage after_nms contradicts") and "before_nms" in line
    with pytest.raises(DHError, match="stated stage after_nms contradicts"):
        compute_detections(world.gt, world.before / detections_file("fc"), stage=AFTER_NMS, replicates=0)
    assert "invalid choice" in refused(["detections", "--gt", world.gt, "--results", world.before /
                                        detections_file("fc"), "--out", out, "--stage", "sorted"], capsys, out)
