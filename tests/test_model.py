"""Every variant builds, trains and detects; gradients flow exactly where the loss weights say (Eq. 1-3)."""

from __future__ import annotations

import math

import pytest
import torch

from dhanalysis.errors import DHError
from dhanalysis.model import VARIANTS, build_model
from dhanalysis.model.heads import NonLocalBlock
from dhanalysis.model.variants import applicable_modes, available_tasks, effective_loss_weights

from helpers import tiny_config, two_images

# every named variant, plus the λ edge cases of Double-Head-Ext (λ = 1 is vanilla Double-Head; λ = 0 drops a task)
CASES = [(name, ()) for name in VARIANTS] + [
    ("double-head-ext", ("model.loss.lambda_fc=1.0", "model.loss.lambda_conv=1.0")),
    ("double-head-ext", ("model.loss.lambda_fc=0.0",)),
    ("double-head-ext", ("model.loss.lambda_conv=0.0",)),
    ("double-head-ext", ("model.loss.lambda_fc=0.0", "model.loss.lambda_conv=0.0")),
]
IDS = [name + "".join(f"[{o.split('.')[-1]}]" for o in extra) for name, extra in CASES]


def expected_loss_keys(model) -> set[str]:
    keys = {"loss_objectness", "loss_rpn_box_reg"}
    for name, w in model.roi_heads.branch_weights.items():
        keys |= {f"loss_{name}_{task}" for task in ("cls", "reg") if w[task] > 0}
    return keys


@pytest.mark.parametrize("variant,extra", CASES, ids=IDS)
def test_train_losses_and_gradients(variant, extra):
    torch.manual_seed(0)
    model = build_model(tiny_config(variant, *extra))
    model.train()
    # non-local blocks start as the identity (γ of their last BN is 0), which zeroes θ/φ/g gradients by value at
    # step 0; open them so that the test sees the structure of the graph
    for module in model.modules():
        if isinstance(module, NonLocalBlock):
            torch.nn.init.ones_(module.out[1].weight)
    images, targets = two_images()
    losses = model(images, targets)
    assert set(losses) == expected_loss_keys(model)
    assert all(math.isfinite(v.item()) for v in losses.values())

    # each head loss on its own: it reaches its own branch and no other branch
    branch_params = {name: list(b.parameters()) for name, b in model.roi_heads.branches.items()}
    for key, loss in losses.items():
        if not key.startswith("loss_") or key in ("loss_objectness", "loss_rpn_box_reg"):
            continue
        owner = key[len("loss_"): key.rindex("_")]
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        for name, params in branch_params.items():
            has_grad = [p.grad is not None and p.grad.abs().sum() > 0 for p in params]
            if name == owner:
                assert any(has_grad), f"{key} gives its own branch {name} no gradient"
            else:
                assert not any(has_grad), f"{key} leaks gradient into branch {name}"

    # the whole loss: every trainable parameter gets a gradient, since zero-weight tasks have no layer at all
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not dead, f"parameters without gradient: {dead[:5]}"

    # predictors exist exactly for the tasks with non-zero weight
    for name, branch in model.roi_heads.branches.items():
        w = model.roi_heads.branch_weights[name]
        assert (branch.predictor.cls_score is not None) == (w["cls"] > 0)
        assert (branch.predictor.bbox_pred is not None) == (w["reg"] > 0)


@pytest.mark.parametrize("variant,extra", CASES, ids=IDS)
def test_eval_detections_in_torchvision_format(variant, extra):
    cfg = tiny_config(variant, *extra, "model.score_thresh=0.0")
    modes = applicable_modes(cfg.model.variant, cfg.model.loss)
    if not modes:
        with pytest.raises(DHError, match="no classifier and box regressor"):
            build_model(cfg)
        return
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images, _ = two_images()
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2
    for det, img in zip(dets, images):
        assert set(det) == {"boxes", "labels", "scores"}
        assert det["boxes"].shape[1] == 4 and det["boxes"].dtype == torch.float32
        assert det["labels"].dtype == torch.int64 and len(det["labels"]) == len(det["scores"]) == len(det["boxes"])
        assert len(det["boxes"]) > 0
        assert (det["labels"] >= 1).all() and (det["labels"] <= 3).all()
        h, w = img.shape[-2:]
        assert (det["boxes"][:, 2] <= w + 1e-3).all() and (det["boxes"][:, 3] <= h + 1e-3).all()
    # every applicable mode runs in one pass; the model's own mode equals the plain forward
    with torch.no_grad():
        by_mode = model.predict_modes(images, modes)
    assert set(by_mode) == set(modes)
    assert torch.equal(by_mode[model.mode][0]["scores"], dets[0]["scores"])


