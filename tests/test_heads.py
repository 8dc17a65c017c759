"""Head structure, parameter counts in the paper's unit, non-local forms, each block's inference form
(`inference_form`), the conv-head's training forms (gradients and statistics of the modules) and the fusion rules
(Eq. 4)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dhanalysis.model import heads
from dhanalysis.model.heads import (TRAINING_FORM_CHOICES, TRAINING_FORMS, Bottleneck, Branch, ConvHead, FCHead,
                                    NonLocalBlock, Predictor, ResidualBlock, choose_training_form,
                                    detected_training_form)
from dhanalysis.model.params import layer_weights, paper_m, table2
from dhanalysis.model.roi_heads import FUSION_RULES, fuse_scores
from dhanalysis.vocab import INFERENCE_MODES


def test_paper_rounding_is_half_up():
    assert paper_m(int(2.125 * 2**20)) == "2.13"
    assert paper_m(int(4.125 * 2**20)) == "4.13"
    assert paper_m(int(13.25 * 2**20)) == "13.25"
    assert paper_m(0) == "0.00"


def test_block_and_head_sizes_match_paper():
    assert paper_m(layer_weights(FCHead())) == "13.25"
    assert paper_m(layer_weights(ResidualBlock())) == "1.06"
    assert paper_m(layer_weights(Bottleneck())) == "1.06"
    assert paper_m(layer_weights(NonLocalBlock())) == "2.00"
    # exact counts, by hand: 3x3 256->256, 1x1 256->1024 and the 1x1 projection 256->1024
    assert layer_weights(ResidualBlock()) == 256 * 256 * 9 + 256 * 1024 + 256 * 1024
    assert layer_weights(NonLocalBlock()) == 4 * 1024 * 512


def test_table2_column_reproduced_from_code():
    df = table2()
    ours = {(int(r.K), bool(r.non_local)): r.ours_M for r in df[df["head"] == "conv"].itertuples()}
    assert ours == {
        (1, False): "1.06", (2, False): "2.13", (3, False): "3.19", (4, False): "4.25", (5, False): "5.31",
        (6, False): "6.38", (7, False): "7.44", (3, True): "4.13", (5, True): "7.19", (7, True): "10.25",
    }
    assert df[df["head"] == "fc"]["ours_M"].item() == "13.25"
    assert df["match"].all()


def test_conv_head_block_order_with_non_local():
    head = ConvHead(num_blocks=5, non_local=True)
    kinds = [type(b).__name__ for b in head.blocks]
    assert kinds == ["ResidualBlock", "NonLocalBlock", "Bottleneck", "NonLocalBlock", "Bottleneck"]
    assert [type(b).__name__ for b in ConvHead(num_blocks=3, non_local=False).blocks] == [
        "ResidualBlock", "Bottleneck", "Bottleneck"]
    with pytest.raises(ValueError, match="odd"):
        ConvHead(num_blocks=4, non_local=True)
    # every conv is followed by BatchNorm
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Sequential) and len(m) == 2
             and isinstance(m[0], torch.nn.Conv2d)]
    assert convs and all(isinstance(m[1], torch.nn.BatchNorm2d) for m in convs)
    x = torch.randn(3, 256, 7, 7)
    head.eval()
    assert head(x).shape == (3, 1024)
    assert head.feature_map(x).shape == (3, 1024, 7, 7)


@pytest.mark.parametrize("mode", ["dot", "gaussian"])
def test_non_local_block_against_direct_computation(mode):
    torch.manual_seed(0)
    block = NonLocalBlock(channels=8, inner=4, groups=2, mode=mode).eval()
    torch.nn.init.normal_(block.out[1].weight)  # open the block (γ starts at 0)
    x = torch.randn(2, 8, 3, 3)
    theta, phi, g = block.theta(x), block.phi(x), block.g(x)
    y = torch.zeros(2, 4, 9)
    for n in range(2):
        for grp in range(2):
            sl = slice(2 * grp, 2 * grp + 2)
            t, p, v = (z[n, sl].reshape(2, 9) for z in (theta, phi, g))
            a = t.T @ p
            a = a.softmax(-1) if mode == "gaussian" else a / 9
            y[n, sl] = (a @ v.T).T
    out_conv, out_bn = block.out
    projected = torch.einsum("oi,nip->nop", out_conv.weight[:, :, 0, 0], y) + out_conv.bias[None, :, None]
    normed = out_bn(projected.reshape(2, 8, 3, 3))
    expected = torch.relu(x + normed)  # the authors' block: ReLU after the residual add
    torch.testing.assert_close(block(x), expected)
    assert out_conv.bias is not None and out_conv.bias.requires_grad  # the output conv has a bias (authors' code)
    assert (block(x) >= 0).all() and (x < 0).any()


def open_batchnorm(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters (γ ≠ 0 opens a new non-local block), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return module.eval()


FUSABLE = {  # name -> (module, input channels)
    "fc": (lambda: FCHead(in_channels=6, roi_size=5, dim=12), 6),
    "residual": (lambda: ResidualBlock(6, 16), 6),
    "bottleneck": (lambda: Bottleneck(16, 4), 16),
    "non-local dot": (lambda: NonLocalBlock(16, 8, 2, "dot"), 16),
    "non-local gaussian": (lambda: NonLocalBlock(16, 8, 2, "gaussian"), 16),
    "conv head": (lambda: ConvHead(6, 16, 4, num_blocks=3, non_local_dim=8, non_local_groups=2), 6),
    "conv head, no non-local": (lambda: ConvHead(6, 16, 4, num_blocks=2, non_local=False), 6),
}


@pytest.mark.parametrize("name", list(FUSABLE))
def test_inference_form_of_each_block_equals_the_module(name):
    """``inference_form()`` runs the eval-mode module on channels-last features, BatchNorm folded, and leaves it
    untouched."""
    torch.manual_seed(0)
    factory, channels = FUSABLE[name]
    module = open_batchnorm(factory(), seed=1)
    x = torch.randn(4, channels, 5, 5)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        fused = module.inference_form()
        # a ConvHead in eval without gradients runs its inference form itself: the reference is its modules
        ref = module.forward_as("modules", x) if isinstance(module, ConvHead) else module(x)
        given = x_nhwc.clone()
        ours = fused(x_nhwc)
    assert torch.equal(x_nhwc, given)  # the caller's input is never a block's scratch
    # a block maps channels-last to channels-last; a head returns (N, dim) either way
    torch.testing.assert_close(ours.permute(0, 3, 1, 2) if ref.dim() == 4 else ours, ref, rtol=1e-4, atol=1e-5)
    assert fused.flops_per_roi(5) > 0
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():  # the fused weights are copies: a later change of the module does not reach them
        for param in module.parameters():
            param.add_(1.0)
        torch.testing.assert_close(fused(x_nhwc), ours, rtol=0, atol=0)


def test_conv_head_evaluates_in_its_inference_form_of_the_current_weights():
    """In eval without gradients a ConvHead computes its modules' function through the inference form, and a change
    of its weights (an optimiser step, ``load_state_dict``, in place) or statistics is seen at the next call; with
    gradients it runs the modules, which autograd can differentiate."""
    torch.manual_seed(0)
    head = open_batchnorm(ConvHead(6, 16, 4, num_blocks=3, non_local_dim=8, non_local_groups=2), seed=2)
    x = torch.randn(4, 6, 5, 5)
    calls = []
    original = ConvHead.inference_form
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ConvHead, "inference_form", lambda self, *a: calls.append(1) or original(self, *a))
        with torch.no_grad():
            first = head(x)
            torch.testing.assert_close(first, head.forward_as("modules", x), rtol=1e-4, atol=1e-5)
            assert torch.equal(head(x), first) and len(calls) == 1  # built once, reused
            head.blocks[0].conv1[0].weight.mul_(1.5)
            changed = head(x)
            torch.testing.assert_close(changed, head.forward_as("modules", x), rtol=1e-4, atol=1e-5)
            assert not torch.allclose(changed, first) and len(calls) == 2
            state = copy.deepcopy(head.state_dict())
            state["blocks.2.conv2.1.running_mean"].add_(0.7)
            head.load_state_dict(state)
            torch.testing.assert_close(head(x), head.forward_as("modules", x), rtol=1e-4, atol=1e-5)
            assert len(calls) == 3
            with heads.modules_in_eval(head):  # the references' arithmetic: the modules, no inference form
                assert torch.equal(head(x), head.forward_as("modules", x)) and len(calls) == 3
            head(x)
            assert len(calls) == 3  # and the form is back, still current
    wide = copy.deepcopy(head).double()  # the form follows the parameters' dtype
    with torch.no_grad():
        torch.testing.assert_close(wide(x.double()), wide.forward_as("modules", x.double()))
    out = head(x.requires_grad_())
    assert out.grad_fn is not None  # with gradients: the modules
    torch.autograd.grad(out.sum(), x)


@pytest.mark.parametrize("name", ["bottleneck", "non-local dot"])
def test_a_scratch_input_takes_the_residual_sum_in_place(name):
    """Inside the conv-head's inference form a block's input is the block before's own output: the residual sum
    accumulates there (``addmm_``) instead of ``addmm`` copying the 1,000 × 49 × 1,024 input term into a new
    tensor first; the result is the same as the copying call's."""
    factory, channels = FUSABLE[name]
    module = open_batchnorm(factory(), seed=1)
    x = torch.randn(4, 5, 5, channels)
    with torch.no_grad():
        fused = module.inference_form()
        copied = fused(x.clone())
        scratch = x.clone()
        ours = fused(scratch, scratch=True)
    assert ours.data_ptr() == scratch.data_ptr()
    torch.testing.assert_close(ours, copied, rtol=1e-6, atol=1e-6)


