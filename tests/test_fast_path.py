"""The fast sliding-window path equals the straightforward one: RoIAlign (the gather and `LevelPooler`'s backends)
against torchvision, the heads' inference forms against the NCHW modules, the statistics against `score_boxes`;
bf16 per-bin means stay within 0.01 of fp32."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from dhanalysis.probes.fast_heads import FastHeads
from dhanalysis.model.gather_roi import FeatureTable, map_levels, pool_rows
from dhanalysis.probes.proposals import sliding_window_proposals
from dhanalysis.probes.harness import image_context
from dhanalysis.probes.scoring import AdaptiveBatch, FastScorer, score_boxes
from dhanalysis.probes.sliding_window import SlidingWindowTask
from dhanalysis.stats.moments import NUM_BINS, bin_summary
from dhanalysis.cli import main
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.errors import DHError
from dhanalysis.model import build_model, save_checkpoint
from dhanalysis.model.heads import modules_in_eval
from dhanalysis.model.variants import VARIANTS

from helpers import tiny_config

NO_WEIGHTS = "model.backbone.weights=null"


def random_boxes(n: int, width: float, height: float, g: torch.Generator) -> torch.Tensor:
    """Boxes ``(n, 4)``: ordinary ones, ones crossing every border, sub-pixel ones and zero-size ones."""
    centre = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 1.3 - 0.15 * torch.tensor([width, height])
    size = torch.exp(torch.randn(n, 2, generator=g)) * 0.2 * torch.tensor([width, height])
    size[: n // 8] = torch.rand(n // 8, 2, generator=g) * 0.8  # tiny: below one pixel of the finest level
    size[n // 8: n // 6] = 0.0
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def gather_nchw(features: list[torch.Tensor], scales: list[float], boxes: torch.Tensor,
                levels: torch.Tensor) -> torch.Tensor:
    """The fast scorer's pooling (`pool_rows` on one image's table) as torchvision's ``(N, C, 7, 7)``."""
    rows = pool_rows(FeatureTable.from_features(features, scales), boxes, levels)
    return rows.transpose(1, 2).reshape(len(boxes), -1, 7, 7)


def fpn_level(boxes: torch.Tensor, k_min: int = 2, k_max: int = 5) -> torch.Tensor:
    """FPN Eq. 1 written out, k = ⌊4 + log2(√(wh) / 224)⌋ clamped (torchvision adds 1e-6 before the floor): the
    level index of each box, independent of `map_levels`."""
    wh = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    k = torch.floor(4 + torch.log2(wh.sqrt() / 224) + 1e-6).clamp(k_min, k_max)
    return (k - k_min).long()


@pytest.mark.parametrize("scale", [1.0, 0.25, 1 / 32])
def test_fast_roi_align_equals_torchvision_on_one_map(scale):
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 5, 13, 17, generator=g)
    boxes = random_boxes(400, 17 / scale, 13 / scale, g)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    ref = roi_align(feat, rois, (7, 7), scale, sampling_ratio=2, aligned=False)
    ours = gather_nchw([feat], [scale], boxes, torch.zeros(len(boxes), dtype=torch.int64))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampling_ratio", [0, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 0.25, 1 / 32])
def test_aligned_and_adaptive_roi_align_equals_torchvision(scale, sampling_ratio):
    """detectron2's and mmdetection's RoIAlign (``aligned=True``: half-pixel shift, no 1-px minimum; ratio 0: ⌈RoI
    size / 7⌉ samples per axis, varying per RoI) equals torchvision's kernel; adaptive also without the shift."""
    g = torch.Generator().manual_seed(5)
    feat = torch.randn(1, 5, 13, 17, generator=g)
    boxes = random_boxes(400, 17 / scale, 13 / scale, g)
    boxes[-40:] *= 4  # RoIs of many cells: adaptive ratios up to 8 samples per axis
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    for aligned in (True, False) if sampling_ratio == 0 else (True,):
        ref = roi_align(feat, rois, (7, 7), scale, sampling_ratio=sampling_ratio, aligned=aligned)
        rows = pool_rows(FeatureTable.from_features([feat], [scale]), boxes, torch.zeros(len(boxes), dtype=torch.int64),
                         7, sampling_ratio, aligned=aligned)
        torch.testing.assert_close(rows.transpose(1, 2).reshape(ref.shape), ref, rtol=1e-5, atol=1e-5)
    if sampling_ratio == 0:
        counts = torch.ceil((boxes[:, 2:] - boxes[:, :2]) * scale / 7)
        assert counts.max() > 2 and counts.min() == 0  # both extremes exercised