def test_mode_needing_untrained_branch_names_branch_and_config_value():
    model = build_model(tiny_config("double-head"))  # λ_fc = λ_conv = 1: no conv classifier, no fc regressor
    with pytest.raises(DHError, match=r"conv-head classifier.*loss.lambda_conv = 1.0"):
        model.set_mode("conv")
    with pytest.raises(DHError, match=r"fc-head box regressor.*loss.lambda_fc = 1.0"):
        model.set_mode("fc")
    with pytest.raises(DHError, match="no conv-head"):
        build_model(tiny_config("single-fc")).set_mode("complementary")
    with pytest.raises(DHError, match="unknown inference mode"):
        model.set_mode("fc-only")


def test_ext_config_effective_weights_match_authors_script():
    from dhanalysis.config import load_config, preset_path

    for backbone in ("r50", "r101"):
        cfg = load_config(preset_path(f"coco/{backbone}/double-head-ext.yaml"))
        w = effective_loss_weights(cfg.model.variant, cfg.model.loss)
        got = (w[("conv", "cls")], w[("conv", "reg")], w[("fc", "cls")], w[("fc", "reg")])
        assert got == pytest.approx((0.5, 2.0, 1.4, 0.6), abs=1e-12)
    synth = tiny_config("double-head-ext")
    assert available_tasks(synth.model.variant, synth.model.loss) == {
        ("fc", "cls"), ("fc", "reg"), ("conv", "cls"), ("conv", "reg")}