def test_flops_of_the_inference_form_count_every_layer():
    """2·MACs from the layer shapes, by hand for each kind of layer at S = 7 (what the benchmarks divide by)."""
    pos = 49
    assert ResidualBlock(8, 32).inference_form().flops_per_roi(7) == 2 * pos * (8 * 8 * 9 + 2 * 8 * 32)
    assert Bottleneck(32, 4).inference_form().flops_per_roi(7) == 2 * pos * (32 * 4 + 4 * 4 * 9 + 4 * 32)
    nl = 2 * pos * (3 * 32 * 16 + 16 * 32) + 2 * 2 * pos * pos * 16  # θ, φ, g, out; then θφᵀ and its product with g
    assert NonLocalBlock(32, 16, 4).inference_form().flops_per_roi(7) == nl
    assert FCHead(8, 7, 32).inference_form().flops_per_roi(7) == 2 * (8 * 49 * 32 + 32 * 32)
    assert Predictor(32, 5, cls=True, reg=True).inference_form().flops_per_roi(7) == 2 * 32 * (5 + 20)


def test_branch_inference_form_and_a_head_without_one():
    torch.manual_seed(0)
    branch = Branch("fc", open_batchnorm(FCHead(6, 5, 12), 2), Predictor(12, 4, cls=True, reg=True)).eval()
    x = torch.randn(3, 6, 5, 5)
    with torch.no_grad():
        logits, deltas = branch(x)
        fused = branch.inference_form()(x.permute(0, 2, 3, 1).contiguous())
    assert list(fused) == ["cls", "reg"]
    torch.testing.assert_close(fused["cls"], logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused["reg"], deltas, rtol=1e-4, atol=1e-5)
    cls_only = Branch("fc", FCHead(6, 5, 12), Predictor(12, 4, cls=True, reg=False)).inference_form()
    assert list(cls_only(torch.randn(2, 5, 5, 6))) == ["cls"]
    plain_module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(150, 12))  # a head passed in by a user
    custom = Branch("fc", plain_module, Predictor(12, 4, cls=True, reg=True))
    with pytest.raises(TypeError, match="no inference form"):
        custom.inference_form()