@pytest.mark.parametrize("backend", ["gather", "torchvision"])
def test_level_pooler_aligned_adaptive_equals_multiscale_pooling(backend):
    """Both `LevelPooler` backends with ``aligned=True, sampling_ratio=0`` equal torchvision's per-level kernel."""
    from dhanalysis.model.roi_heads import LevelPooler

    g = torch.Generator().manual_seed(6)
    names = ["0", "1", "2", "3"]
    feats = {k: torch.randn(2, 3, 48 // 2**i, 64 // 2**i, generator=g) for i, k in enumerate(names)}
    boxes = [random_boxes(150, 256, 192, g), random_boxes(100, 256, 192, g) * 2]
    shapes = [(192, 256), (192, 256)]
    levels = fpn_level(torch.cat(boxes))
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    ref = torch.stack([roi_align(feats[k], rois, (7, 7), 1 / 2 ** (i + 2), 0, aligned=True)
                       for i, k in enumerate(names)])[levels, torch.arange(len(rois))]
    ours = LevelPooler(names, 7, 0, aligned=True)(feats, boxes, shapes, backend=backend)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gather_gradient_equals_torchvision_backward(sampling_ratio):
    """The gather's backward (the transposed gather; with adaptive ratios, after dropping the zero-weight taps that
    pad bags to the batch's largest sample count) scatters the gradient torchvision's ``roi_align`` backward does,
    on a batch of two images and four levels, RoIs of very different sizes (adaptive counts 0 to 8 per axis)."""
    from dhanalysis.model.roi_heads import LevelPooler

    g = torch.Generator().manual_seed(7)
    names = ["0", "1", "2", "3"]
    feats = {k: torch.randn(2, 3, 48 // 2**i, 64 // 2**i, generator=g).requires_grad_() for i, k in enumerate(names)}
    boxes = [random_boxes(150, 256, 192, g), random_boxes(100, 256, 192, g) * 3]
    shapes = [(192, 256), (192, 256)]
    levels = fpn_level(torch.cat(boxes))
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    ref = torch.stack([roi_align(feats[k], rois, (7, 7), 1 / 2 ** (i + 2), sampling_ratio, aligned=True)
                       for i, k in enumerate(names)])[levels, torch.arange(len(rois))]
    ours = LevelPooler(names, 7, sampling_ratio, aligned=True)(feats, boxes, shapes, backend="gather")
    upstream = torch.randn(ref.shape, generator=g)
    ref_grad = torch.autograd.grad(ref, list(feats.values()), upstream)
    ours_grad = torch.autograd.grad(ours, list(feats.values()), upstream)
    assert all(r.abs().sum() > 0 for r in ref_grad)
    for a, b in zip(ours_grad, ref_grad):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_weighted_gather_backward_is_the_transpose():
    """`weighted_gather`'s own backward against autograd's numerical Jacobian (float64), with empty bags, repeated
    rows within a bag and rows nobody reads."""
    from dhanalysis.model.gather_roi import weighted_gather

    g = torch.Generator().manual_seed(8)
    rows = torch.randn(11, 3, dtype=torch.float64, generator=g, requires_grad=True)
    index = torch.tensor([0, 3, 3, 5, 9, 0, 2, 2, 2, 10])  # rows 1, 4, 6, 7, 8 are never read
    weight = torch.rand(len(index), dtype=torch.float64, generator=g)
    offsets = torch.tensor([0, 3, 3, 7, 10])  # bags 1 and 4 are empty
    torch.autograd.gradcheck(lambda r: weighted_gather(r, index, weight, offsets), (rows,))
    torch.autograd.gradcheck(lambda r: weighted_gather(r, index.int(), weight, offsets.int()), (rows,))


def test_fast_roi_align_equals_multiscale_roi_align_and_the_level_rule():
    g = torch.Generator().manual_seed(2)
    names = ["0", "1", "2", "3"]
    feats = {k: torch.randn(1, 6, 80 // 2**i, 120 // 2**i, generator=g) for i, k in enumerate(names)}
    boxes = random_boxes(600, 480, 320, g) * torch.tensor([1.0, 1.0, 1.0, 1.0])
    boxes[-100:] *= 3  # large boxes reach the coarsest level
    ref = MultiScaleRoIAlign(names, 7, 2)(feats, [boxes], [(320, 480)])
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    levels = map_levels(boxes, scales)
    ours = gather_nchw(list(feats.values()), scales, boxes, levels)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert len(set(levels.tolist())) == 4  # every level was exercised
    assert torch.equal(levels, fpn_level(boxes))


@pytest.mark.parametrize("path", ["gather", "torchvision", "fast scorer"])
def test_enlarged_rois_pool_on_their_original_level_like_torchvision(path):
    """RoIs × 1.3 (the conv-head's enlarged RoI) pooled on their original box's level equal torchvision's
    `MultiScaleRoIAlign` run on that level's map alone, for both `LevelPooler` backends (the torchvision one is the
    GPU training path, chosen explicitly here to run on CPU) and for the fast scorer's `pool_rows`."""
    from dhanalysis.model.roi_heads import LevelPooler, scale_boxes_about_centre

    g = torch.Generator().manual_seed(3)
    names = ["0", "1", "2", "3"]
    feats = {k: torch.randn(2, 4, 64 // 2**i, 64 // 2**i, generator=g) for i, k in enumerate(names)}
    shapes = [(256, 256), (256, 256)]
    boxes = [random_boxes(200, 256, 256, g), random_boxes(150, 256, 256, g) * 2]
    big = [scale_boxes_about_centre(b, 1.3) for b in boxes]
    levels = fpn_level(torch.cat(boxes))
    assert not torch.equal(levels, fpn_level(torch.cat(big)))  # some enlarged RoIs would map one level up
    per_level = torch.stack([MultiScaleRoIAlign([k], 7, 2)({k: feats[k]}, big, shapes) for k in names])
    ref = per_level[levels, torch.arange(len(levels))]
    if path == "fast scorer":  # one image at a time, as `FastScorer` pools
        scales = LevelPooler(names, 7, 2).scales(list(feats.values()), shapes)
        ours = torch.cat([gather_nchw([f[i: i + 1] for f in feats.values()], scales, big[i],
                                      map_levels(boxes[i], scales)) for i in range(2)])
    else:
        ours = LevelPooler(names, 7, 2)(feats, big, shapes, level_boxes=boxes, backend=path)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def randomise_batchnorm(model: torch.nn.Module, g: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, so that folding BatchNorm is really tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize("variant, mode, conv_roi_scale", [(v, "dot", 1.0) for v in VARIANTS]
                         + [("double-head-ext", "gaussian", 1.0)] + [(v, "dot", 1.3) for v in VARIANTS])
def test_fast_heads_equal_the_modules(variant, mode, conv_roi_scale):
    """Every variant's branches in inference form equal the modules; with an enlarged conv-head RoI each branch reads
    the pooled input it should (the enlarged one for conv-heads)."""
    torch.manual_seed(0)
    model = build_model(tiny_config(variant, NO_WEIGHTS, f"model.head.non_local_mode={mode}",
                                    f"model.head.conv_roi_scale={conv_roi_scale}")).eval()
    randomise_batchnorm(model, torch.Generator().manual_seed(4))
    roi_heads = model.roi_heads
    pooled = {"plain": torch.randn(9, 16, 7, 7), "enlarged": torch.randn(9, 16, 7, 7)}
    with torch.inference_mode(), modules_in_eval(model):
        ref = roi_heads.head_outputs({name: branch(roi_heads.branch_input(pooled, name))
                                      for name, branch in roi_heads.branches.items()})
        fast = FastHeads(roi_heads)
        ours = fast({k: pooled[k].flatten(2).transpose(1, 2) for k in fast.pooled_keys})
    assert ("enlarged" in fast.pooled_keys) == (conv_roi_scale != 1.0 and "conv" in ref)
    assert {h: set(t) for h, t in ours.items()} == {h: set(t) for h, t in ref.items()}
    for head, tasks in ref.items():
        for task, value in tasks.items():
            torch.testing.assert_close(ours[head][task], value, rtol=1e-4, atol=1e-5)


def test_fast_heads_leave_the_model_untouched():
    model = build_model(tiny_config("double-head-ext", NO_WEIGHTS)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    FastHeads(model.roi_heads, torch.bfloat16)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Four synthetic images and a Double-Head-Ext model with peaked (non-uniform) scores and non-trivial BN."""
    base = tmp_path_factory.mktemp("fast")
    make_synth_dataset(base / "data", num_train=1, num_val=4, image_size=64, seed=0)
    torch.manual_seed(0)
    cfg = tiny_config("double-head-ext", NO_WEIGHTS, "model.num_classes=6", "model.min_size=64", "model.max_size=64",
                      f"data.root={base / 'data'}")
    model = build_model(cfg).eval()
    randomise_batchnorm(model, torch.Generator().manual_seed(5))
    # a random model's softmax is nearly flat; ×30 makes scores spread like a trained model's (per-bin std ~0.4), so
    # bf16 has something to get wrong (×100 pushes bf16's per-bin mean error to ~0.01 on this tiny model)
    with torch.no_grad():
        for branch in model.roi_heads.branches.values():
            if branch.predictor.cls_score is not None:
                branch.predictor.cls_score.weight.mul_(30)
            if branch.predictor.bbox_pred is not None:
                branch.predictor.bbox_pred.weight.mul_(30)
    save_checkpoint(base / "ext.pth", model)
    dataset = CocoDataset(base / "data", "val")
    with torch.inference_mode():
        contexts = [image_context(model, *dataset[i], torch.device("cpu"))[0] for i in range(len(dataset))]
    return {"base": base, "model": model, "dataset": dataset, "contexts": [c for c in contexts if c is not None]}


def run_task(synth, windows: int = 200, **kwargs) -> pd.DataFrame:
    dataset = synth["dataset"]
    task = SlidingWindowTask(synth["model"], dataset.num_classes, 97, windows, **kwargs)
    state = task.new_state()
    with torch.inference_mode():
        for ctx in synth["contexts"]:
            task.process(ctx, state)
    cat_ids = [dataset.label_to_cat_id[k] for k in range(1, dataset.num_classes + 1)]
    return task.frame(state, "m", cat_ids, list(dataset.category_names))


def test_fast_scorer_equals_score_boxes(synth):
    model, ctx = synth["model"], synth["contexts"][0]
    windows, owner = sliding_window_proposals(ctx.boxes, ctx.image_size, 300)
    args = (ctx.features, ctx.image_size, windows, ctx.labels[owner], ctx.boxes[owner])
    with torch.inference_mode():
        ref = score_boxes(model, *args, AdaptiveBatch(64))
        ours = FastScorer(model).score(*args, AdaptiveBatch(41))
    assert {h: set(p) for h, p in ours.items()} == {h: set(p) for h, p in ref.items()}
    for head, parts in ref.items():
        for key, value in parts.items():
            torch.testing.assert_close(ours[head][key], value, rtol=1e-5, atol=1e-5)


def enlarged_copy(synth, scale: float = 1.3):
    """The `synth` model with its conv-head pooling RoIs × ``scale`` (same weights), as the authors' code does."""
    from dhanalysis.config import replace

    model = build_model(replace(synth["model"].config, [f"model.head.conv_roi_scale={scale}"])).eval()
    model.load_state_dict(synth["model"].state_dict())
    return model


def test_fast_scorer_equals_score_boxes_with_an_enlarged_conv_head_roi(synth):
    model, ctx = enlarged_copy(synth), synth["contexts"][0]
    assert model.roi_heads.enlarged_branches == {"conv"}
    windows, owner = sliding_window_proposals(ctx.boxes, ctx.image_size, 300)
    args = (ctx.features, ctx.image_size, windows, ctx.labels[owner], ctx.boxes[owner])
    with torch.inference_mode():
        ref = score_boxes(model, *args, AdaptiveBatch(64))
        ours = FastScorer(model).score(*args, AdaptiveBatch(41))
        plain = score_boxes(synth["model"], *args, AdaptiveBatch(64))
    for head, parts in ref.items():
        for key, value in parts.items():
            torch.testing.assert_close(ours[head][key], value, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref["conv"]["score"], plain["conv"]["score"])  # the enlargement reached the conv-head
    torch.testing.assert_close(ref["fc"]["score"], plain["fc"]["score"])  # and only the conv-head


def test_fast_statistics_equal_the_straightforward_path(synth):
    fast, ref = run_task(synth), run_task(synth, fast=False)
    keys = ["head", "category_id", "size", "bin"]
    fast, ref = fast.sort_values(keys).reset_index(drop=True), ref.sort_values(keys).reset_index(drop=True)
    assert fast[keys + ["n", "n_s", "n_r", "sum_x", "sum_x2"]].equals(ref[keys + ["n", "n_s", "n_r", "sum_x",
                                                                                 "sum_x2"]])
    sums = ["sum_s", "sum_s2", "sum_xs", "sum_r", "sum_r2", "sum_xr"]
    # float32 rounding: folded BatchNorm and oneDNN's conv order the sums differently, and the ×30 predictor of
    # `synth` magnifies that; 5e-5 is still ~400 float32 ulps, far below any effect a bug would have
    np.testing.assert_allclose(fast[sums].to_numpy(float), ref[sums].to_numpy(float), rtol=5e-5, atol=1e-6)


def test_bf16_bin_means_stay_within_0_01_of_fp32(synth):
    fp32 = bin_summary(run_task(synth, 120), ["head"])
    bf16 = bin_summary(run_task(synth, 120, precision="bf16"), ["head"])
    assert len(fp32) == len(bf16) and len(fp32) >= NUM_BINS  # every bin of both heads is filled
    assert fp32["score_std"].max() > 0.2  # the sharpened model's scores really vary
    for col in ("score_mean", "reg_iou_mean"):
        diff = (fp32[col] - bf16[col]).abs()
        assert diff.max() < 0.01, f"{col}: bf16 differs from fp32 by up to {diff.max():.4f}"


def test_reference_path_refuses_bf16(synth):
    with pytest.raises(DHError, match="fp32"):
        SlidingWindowTask(synth["model"], 6, 64, 100, fast=False, precision="bf16")
    with pytest.raises(DHError, match="precision must be one of fp32, bf16, got 'fp16'"):
        FastScorer(synth["model"], "fp16")


def test_cli_scoring_paths_and_precision(synth):
    base = synth["base"]
    common = ["sliding-window", "--ckpt", str(base / "ext.pth"), "--proposals-per-gt", "60", "--no-progress",
              "--max-images", "2"]
    assert main(common + ["--out", str(base / "fast")]) == 0
    assert main(common + ["--out", str(base / "ref"), "--scoring", "reference"]) == 0
    assert main(common + ["--out", str(base / "bf16"), "--precision", "bf16"]) == 0
    fast = pd.read_csv(base / "fast" / "sliding_window_stats.csv")
    ref = pd.read_csv(base / "ref" / "sliding_window_stats.csv")
    assert fast["n"].sum() == ref["n"].sum() > 0
    np.testing.assert_allclose(fast["sum_s"], ref["sum_s"], rtol=1e-5, atol=1e-6)
    import json

    summary = json.loads((base / "bf16" / "summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["run"]["precision"] == "bf16"
    assert "precision" not in json.loads((base / "fast" / "summary.json").read_text())["run"]
    assert main(common + ["--out", str(base / "bad"), "--scoring", "reference", "--precision", "bf16"]) != 0


@pytest.mark.parametrize("relu", [False, True])
def test_prepacked_bf16_linear_equals_addmm(relu):
    """In bf16 on CPU a `FusedLinear` multiplies with oneDNN on a weight prepacked once (and applies the ReLU in the
    same call); it must give what ``addmm`` gives on the same bf16 operands, to bf16 rounding of the fp32 sums."""
    from dhanalysis.model.heads import FusedLinear

    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 300, generator=g), torch.randn(96, generator=g)
    x = torch.randn(37, 300, generator=g).bfloat16()
    layer = FusedLinear(weight, bias, torch.bfloat16)
    if layer.packed is None:
        pytest.skip("no oneDNN bf16 linear here")
    got = layer(x, relu=relu).float()
    plain = copy.copy(layer)
    plain.packed = None
    ref = torch.addmm(bias.bfloat16().float(), x.float(), weight.bfloat16().float().t())
    ref = ref.relu() if relu else ref
    assert torch.allclose(got, plain(x, relu=relu).float(), rtol=1e-2, atol=1e-2)
    assert torch.allclose(got, ref, rtol=1e-2, atol=0.05)
    assert (got >= 0).all() if relu else (got < 0).any()