@pytest.mark.parametrize("backend", ["gather", "torchvision"])
def test_enlarged_roi_pools_on_the_original_boxs_level(backend):
    from dhanalysis.model.roi_heads import LevelPooler, scale_boxes_about_centre

    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    big = scale_boxes_about_centre(boxes, 1.3)
    assert torch.allclose(big, torch.tensor([[7.0, 14.0, 33.0, 66.0]]))
    assert torch.allclose((big[:, :2] + big[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)

    # a box whose enlarged version would map one FPN level up still pools from the original box's level
    pooler = LevelPooler(["0", "1"], 2, 2)
    feats = {"0": torch.zeros(1, 1, 64, 64), "1": torch.ones(1, 1, 32, 32)}
    shapes = [(256, 256)]
    box = [torch.tensor([[0.0, 0.0, 300.0, 300.0]])]  # level of 300 px: floor(4 + log2(300/224)) = 4 -> clamped
    small = [torch.tensor([[0.0, 0.0, 100.0, 100.0]])]  # 100 px -> level 2 (index 0, value 0)
    assert pooler(feats, small, shapes, backend=backend).sum() == 0
    assert pooler(feats, box, shapes, backend=backend).sum() > 0
    assert pooler(feats, box, shapes, level_boxes=small, backend=backend).sum() == 0


@pytest.mark.parametrize("backend", ["gather", "torchvision"])
def test_pooling_box_sets_together_gives_each_set_what_it_gets_alone(backend, monkeypatch):
    """`LevelPooler.pool_sets` (a Double-Head's plain and enlarged RoIs in one pass) returns, set by set, the bits
    `forward` gives each set alone, and the gather builds the feature table once for all sets."""
    from dhanalysis.model import gather_roi
    from dhanalysis.model.roi_heads import LevelPooler, scale_boxes_about_centre

    torch.manual_seed(0)
    feats = {str(i): torch.randn(2, 4, 64 // 2**i, 48 // 2**i) for i in range(4)}
    shapes = [(256, 192), (240, 180)]
    boxes = [torch.tensor([[0.0, 0, 20, 30], [10, 10, 200, 180], [5, 50, 100, 120]]),
             torch.tensor([[30.0, 30, 60, 90], [0, 0, 170, 230]])]
    enlarged = [scale_boxes_about_centre(b, 1.3) for b in boxes]
    pooler = LevelPooler(list(feats), 7, 0)
    alone = [pooler(feats, boxes, shapes, backend=backend),
             pooler(feats, enlarged, shapes, level_boxes=boxes, backend=backend)]
    built = []
    real = gather_roi.FeatureTable.from_features
    monkeypatch.setattr(gather_roi.FeatureTable, "from_features", lambda *a, **k: built.append(1) or real(*a, **k))
    together = pooler.pool_sets(feats, [boxes, enlarged], shapes, [None, boxes], backend=backend)
    assert len(built) == (1 if backend == "gather" else 0)
    assert len(together) == 2 and all(torch.equal(a, b) for a, b in zip(together, alone))


@pytest.mark.parametrize("backend", ["auto", "gather", "torchvision"])
def test_level_pooler_matches_torchvision_multiscale_roi_align(backend):
    from torchvision.ops import MultiScaleRoIAlign

    from dhanalysis.model.roi_heads import LevelPooler

    torch.manual_seed(0)
    feats = {str(i): torch.randn(2, 4, 64 // 2**i, 48 // 2**i) for i in range(4)}
    shapes = [(256, 192), (240, 180)]
    boxes = [torch.tensor([[0.0, 0, 20, 30], [10, 10, 200, 180], [5, 50, 100, 120]]),
             torch.tensor([[30.0, 30, 60, 90], [0, 0, 170, 230]])]
    for f in feats.values():
        f.requires_grad_(True)
    ours = LevelPooler(list(feats), 7, 2)(feats, boxes, shapes, backend=backend)
    ref = MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, shapes)
    torch.testing.assert_close(ours, ref)
    # the gather ("auto" on CPU) must scatter the same gradient in its backward as torchvision's kernel
    upstream = torch.randn_like(ref)
    # torchvision's kernel is not run on a level without RoIs here, so that level has no gradient at all (None)
    ours_grad = torch.autograd.grad(ours, list(feats.values()), upstream, allow_unused=True)
    ref_grad = torch.autograd.grad(ref, list(feats.values()), upstream)
    assert any(g.abs().sum() > 0 for g in ref_grad)
    for a, b in zip(ours_grad, ref_grad):
        torch.testing.assert_close(a if a is not None else torch.zeros_like(b), b)


def test_pooling_backend_is_an_argument_of_each_call():
    """"auto" is the gather on CPU (adaptive ratios included) and torchvision's kernel otherwise; no state is kept."""
    from dhanalysis.model.roi_heads import LevelPooler

    pooler = LevelPooler(["0"], 7, 2)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert pooler.resolve_backend("auto", cpu) == "gather"
    assert pooler.resolve_backend("auto", gpu) == "torchvision"
    assert pooler.resolve_backend("torchvision", cpu) == "torchvision"
    assert pooler.resolve_backend("gather", gpu) == "gather"
    assert LevelPooler(["0"], 7, 0, aligned=True).resolve_backend("auto", cpu) == "gather"  # the gather does both
    with pytest.raises(ValueError, match="pooling backend must be one of auto, gather, torchvision, got 'fast'"):
        pooler({"0": torch.zeros(1, 1, 8, 8)}, [torch.tensor([[0.0, 0, 4, 4]])], [(32, 32)], backend="fast")


@pytest.mark.parametrize("variant", ["single-conv", "double-head-reverse", "double-head", "double-conv", "double-fc"])
def test_conv_roi_scale_enlarges_the_conv_head_input_whatever_its_task(variant):
    """The authors enlarge the conv-head's RoI (×1.3), not the regression branch's: in Reverse the conv-head
    classifies and still pools the enlarged RoI; fc-heads always pool the RoI itself."""
    from helpers import tiny_config, two_images

    from dhanalysis.model import build_model

    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    model = build_model(tiny_config(variant, "model.head.conv_roi_scale=1.3")).eval()
    roi_heads = model.roi_heads
    pool = roi_heads.box_roi_pool
    # torchvision's pooler as the reference; these boxes, enlarged or not, all map to FPN level P2 (FPN Eq. 1)
    reference = MultiScaleRoIAlign(pool.featmap_names, pool.output_size, pool.sampling_ratio)
    images, _ = two_images()
    with torch.no_grad():
        image_list, feats, _ = model.features(images)
        boxes = [torch.tensor([[4.0, 6.0, 60.0, 50.0], [20.0, 10.0, 40.0, 90.0]]), torch.tensor([[0.0, 0, 30, 30]])]
        # x1, y1, x2, y2 grown 1.3x about the centre by hand: centre ± 0.65 · size
        enlarged = [torch.cat([(b[:, :2] + b[:, 2:]) / 2 - 0.65 * (b[:, 2:] - b[:, :2]),
                               (b[:, :2] + b[:, 2:]) / 2 + 0.65 * (b[:, 2:] - b[:, :2])], dim=1) for b in boxes]
        got = roi_heads.branch_outputs(feats, boxes, image_list.image_sizes, backend="torchvision")
        tasks = {spec.name: spec.focus for spec in VARIANTS[variant].branches}
        for name, branch in roi_heads.branches.items():
            pooled = enlarged if branch.head_type == "conv" else boxes  # the conv-head, whatever its task
            x = reference(feats, pooled, image_list.image_sizes)
            for ours, ref in zip(got[name], branch(x)):
                if ref is not None:
                    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        if variant == "double-head-reverse":
            assert tasks["conv"] == "cls"  # here the enlarged conv-head is the classifier
        if variant != "double-fc":  # a conv-head really saw other features than at scale 1.0
            plain = roi_heads.box_roi_pool(feats, boxes, image_list.image_sizes)
            conv = next(n for n, b in roi_heads.branches.items() if b.head_type == "conv")
            assert not torch.allclose(roi_heads.branches[conv](plain)[0 if got[conv][0] is not None else 1],
                                      got[conv][0] if got[conv][0] is not None else got[conv][1])


def test_build_head_rejects_an_unknown_head_type():
    from dhanalysis.model.build import build_head

    cfg = tiny_config("double-head").model.head
    with pytest.raises(DHError, match=r"^unknown head type 'transformer'; choose one of: fc, conv$"):
        build_head("transformer", cfg, 16)


def test_a_head_module_passed_in_replaces_the_configs():
    """As torchvision's FasterRCNN(box_head=...): the user's module is the branch's head, its outputs reach the
    predictor, and it trains; the other branch is built from the config."""
    torch.manual_seed(0)
    cfg = tiny_config("double-head")
    channels, size = cfg.model.backbone.fpn_channels, cfg.model.head.roi_size
    mine = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * size * size, 24), torch.nn.ReLU())
    mine.out_dim = 24
    model = build_model(cfg, heads={"fc": mine}).eval()
    assert model.roi_heads.branches["fc"].head is mine and model.roi_heads.branches["conv"].head_type == "conv"
    images, targets = two_images()
    with torch.no_grad():
        image_list, feats, _ = model.features(images)
        boxes = [torch.tensor([[4.0, 6.0, 60.0, 50.0]]), torch.tensor([[0.0, 0, 30, 30]])]
        got = model.roi_heads.branch_outputs(feats, boxes, image_list.image_sizes)
        pooled = model.roi_heads.box_roi_pool(feats, boxes, image_list.image_sizes)
        torch.testing.assert_close(got["fc"][0], model.roi_heads.branches["fc"].predictor(mine(pooled))[0])
    model.train()
    sum(model(images, targets).values()).backward()
    assert mine[1].weight.grad is not None and mine[1].weight.grad.abs().sum() > 0
    with pytest.raises(DHError, match="has no branch fc_cls; its branches are fc, conv"):
        build_model(cfg, heads={"fc_cls": mine})
    with pytest.raises(DHError, match=r"heads\['fc'\] has no integer out_dim"):
        build_model(cfg, heads={"fc": torch.nn.Flatten()})


def test_the_model_computes_channels_last_and_keeps_its_function_and_state_dict():
    """Where oneDNN or cuDNN is installed the conv weights, hence the feature maps, are channels-last
    (`conv_memory_format`); the same weights in the default format compute the same backbone features and gradients,
    training losses and detections to float32 rounding, and the state dict carries the same values under the same
    keys."""
    from dhanalysis.model.build import conv_memory_format
    from dhanalysis.model.heads import modules_in_eval

    torch.manual_seed(0)
    model = build_model(tiny_config("double-head-ext"))
    plain = build_model(tiny_config("double-head-ext")).to(memory_format=torch.contiguous_format)
    plain.load_state_dict(model.state_dict())
    assert list(plain.state_dict()) == list(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values()))
    if torch.backends.mkldnn.is_available():
        assert conv_memory_format() == torch.channels_last
        assert model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        assert not plain.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # the backbone + FPN as a function: features and parameter gradients for one upstream gradient
    x = torch.rand(2, 3, 64, 96)
    outputs = []
    for m in (model, plain):
        feats = m.train().backbone(x)
        upstream = torch.Generator().manual_seed(2)
        loss = sum((f * torch.randn(f.shape, generator=upstream)).sum() for f in feats.values())
        params = [p for p in m.backbone.parameters() if p.requires_grad]
        outputs.append(({k: f.detach() for k, f in feats.items()}, torch.autograd.grad(loss, params)))
    if torch.backends.mkldnn.is_available():
        assert all(f.is_contiguous(memory_format=torch.channels_last) for f in outputs[0][0].values())
    for key in outputs[0][0]:
        ref = outputs[1][0][key].detach()
        torch.testing.assert_close(outputs[0][0][key], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    for a, b in zip(outputs[0][1], outputs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()))
    # the whole model: losses of one training step (same proposal sampling) and detections
    images, targets = two_images()
    losses = []
    for m in (model, plain):
        torch.manual_seed(1)
        with torch.no_grad():
            losses.append(m.train()(images, targets))
    for key in losses[0]:
        torch.testing.assert_close(losses[0][key], losses[1][key], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        ours = model.eval()(images)
        with modules_in_eval(plain):
            ref = plain.eval()(images)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)


def test_contiguous_memory_format_is_the_nchw_modules_arithmetic():
    """``model.conv_memory_format=contiguous`` gives NCHW conv weights and feature maps, and conv-heads that evaluate
    in their own modules: detections bitwise equal to the same weights run as NCHW modules by hand, in one process;
    `modules_in_eval` leaves the setting as it found it. A bad value is a one-line error."""
    from dhanalysis.model.heads import ConvHead, modules_in_eval

    torch.manual_seed(0)
    auto = build_model(tiny_config("double-head-ext"))
    plain = build_model(tiny_config("double-head-ext", "model.conv_memory_format=contiguous"))
    plain.load_state_dict(auto.state_dict())
    assert plain.backbone.body.conv1.weight.is_contiguous()
    assert not plain.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    heads = [m for m in plain.modules() if isinstance(m, ConvHead)]
    assert heads and all(h.__dict__.get("_eval_in_modules") for h in heads)
    images, _ = two_images()
    reference = auto.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        got = plain.eval()(images)
        with modules_in_eval(reference):
            want = reference.eval()(images)
        with modules_in_eval(plain):
            pass  # entering and leaving must not clear the model's own setting
    assert all(h.__dict__.get("_eval_in_modules") for h in heads)
    for a, b in zip(got, want):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    with pytest.raises(DHError, match="model.conv_memory_format must be one of auto, contiguous"):
        build_model(tiny_config("double-head-ext", "model.conv_memory_format=nhwc"))