def test_fusion_rules_follow_their_formulas():
    """§4.2 (Eq. 4) and Table 3, each rule against its formula: complementary s_fc + s_conv·(1 − s_fc) =
    1 − (1 − s_fc)(1 − s_conv), max, the mean. Worked by hand on a few scores (a sure score, a tie, a zero), then
    against float64 numpy on random ones."""
    s_fc = torch.tensor([[0.2, 0.9, 0.0, 0.5, 1.0]])
    s_conv = torch.tensor([[0.6, 0.3, 0.4, 0.5, 0.7]])
    by_hand = {"complementary": [[0.68, 0.93, 0.4, 0.75, 1.0]],  # 1 − 0.8·0.4, 1 − 0.1·0.7, ..., 1 − 0·0.3
               "max": [[0.6, 0.9, 0.4, 0.5, 1.0]],
               "average": [[0.4, 0.6, 0.2, 0.5, 0.85]]}
    for rule, expected in by_hand.items():
        np.testing.assert_allclose(fuse_scores(s_fc, s_conv, rule).double().numpy(), expected, rtol=0, atol=1e-7,
                                   err_msg=rule)
    rng = np.random.default_rng(0)
    a, b = rng.random((50, 5)), rng.random((50, 5))
    reference = {"complementary": 1.0 - (1.0 - a) * (1.0 - b), "max": np.where(a >= b, a, b), "average": (a + b) / 2}
    for rule, expected in reference.items():
        fused = fuse_scores(torch.from_numpy(a).float(), torch.from_numpy(b).float(), rule)
        assert fused.shape == (50, 5) and fused.dtype == torch.float32
        np.testing.assert_allclose(fused.double().numpy(), expected, rtol=0, atol=1e-6, err_msg=rule)
    assert set(FUSION_RULES) == {m.fusion for m in INFERENCE_MODES.values() if m.fusion}  # no rule unnamed, none unused
    with pytest.raises(ValueError, match="unknown fusion rule 'min'"):
        fuse_scores(s_fc, s_conv, "min")


