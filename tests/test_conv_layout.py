"""The per-call rule of a channels-last model's convolutions (`model.conv_layout`): on an AVX2-only CPU a 3×3
convolution that trains over a large map computes in NCHW; everywhere else it keeps its channels-last kernels. Either
way it computes the convolution (against float64) and hands back a channels-last map."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dhanalysis.model import build_model, conv_layout
from dhanalysis.model.conv_layout import LARGE_MAP, LayoutConv2d, apply_conv_rules

from helpers import tiny_config


def spied(monkeypatch, capability: str) -> list[bool]:
    """Hold the CPU capability at ``capability`` and record, for every convolution computed, whether its input was
    NCHW (the module's own path passes a channels-last one)."""
    calls: list[bool] = []
    real = conv_layout.F.conv2d

    def conv2d(x, *args):
        calls.append(x.is_contiguous())
        return real(x, *args)

    monkeypatch.setattr(conv_layout, "cpu_capability", lambda: capability)
    monkeypatch.setattr(conv_layout.F, "conv2d", conv2d)
    return calls


def layout_conv(kernel: int, channels: int = 8) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
    conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
    conv.load_state_dict(plain.state_dict())
    assert apply_conv_rules(conv) == (kernel > 1) and type(conv) is (LayoutConv2d if kernel > 1 else nn.Conv2d)
    return conv.to(memory_format=torch.channels_last), plain.double()


SIDE = int(LARGE_MAP ** 0.5)


@pytest.mark.parametrize("capability, kernel, side, grad, nchw", [
    ("AVX2", 3, SIDE, True, True),  # the one case: AVX2, 3×3, a large map, a backward to come
    ("DEFAULT", 3, SIDE, True, True),
    ("AVX2", 3, SIDE - 8, True, False),  # a small map
    ("AVX2", 3, SIDE, False, False),  # inference
    ("AVX512", 3, SIDE, True, False),  # AVX-512 / AMX kernels
])
def test_a_large_map_trains_in_nchw_on_avx2_only_and_computes_the_convolution(monkeypatch, capability, kernel, side,
                                                                              grad, nchw):
    calls = spied(monkeypatch, capability)
    conv, reference = layout_conv(kernel)
    x = torch.randn(2, 8, side, side).contiguous(memory_format=torch.channels_last)
    with torch.set_grad_enabled(grad):
        y = conv(x.requires_grad_(grad))
    assert calls == [nchw]
    assert y.is_contiguous(memory_format=torch.channels_last)
    x64 = x.detach().double().requires_grad_(True)
    want = reference(x64)
    torch.testing.assert_close(y.detach().double(), want.detach(), rtol=1e-5, atol=1e-5)
    if grad:  # the gradients of input, weight and bias, through the layout changes
        upstream = torch.randn(want.shape, dtype=torch.float64)
        got = torch.autograd.grad(y, (x, conv.weight, conv.bias), upstream.float())
        ref = torch.autograd.grad(want, (x64, reference.weight, reference.bias), upstream)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
        assert got[1].shape == conv.weight.shape


def test_one_by_one_and_nchw_inputs_keep_their_own_kernels(monkeypatch):
    calls = spied(monkeypatch, "AVX2")
    one, _ = layout_conv(1)
    one(torch.randn(2, 8, SIDE, SIDE).contiguous(memory_format=torch.channels_last).requires_grad_(True))
    assert calls == [False]  # a 1×1 trains faster channels-last on every CPU measured
    three, _ = layout_conv(3)
    x = torch.randn(2, 8, SIDE, SIDE, requires_grad=True)  # NCHW already: nothing to change
    three.to(memory_format=torch.contiguous_format)(x).sum().backward()
    assert calls == [False, True]  # its own NCHW input, as given


def test_the_model_converts_its_convolutions_and_keeps_its_state_dict(monkeypatch):
    """build_model makes every 3×3 convolution a `LayoutConv2d` (1×1 ones stay), with the same state dict; a model
    in NCHW (``conv_memory_format=contiguous``) has none; a training step of the tiny model at an AVX2 capability
    runs the FPN's P2 conv in NCHW; in inference its backbone computes what the NCHW model's does."""
    torch.manual_seed(0)
    frozen = "model.backbone.norm=frozen_bn"
    model = build_model(tiny_config("single-fc", frozen))
    plain = build_model(tiny_config("single-fc", frozen, "model.conv_memory_format=contiguous"))
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no channels-last convolution library in this torch")
    assert isinstance(model.backbone.fpn.layer_blocks[0][0], LayoutConv2d)
    assert isinstance(model.rpn.head.conv[0][0], LayoutConv2d)
    assert type(model.backbone.fpn.inner_blocks[0][0]) is nn.Conv2d
    assert not any(isinstance(m, LayoutConv2d) for m in plain.modules())
    assert list(model.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 4 * SIDE, 4 * SIDE)
    with torch.no_grad():
        got, want = model.eval().backbone(x.contiguous(memory_format=torch.channels_last)), plain.eval().backbone(x)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5 * float(want[key].abs().max()))
    calls = spied(monkeypatch, "AVX2")
    p2 = []  # whether the FPN's output conv at P2 (64² positions) computed in NCHW
    model.backbone.fpn.layer_blocks[0][0].register_forward_hook(lambda *_: p2.append(calls[-1]))
    feats = model.train().backbone(x.contiguous(memory_format=torch.channels_last))
    assert p2 == [True] and False in calls  # and the 1×1 convolutions in channels-last
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats.values())