def test_fused_scores_reach_detections_unchanged():
    """Probabilities that do not sum to one must not be renormalised by post-processing."""
    from helpers import tiny_config, two_images

    from dhanalysis.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config("double-head-ext", "model.score_thresh=0.0", "model.detections_per_img=1000",
                                    "model.nms_thresh=1.0")).eval()
    images, _ = two_images()
    with torch.no_grad():
        image_list, feats, _ = model.features(images)
        proposals, _ = model.rpn(image_list, feats)
        heads = model.roi_heads.head_outputs(model.roi_heads.branch_outputs(feats, proposals, image_list.image_sizes))
        s_fc, s_conv = heads["fc"]["cls"].softmax(-1), heads["conv"]["cls"].softmax(-1)
        fused = fuse_scores(s_fc, s_conv, "complementary")
        dets = model.roi_heads.detect(feats, proposals, image_list.image_sizes, ["complementary"])["complementary"]
    assert (fused.sum(-1) > 1.0 + 1e-3).any()  # genuinely not one softmax
    got = torch.cat([d["scores"] for d in dets]).sort().values
    want = fused[:, 1:].flatten()
    want = want[want > 0].sort().values  # no threshold, no NMS: every foreground (proposal, class) survives
    keep = got.numel()
    assert keep > 0
    # every detection score is one of the fused values, bit for bit
    assert torch.isin(got, want).all()


@pytest.mark.parametrize("mode", list(INFERENCE_MODES))
def test_each_mode_scores_and_regresses_with_the_heads_its_row_names(mode):
    """A mode's detections read the classifier(s) and the regressor its table row names, fused by its rule."""
    from helpers import tiny_config, two_images

    from dhanalysis.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config("double-head-ext")).eval()  # λ < 1: both heads have both tasks
    images, _ = two_images()
    with torch.no_grad():
        image_list, feats, _ = model.features(images)
        proposals, _ = model.rpn(image_list, feats)
        heads = model.roi_heads.head_outputs(model.roi_heads.branch_outputs(feats, proposals, image_list.image_sizes))
        scores, deltas = model.roi_heads.mode_scores_and_deltas(heads, mode)
    probs = {h: heads[h]["cls"].double().softmax(-1) for h in heads}
    reference = {"max": lambda a, b: np.maximum(a, b), "average": lambda a, b: (a + b) / 2,
                 "complementary": lambda a, b: 1 - (1 - a) * (1 - b)}  # Eq. 4 as "not missed by either"
    row = INFERENCE_MODES[mode]
    want = reference[row.fusion](*(probs[h].numpy() for h in row.cls)) if row.fusion else probs[row.cls[0]].numpy()
    np.testing.assert_allclose(scores.double().numpy(), want, atol=1e-6)
    assert torch.equal(deltas, heads[row.reg]["reg"].float())
    other = [h for h in heads if h != row.reg]
    assert not torch.equal(deltas, heads[other[0]]["reg"].float())


def test_detections_carry_each_heads_score_of_the_same_proposal():
    """Every detection's fc_score / conv_score are the heads' probabilities of its class for its own proposal: the
    complementary fusion of the two gives its score back, and a head's own mode scores equal its field."""
    from helpers import tiny_config, two_images

    from dhanalysis.engine.evaluate import to_coco_results
    from dhanalysis.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config("double-head-ext", "model.score_thresh=0.0", "model.detections_per_img=50")).eval()
    images, _ = two_images()
    with torch.no_grad():
        by_mode = model.predict_modes(images, ["complementary", "fc-cls+conv-reg"])
    for det in by_mode["complementary"]:
        assert len(det["scores"]) > 0
        refused = fuse_scores(det["fc_score"], det["conv_score"], "complementary")
        torch.testing.assert_close(refused, det["scores"], rtol=0, atol=1e-6)
    for det in by_mode["fc-cls+conv-reg"]:
        torch.testing.assert_close(det["fc_score"], det["scores"], rtol=0, atol=0)
    record = to_coco_results(by_mode["complementary"][0], 7, {i: i for i in range(10)})[0]
    assert set(record) == {"image_id", "category_id", "bbox", "score", "fc_score", "conv_score"}


TRAINABLE = {
    "K=3, non-local dot": lambda: ConvHead(6, 16, 4, num_blocks=3, non_local_dim=8, non_local_groups=2),
    "K=3, non-local gaussian": lambda: ConvHead(6, 16, 4, num_blocks=3, non_local_dim=8, non_local_groups=2,
                                                non_local_mode="gaussian"),
    "K=2, no non-local": lambda: ConvHead(6, 16, 4, num_blocks=2, non_local=False),
}


def _train_step(head: ConvHead, form: str, x: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """One training-mode forward + backward in ``form``: {output, input and parameter grads, buffers}."""
    x = x.clone().requires_grad_()
    head.train().zero_grad(set_to_none=True)
    out = head.forward_as(form, x)
    (out * weights).sum().backward()
    result = {"out": out.detach(), "grad:input": x.grad}
    result.update({f"grad:{k}": p.grad for k, p in head.named_parameters()})
    result.update({f"buffer:{k}": b.clone() for k, b in head.named_buffers()})
    return result


@pytest.mark.parametrize("form", list(TRAINING_FORMS))
@pytest.mark.parametrize("name", list(TRAINABLE))
def test_each_training_form_has_the_modules_gradients_and_statistics(name, form):
    """Outputs, gradients (input and every parameter) and BatchNorm running statistics of a training step in each
    form equal a float64 run of the modules to float32 rounding, no worse than the float32 modules themselves."""
    torch.manual_seed(0)
    head = open_batchnorm(TRAINABLE[name](), seed=1)
    x, weights = torch.randn(5, 6, 5, 5), torch.randn(5, 16)
    with torch.no_grad():  # 3 steps of running statistics, momentum 0.1 and, in one block, a cumulative average
        head.blocks[0].conv1[1].momentum = None
    reference = copy.deepcopy(head).double()
    ref = _train_step(reference, "modules", x.double(), weights.double())
    stock = _train_step(copy.deepcopy(head), "modules", x, weights)
    ours = _train_step(copy.deepcopy(head), form, x, weights)
    assert ours.keys() == ref.keys()
    scale = max(v.abs().max().item() for k, v in ref.items() if k.startswith("grad:"))
    for key, want in ref.items():
        if key.endswith("num_batches_tracked"):
            assert torch.equal(ours[key], want), key
            continue
        atol = 2e-6 * (scale if key.startswith("grad:") else max(want.abs().max().item(), 1.0))
        torch.testing.assert_close(stock[key].double(), want, rtol=1e-4, atol=atol, msg=f"stock {key}")
        torch.testing.assert_close(ours[key].double(), want, rtol=1e-4, atol=atol, msg=f"{form} {key}")


def test_training_forms_keep_the_state_dict_and_training_uses_the_chosen_form(monkeypatch):
    """Every form reads the modules' own parameters (same state_dict keys, checkpoints unchanged); a training
    forward runs the form the rule picks, evaluation the modules; "measure" times the forms once per shape."""
    keys = set(ConvHead(6, 16, 4, num_blocks=3, non_local_dim=8, non_local_groups=2).state_dict())
    for form in TRAINING_FORM_CHOICES:
        head = ConvHead(6, 16, 4, num_blocks=3, non_local_dim=8, non_local_groups=2, training_form=form)
        assert set(head.state_dict()) == keys
    with pytest.raises(ValueError, match="training_form must be one of"):
        ConvHead(6, 16, 4, training_form="fast")
    assert detected_training_form(torch.device("cpu")) == ("channels_last" if torch.backends.mkldnn.is_available()
                                                           else "modules")
    ran: list[str] = []
    real = ConvHead.forward_as
    monkeypatch.setattr(ConvHead, "forward_as", lambda self, form, x: ran.append(form) or real(self, form, x))
    head = ConvHead(6, 16, 4, num_blocks=2, non_local=False)
    x = torch.randn(3, 6, 5, 5)
    head.train()(x)
    head.eval()(x)
    assert ran == [detected_training_form(x.device), "modules"]
    timed: list[tuple] = []
    monkeypatch.setattr(heads, "_MEASURED_FORMS", {})
    monkeypatch.setattr(heads, "choose_training_form", lambda h, x: timed.append(x.shape) or {"form": "rows"})
    ran.clear()
    head.training_form = "measure"
    head.train()
    head(x), head(x), head(torch.randn(3, 6, 4, 4))
    assert ran == ["rows"] * 3 and timed == [x.shape, (3, 6, 4, 4)]


def test_timing_the_training_forms_leaves_the_head_untouched():
    """`choose_training_form` times a copy: the head's parameters, gradients and running statistics stay as they
    were, and the answer is one of the forms with a time for each."""
    head = open_batchnorm(ConvHead(6, 16, 4, num_blocks=3, non_local_dim=8, non_local_groups=2), seed=2).train()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    result = choose_training_form(head, torch.randn(4, 6, 5, 5), rounds=1)
    assert result["form"] in TRAINING_FORMS and set(result["seconds"]) == set(TRAINING_FORMS)
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    assert all(p.grad is None for p in head.parameters())
