"""The two head structures of the paper and their predictors (§4.1, Fig. 1, Fig. 5), each with its inference form.

Shapes: every head takes pooled RoI features ``(N, C, S, S)`` (C = FPN channels, S = RoI size, 256×7×7 in the paper)
and returns a vector ``(N, D)`` (D = 1024 in the paper). Module names are stable (``fc6``, ``fc7``, ``blocks.0``)
because the analyses look weights up by them.

Inference form: every head, block and predictor has ``inference_form(dtype)``, which returns the same arithmetic
for scoring many boxes, on channels-last RoI features ``(N, S, S, C)`` (what the fast RoIAlign of
`gather_roi.pool_rows` gives): eval-mode BatchNorm folded into the conv before it (w·γ/σ, β − μ·γ/σ), a 1×1 conv as
a matmul over the N·S·S rows, a 3×3 conv on a channels-last view of the same rows (oneDNN's direct convolution
measured twice as fast as im2col + matmul on CPU, BENCHMARKS.md), θ, φ and g of a non-local block in one matmul, a
residual add riding on ``addmm``. The form sits beside its module so that changing a block changes both;
`FusedLinear.flops_per_row` and the ``flops_per_roi`` methods count 2·MACs from the layer shapes. Weights are copied
(optionally cast to bf16), so building the form never changes the model; build it again after its weights change.
(The name is not "fuse": `fuse_scores` is the paper's classifier fusion, something else entirely.) A `ConvHead` in
eval without gradients runs its own inference form, rebuilt whenever its weights or statistics change (evaluation
and the reference scorer get the folded arithmetic; `modules_in_eval` keeps the modules for references).

Training form: every conv-head block also has ``forward_channels_last(x, rows)``, the module's own training
arithmetic on channels-last maps ``(N, S, S, C)``, differentiated by autograd: every conv and every BatchNorm is the
module itself applied to a channels-last view (oneDNN's and cuDNN's channels-last kernels; batch statistics, running
statistics and ``num_batches_tracked`` are updated by the module's own code), θ, φ and g are one conv, and with
``rows`` a 1×1 conv is a matmul over the N·S·S rows (BLAS instead of the convolution library). It reads the same
parameters, so state_dict keys and checkpoints are unchanged. `ConvHead.forward` trains in the channels-last form
where the convolution library has channels-last kernels (`detected_training_form`: a rule from what is installed,
never from the name of the CPU, so every process computes the same arithmetic); `choose_training_form` times the
forms, and the benchmark reports both (BENCHMARKS.md, with the profile that chose them).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _copy(t: torch.Tensor, dtype: torch.dtype, memory_format: torch.memory_format = torch.contiguous_format
          ) -> torch.Tensor:
    """A detached copy in ``dtype`` (never a view of a parameter, so the fused form does not follow the model)."""
    return t.detach().to(dtype=dtype, memory_format=memory_format, copy=True)


def _prepacked_bf16_linear(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` ``(N, K)`` bf16 re-laid out once for oneDNN's matmul (what torch's compiler does for a frozen bf16
    linear layer on CPU), or None where that path does not exist (no oneDNN, another device, another dtype). fc6 of a
    bf16 sliding-window analysis runs 1.11× faster with it on an AMX Xeon (BENCHMARKS.md): MKL's ``addmm`` packs
    the 25 MB weight again on every call, and the ReLU rides on the matmul."""
    if weight.device.type != "cpu" or weight.dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 2048)
    except (AttributeError, RuntimeError):
        return None


class FusedLinear:
    """A matmul with bias over the last dimension, ``(..., K) -> (..., N)``; the weight is kept as ``(K, N)`` for
    ``addmm``. Built from a linear layer's or a 1×1 conv's weight ``(N, K[, 1, 1])``. In bf16 on CPU the weight is
    also prepacked for oneDNN (`_prepacked_bf16_linear`), which then runs the product and an optional ReLU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        self.weight_t = _copy(weight.reshape(len(weight), -1).t(), dtype)
        self.bias = None if bias is None else _copy(bias, dtype)  # None: a plain product
        self.packed = _prepacked_bf16_linear(self.weight_t.t())

    @property
    def flops_per_row(self) -> int:
        return 2 * self.weight_t.shape[0] * self.weight_t.shape[1]

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None, relu: bool = False,
                 into_residual: bool = False) -> torch.Tensor:
        """``x @ W + b``, plus ``residual`` (same shape as the output) when given, then the ReLU when ``relu``.

        ``into_residual``: the sum is accumulated in ``residual``'s own memory (which must be contiguous), for a
        residual nothing reads afterwards. ``addmm`` with a separate output first copies its input term there: at
        the conv-head's 1,000 RoIs that is a 200 MB copy per block, 4% of an evaluation (BENCHMARKS.md)."""
        rows = x.reshape(-1, x.shape[-1])
        if (residual is None and self.packed is not None and self.bias is not None and len(rows)
                and rows.dtype == torch.bfloat16):
            out = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.packed, self.bias,
                                                     "relu" if relu else "none", [], "")
            return out.reshape(*x.shape[:-1], out.shape[-1])
        if residual is None:
            out = torch.mm(rows, self.weight_t) if self.bias is None else torch.addmm(self.bias, rows, self.weight_t)
        elif into_residual:
            out = residual.view(len(rows), -1).addmm_(rows, self.weight_t)
        else:
            out = torch.addmm(residual.reshape(len(rows), -1), rows, self.weight_t)
        if residual is not None and self.bias is not None:
            out = out.add_(self.bias)
        if relu:
            out = out.relu_()
        return out.reshape(*x.shape[:-1], out.shape[-1])


class FusedConv:
    """A k×k, padding k // 2 conv with bias on channels-last maps ``(N, S, S, Cin) -> (N, S, S, Cout)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype):
        self.weight = _copy(weight, dtype, torch.channels_last)  # (Cout, Cin, k, k)
        self.bias = _copy(bias, dtype)

    @property
    def flops_per_row(self) -> int:
        out_ch, in_ch, kh, kw = self.weight.shape
        return 2 * kh * kw * in_ch * out_ch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x.permute(0, 3, 1, 2), self.weight, self.bias, padding=self.weight.shape[-1] // 2)
        return y.permute(0, 2, 3, 1)


class FCHead(nn.Module):
    """FPN's 2-fc head: flatten, fc6, ReLU, fc7, ReLU. fc6 is spatially unshared, which §3.4 analyses."""

    def __init__(self, in_channels: int = 256, roi_size: int = 7, dim: int = 1024):
        super().__init__()
        self.in_channels, self.roi_size = in_channels, roi_size
        self.fc6 = nn.Linear(in_channels * roi_size * roi_size, dim)
        self.fc7 = nn.Linear(dim, dim)
        self.out_dim = dim
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc6(x.flatten(1)))
        return F.relu(self.fc7(x))

    @torch.no_grad()
    def inference_form(self, dtype: torch.dtype = torch.float32) -> FusedFCHead:
        """The inference form: fc6's input columns reordered once from (c, y, x) to (y, x, c), so channels-last
        features flatten straight into it."""
        c, s = self.in_channels, self.roi_size
        w6 = self.fc6.weight.reshape(-1, c, s, s).permute(0, 2, 3, 1)
        return FusedFCHead(FusedLinear(w6, self.fc6.bias, dtype), FusedLinear(self.fc7.weight, self.fc7.bias, dtype))


@dataclass
class FusedFCHead:
    """`FCHead` on channels-last RoI features ``(N, S, S, C) -> (N, dim)``."""

    fc6: FusedLinear
    fc7: FusedLinear

    def flops_per_roi(self, size: int) -> int:
        """2·MACs for one RoI (``size`` is fixed by fc6's width; accepted so every fused head is counted alike)."""
        return self.fc6.flops_per_row + self.fc7.flops_per_row

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc7(self.fc6(x.reshape(len(x), -1), relu=True), relu=True)


def conv_bn(in_ch: int, out_ch: int, kernel: int, bias: bool = False) -> nn.Sequential:
    """A conv followed by BatchNorm: every conv of the conv-head is (§5.1). Bias-free except where the authors'
    code has one (the non-local block's output conv)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias), nn.BatchNorm2d(out_ch))


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, C)`` -> the same memory as an ``(N, C, H, W)`` channels-last tensor (a view, no copy)."""
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` channels-last -> ``(N, H, W, C)`` (a view; contiguous when the memory is channels-last)."""
    return x.permute(0, 2, 3, 1)


def conv_channels_last(conv: nn.Conv2d, x: torch.Tensor, rows: bool) -> torch.Tensor:
    """A conv in training form, ``(N, S, S, Cin) -> (N, S, S, Cout)``: with ``rows``, a 1×1 conv is a matmul over the
    N·S·S rows (BLAS); otherwise, and for larger kernels, the module on a channels-last view (oneDNN's channels-last
    convolution on CPU, cuDNN's NHWC kernels on GPU)."""
    if rows and conv.kernel_size == (1, 1):
        return F.linear(x, conv.weight.flatten(1), conv.bias)
    return _nhwc(conv(_nchw(x)))


def conv_bn_channels_last(layer: nn.Sequential, x: torch.Tensor, rows: bool, relu: bool = False,
                          residual: torch.Tensor | None = None) -> torch.Tensor:
    """A `conv_bn` in training form on ``(N, S, S, Cin) -> (N, S, S, Cout)``; the BatchNorm is the module on a
    channels-last view, so its batch and running statistics are handled by the module's own code. ``residual``
    (``(N, S, S, Cout)``) is added and ``relu`` applied in place, into the BatchNorm's own output: autograd keeps a
    BatchNorm's input, not its output, so the map needs no copy; and in place on that output itself, not on a
    permuted view of it, whose in-place backward would copy the whole map again."""
    out = layer[1](_nchw(conv_channels_last(layer[0], x, rows)))
    if residual is not None:
        out = out.add_(_nchw(residual))
    return _nhwc(out.relu_() if relu else out)


def fuse_conv_bn(layer: nn.Sequential, dtype: torch.dtype) -> FusedLinear | FusedConv:
    """A `conv_bn` with its eval-mode BatchNorm folded into the conv: BN(Wx + b) = (γ/σ)·W x + β + (b − μ)·γ/σ.

    A 1×1 conv becomes a `FusedLinear` over the rows, a larger one a `FusedConv`.
    """
    conv, bn = layer[0], layer[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return FusedLinear(weight, bias, dtype) if conv.kernel_size == (1, 1) else FusedConv(weight, bias, dtype)


class ResidualBlock(nn.Module):
    """Fig. 5(a): raises the channels, 3×3 conv → 1×1 conv, plus a 1×1 projection of the input."""

    def __init__(self, in_channels: int = 256, out_channels: int = 1024):
        super().__init__()
        self.conv1 = conv_bn(in_channels, in_channels, 3)
        self.conv2 = conv_bn(in_channels, out_channels, 1)
        self.shortcut = conv_bn(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + self.shortcut(x))

    def forward_channels_last(self, x: torch.Tensor, rows: bool = False) -> torch.Tensor:
        """The training form, ``(N, S, S, Cin) -> (N, S, S, Cout)`` (see the module docstring)."""
        y = conv_bn_channels_last(self.conv1, x, rows, relu=True)
        shortcut = conv_bn_channels_last(self.shortcut, x, rows)
        return conv_bn_channels_last(self.conv2, y, rows, relu=True, residual=shortcut)

    @torch.no_grad()
    def inference_form(self, dtype: torch.dtype = torch.float32) -> FusedResidualBlock:
        """The inference form, BatchNorm folded (see the module docstring)."""
        return FusedResidualBlock(*(fuse_conv_bn(m, dtype) for m in (self.conv1, self.conv2, self.shortcut)))


@dataclass
class FusedResidualBlock:
    """`ResidualBlock` on channels-last maps; the projection shortcut is added inside conv2's ``addmm``."""

    conv1: FusedConv
    conv2: FusedLinear
    shortcut: FusedLinear

    def flops_per_roi(self, size: int) -> int:
        return size * size * (self.conv1.flops_per_row + self.conv2.flops_per_row + self.shortcut.flops_per_row)

    def __post_init__(self) -> None:
        # the shortcut's bias joins conv2's, added once after the sum: the shortcut is then a plain product, where
        # ``addmm`` with a bias would first broadcast it into the whole output (a 200 MB write per evaluation at
        # 1,000 RoIs of 1,024 × 7 × 7, 1.5 % of it)
        if self.shortcut.bias is not None and self.conv2.bias is not None:
            self.conv2.bias = self.conv2.bias + self.shortcut.bias
            self.shortcut.bias = None

    def __call__(self, x: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """The sum accumulates in the shortcut's own output (``scratch``, for the blocks' common call, is moot)."""
        h = self.conv1(x).relu_()
        return self.conv2(h, residual=self.shortcut(x), into_residual=True).relu_()


class Bottleneck(nn.Module):
    """Fig. 5(b): the ResNet bottleneck, 1×1 reduce → 3×3 → 1×1 expand, identity shortcut."""

    def __init__(self, channels: int = 1024, bottleneck: int = 256):
        super().__init__()
        self.conv1 = conv_bn(channels, bottleneck, 1)
        self.conv2 = conv_bn(bottleneck, bottleneck, 3)
        self.conv3 = conv_bn(bottleneck, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        return F.relu(x + self.conv3(y))

    def forward_channels_last(self, x: torch.Tensor, rows: bool = False) -> torch.Tensor:
        """The training form, ``(N, S, S, C) -> (N, S, S, C)`` (see the module docstring)."""
        y = conv_bn_channels_last(self.conv1, x, rows, relu=True)
        y = conv_bn_channels_last(self.conv2, y, rows, relu=True)
        return conv_bn_channels_last(self.conv3, y, rows, relu=True, residual=x)

    @torch.no_grad()
    def inference_form(self, dtype: torch.dtype = torch.float32) -> FusedBottleneck:
        """The inference form, BatchNorm folded (see the module docstring)."""
        return FusedBottleneck(*(fuse_conv_bn(m, dtype) for m in (self.conv1, self.conv2, self.conv3)))


@dataclass
class FusedBottleneck:
    """`Bottleneck` on channels-last maps; the identity shortcut is added inside conv3's ``addmm``."""

    conv1: FusedLinear
    conv2: FusedConv
    conv3: FusedLinear

    def flops_per_roi(self, size: int) -> int:
        return size * size * (self.conv1.flops_per_row + self.conv2.flops_per_row + self.conv3.flops_per_row)

    def __call__(self, x: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """``scratch``: nothing reads ``x`` afterwards, so the identity shortcut's sum may overwrite it."""
        h = self.conv1(x).relu_()
        h = self.conv2(h).relu_()
        return self.conv3(h, residual=x, into_residual=scratch).relu_()


class NonLocalBlock(nn.Module):
    """Fig. 5(c): a non-local block [43] over the RoI's S×S cells.

    ``mode="dot"`` (default, as in the authors' public code): θ, φ, g are 1×1 convs to ``inner`` channels split into
    ``groups``; per group the affinity θᵀφ is divided by the number of positions instead of a softmax.
    ``mode="gaussian"``: the embedded-Gaussian form, a softmax over positions. The output is a 1×1 conv (with bias)
    back to the input width, BatchNorm (γ starts at 0, so a new block passes its input on), a residual add and a
    ReLU, as in the authors' code. Weight counts (Table 2) do not include the bias.
    """

    def __init__(self, channels: int = 1024, inner: int = 512, groups: int = 4, mode: str = "dot"):
        super().__init__()
        if inner % groups:
            raise ValueError(f"non-local inner width {inner} is not divisible by {groups} groups")
        if mode not in ("dot", "gaussian"):
            raise ValueError(f"non-local mode must be 'dot' or 'gaussian', got {mode!r}")
        self.groups, self.mode = groups, mode
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = conv_bn(inner, channels, 1, bias=True)
        nn.init.zeros_(self.out[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        pos = h * w

        def split(t: torch.Tensor) -> torch.Tensor:  # (N, inner, H, W) -> (N, groups, H·W, inner / groups)
            return t.reshape(n, self.groups, -1, pos).transpose(2, 3)

        theta, phi, g = split(self.theta(x)), split(self.phi(x)), split(self.g(x))
        affinity = theta @ phi.transpose(2, 3)  # (N, groups, H·W, H·W)
        affinity = affinity.softmax(-1) if self.mode == "gaussian" else affinity / pos
        y = (affinity @ g).transpose(2, 3).reshape(n, -1, h, w)
        return F.relu(x + self.out(y))

    def forward_channels_last(self, x: torch.Tensor, rows: bool = False) -> torch.Tensor:
        """The training form on ``(N, S, S, C)``: θ, φ and g as one 1×1 conv (autograd splits the gradient back
        onto the three), the output conv and its BatchNorm as in `conv_bn_channels_last`."""
        n, h, w, _ = x.shape
        pos = h * w
        convs = (self.theta, self.phi, self.g)
        weight, bias = torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs])
        qkv = F.linear(x, weight.flatten(1), bias) if rows else _nhwc(F.conv2d(_nchw(x), weight, bias))
        # channel j of θ/φ/g is group j // (inner / groups); unbind, not indexing: its backward stacks the three
        # gradients instead of zero-filling a full-size tensor per slice
        theta, phi, g = (t.transpose(1, 2) for t in qkv.reshape(n, pos, 3, self.groups, -1).unbind(2))
        affinity = theta @ phi.transpose(2, 3)  # (N, groups, pos, pos)
        affinity = affinity.softmax(-1) if self.mode == "gaussian" else affinity / pos
        y = (affinity @ g).transpose(1, 2).reshape(n, h, w, -1)
        return conv_bn_channels_last(self.out, y, rows, relu=True, residual=x)

    @torch.no_grad()
    def inference_form(self, dtype: torch.dtype = torch.float32) -> FusedNonLocalBlock:
        """The inference form: θ, φ and g stacked into one matmul, the output BatchNorm folded."""
        convs = (self.theta, self.phi, self.g)
        qkv = FusedLinear(torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs]), dtype)
        return FusedNonLocalBlock(qkv, fuse_conv_bn(self.out, dtype), self.groups, self.mode)


@dataclass
class FusedNonLocalBlock:
    """`NonLocalBlock` on channels-last maps ``(N, S, S, C)``."""

    qkv: FusedLinear
    out: FusedLinear
    groups: int
    mode: str

    def flops_per_roi(self, size: int) -> int:
        pos = size * size
        inner = self.qkv.weight_t.shape[1] // 3
        return pos * (self.qkv.flops_per_row + self.out.flops_per_row) + 2 * (2 * pos * pos * inner)  # + θφᵀ, ·g

    def __call__(self, x: torch.Tensor, scratch: bool = False) -> torch.Tensor:
        """``scratch``: nothing reads ``x`` afterwards, so the residual sum may overwrite it."""
        n, h, w, _ = x.shape
        pos = h * w
        qkv = self.qkv(x).reshape(n, pos, 3, self.groups, -1)  # channel j of θ/φ/g is group j // (inner / groups)
        theta, phi, g = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (N, groups, pos, d)
        affinity = theta @ phi.transpose(2, 3)
        affinity = affinity.softmax(-1) if self.mode == "gaussian" else affinity.div_(pos)
        y = (affinity @ g).transpose(1, 2).reshape(n, h, w, -1)
        return self.out(y, residual=x, into_residual=scratch).relu_()


class ConvHead(nn.Module):
    """The conv-head: K blocks, then global average pooling (§4.1).

    Without non-local blocks: one `ResidualBlock` then K − 1 `Bottleneck` blocks. With non-local blocks (K odd), the
    residual block is followed by (K − 1)/2 pairs of (non-local, bottleneck): "K = 5 with non-local" is
    residual, NL, bottleneck, NL, bottleneck (Table 2).
    """

    def __init__(
        self,
        in_channels: int = 256,
        dim: int = 1024,
        bottleneck: int = 256,
        num_blocks: int = 5,
        non_local: bool = True,
        non_local_dim: int = 512,
        non_local_groups: int = 4,
        non_local_mode: str = "dot",
        training_form: str = "auto",
    ):
        super().__init__()
        if training_form not in TRAINING_FORM_CHOICES:
            raise ValueError(f"training_form must be one of {', '.join(TRAINING_FORM_CHOICES)}, got {training_form!r}")
        self.training_form = training_form
        if num_blocks < 1:
            raise ValueError("the conv-head needs at least one block (num_blocks >= 1)")
        if non_local and num_blocks % 2 == 0:
            raise ValueError(f"with non-local blocks num_blocks must be odd (Table 2 uses 3, 5, 7), got {num_blocks}")
        blocks: list[nn.Module] = [ResidualBlock(in_channels, dim)]
        while len(blocks) < num_blocks:
            if non_local:
                blocks.append(NonLocalBlock(dim, non_local_dim, non_local_groups, non_local_mode))
            blocks.append(Bottleneck(dim, bottleneck))
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = dim

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The output map before average pooling, ``(N, dim, S, S)``: what Fig. 4 (left) correlates."""
        return self.blocks(x)

    def feature_map_channels_last(self, x: torch.Tensor, rows: bool = False) -> torch.Tensor:
        """The training form of `feature_map`: ``(N, S, S, C) -> (N, S, S, dim)``, every block's
        ``forward_channels_last`` (``rows``: 1×1 convs as matmuls, see `conv_channels_last`)."""
        for block in self.blocks:
            x = block.forward_channels_last(x, rows)
        return x

    def forward_as(self, form: str, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, S, S) -> (N, dim)`` computed in one of `TRAINING_FORMS` (all compute the same function)."""
        if form == "modules":
            return self.feature_map(x).mean(dim=(2, 3))
        nhwc = x.permute(0, 2, 3, 1).contiguous()
        return self.feature_map_channels_last(nhwc, rows=form == "rows").mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, S, S) -> (N, dim)``. In training, one of `TRAINING_FORMS` (``training_form``: "auto" by the
        `detected_training_form` rule, "measure" the fastest when timed once per shape, or a form by name); in eval
        without gradients, the inference form (BatchNorm folded, `inference_form`), kept while the parameters and
        statistics stay the same; in eval with gradients, the modules."""
        if self.training:
            return self.forward_as(self._form_for(x), x)
        if torch.is_grad_enabled() or self.__dict__.get("_eval_in_modules"):
            return self.forward_as("modules", x)
        return self._current_inference_form()(x.permute(0, 2, 3, 1).contiguous())

    def _current_inference_form(self) -> FusedConvHead:
        """The inference form of the current weights, in their dtype: rebuilt when any parameter or buffer was
        replaced (a move to another device or dtype) or changed in place (an optimiser step, ``load_state_dict``),
        which bumps its version."""
        tensors = (*self.parameters(), *self.buffers())
        state = tuple((t.device, t.dtype, t.data_ptr(), 0 if t.is_inference() else t._version) for t in tensors)
        cached = self.__dict__.get("_inference_cache")
        if cached is None or cached[0] != state:
            cached = (state, self.inference_form(next(self.parameters()).dtype))
            self.__dict__["_inference_cache"] = cached
        return cached[1]

    def _form_for(self, x: torch.Tensor) -> str:
        if self.training_form == "auto":
            return detected_training_form(x.device)
        if self.training_form != "measure":
            return self.training_form
        if not torch.is_grad_enabled() or not any(p.requires_grad for p in self.parameters()):
            return "modules"  # nothing to differentiate: the step the forms are timed on does not exist
        key = (x.device.type, x.dtype, torch.is_autocast_enabled(x.device.type), tuple(x.shape[1:]),
               tuple((type(b).__name__, tuple(p.shape for p in b.parameters())) for b in self.blocks))
        if key not in _MEASURED_FORMS:
            _MEASURED_FORMS[key] = choose_training_form(self, x)["form"]
        return _MEASURED_FORMS[key]

    @torch.no_grad()
    def inference_form(self, dtype: torch.dtype = torch.float32) -> FusedConvHead:
        """The inference form: every block's ``inference_form``."""
        return FusedConvHead([block.inference_form(dtype) for block in self.blocks])


@contextlib.contextmanager
def modules_in_eval(model: nn.Module) -> Iterator[None]:
    """Within the block, every `ConvHead` of ``model`` evaluates with its NCHW modules instead of its inference
    form: the straightforward arithmetic that references (tests, benchmark baselines) compare the fast forms with."""
    heads = [m for m in model.modules() if isinstance(m, ConvHead)]
    before = [head.__dict__.get("_eval_in_modules", False) for head in heads]
    for head in heads:
        head.__dict__["_eval_in_modules"] = True
    try:
        yield
    finally:
        for head, was in zip(heads, before):
            head.__dict__["_eval_in_modules"] = was


# How a training step of the conv-head is computed; every form runs the same modules' parameters and statistics.
TRAINING_FORMS = {
    "modules": "the NCHW modules",
    "channels_last": "channels-last maps, every conv and BatchNorm the module on a channels-last view",
    "rows": "channels-last maps, 1×1 convs as matmuls over the N·S·S rows",
}
# "auto" (the default, `detected_training_form`) and "measure" (`choose_training_form`) choose among them
TRAINING_FORM_CHOICES = ("auto", "measure", *TRAINING_FORMS)
_MEASURED_FORMS: dict[tuple, str] = {}  # (device, dtype, autocast, input shape, block shapes) -> the faster form


def detected_training_form(device: torch.device) -> str:
    """The default training form: "channels_last" where the device's convolution library has channels-last
    training kernels (oneDNN on CPU, cuDNN on CUDA), else the modules.

    A rule from what is installed, not a timing: every process of a run (each DDP rank, a resumed run) computes the
    same arithmetic, so training stays bitwise reproducible. On both CPUs measured (AMD EPYC, Intel Xeon, BENCHMARKS.md)
    channels-last is the faster form; the benchmark checks the rule against `choose_training_form` on the machine it
    runs on, and ``training_form="measure"`` times the forms instead.
    """
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        return "channels_last"
    if device.type == "cuda" and torch.backends.cudnn.is_available():
        return "channels_last"
    return "modules"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_training_form(head: ConvHead, x: torch.Tensor, max_rois: int = 32, rounds: int = 2) -> dict:
    """Time one training step (forward + backward) of each form on a copy of ``head`` and up to ``max_rois`` of the
    RoIs ``x`` ``(N, C, S, S)``: ``{"form": the faster, "seconds": {form: best s}}``.

    The copy keeps the head's running statistics and gradients untouched. The forms alternate after a warm-up and
    the best of ``rounds`` counts, so a moment of load on shared cores does not decide. It runs once per device,
    dtype and shape under ``training_form="measure"`` (cached); the cost is about nine steps on ``max_rois`` RoIs.
    Timings vary between processes, so "measure" is not bitwise reproducible across runs; "auto" is.
    """
    trial = copy.deepcopy(head).train()
    params = [p for p in trial.parameters() if p.requires_grad]
    sample = x.detach()[:max_rois]
    best = {form: float("inf") for form in TRAINING_FORMS}
    for round_ in range(rounds + 1):
        for form in TRAINING_FORMS:
            _sync(x.device)
            start = time.perf_counter()
            out = trial.forward_as(form, sample)
            torch.autograd.grad(out.float().square().sum(), params)
            _sync(x.device)
            if round_:  # round 0 warms up (oneDNN primitive creation, allocator)
                best[form] = min(best[form], time.perf_counter() - start)
    return {"form": min(best, key=best.get), "seconds": best}


@dataclass
class FusedConvHead:
    """`ConvHead` on channels-last RoI features ``(N, S, S, C) -> (N, dim)``."""

    blocks: list

    def flops_per_roi(self, size: int) -> int:
        return sum(block.flops_per_roi(size) for block in self.blocks)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The output map before average pooling, channels-last ``(N, S, S, dim)``. ``x`` is left as it was; each
        later block's input is the block before's own output, which it may overwrite."""
        for i, block in enumerate(self.blocks):
            x = block(x, scratch=i > 0)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).flatten(1, 2).mean(dim=1)


REG_LAYOUTS = ("per_slot", "per_foreground", "agnostic")


class ClassLayout:
    """How the outputs of a converted predictor map to the dataset's labels ``0..C`` (0 = background).

    A source's classifier may have other slots than our labels (torchvision's 91 COCO ids, detectron2's and
    mmdetection's background in the last slot) and its regressor other rows (none for the background, or 4 for every
    class). Logits are gathered per label; the background logit becomes the log-sum-exp of every slot no foreground
    label reads, so each label's softmax probability is exactly the source's probability of its slot. Deltas of the
    background label, which no detection uses, are zeros when the source has none.
    """

    def __init__(self, num_labels: int, num_slots: int = 0, class_slots: tuple[int, ...] = (),
                 reg_layout: str = "per_slot"):
        if reg_layout not in REG_LAYOUTS:
            raise ValueError(f"reg_layout must be one of {', '.join(REG_LAYOUTS)}, got {reg_layout!r}")
        self.num_labels, self.num_slots = num_labels, num_slots or num_labels
        self.class_slots = tuple(class_slots) or tuple(range(num_labels))
        self.reg_layout = reg_layout
        if len(self.class_slots) != num_labels:
            raise ValueError(f"class_slots names {len(self.class_slots)} slots for {num_labels} labels (background "
                             "first)")
        if not all(0 <= s < self.num_slots for s in self.class_slots) or len(set(self.class_slots)) != num_labels:
            raise ValueError(f"class_slots must be distinct slots in 0..{self.num_slots - 1}, got {self.class_slots}")
        foreground = set(self.class_slots[1:])
        self.background_slots = [s for s in range(self.num_slots) if s not in foreground]
        # per_foreground: the regressor's rows skip the background slot
        rows = [s for s in range(self.num_slots) if s != self.class_slots[0]]
        self.reg_rows = [rows.index(s) for s in self.class_slots[1:]]

    @property
    def identity(self) -> bool:
        """True for our own layout (no remapping at all)."""
        return (self.num_slots == self.num_labels and self.class_slots == tuple(range(self.num_labels))
                and self.reg_layout == "per_slot")

    @property
    def reg_width(self) -> int:
        """Output width of the box regressor."""
        return {"per_slot": 4 * self.num_slots, "per_foreground": 4 * (self.num_slots - 1), "agnostic": 4}[
            self.reg_layout]

    def logits(self, slots: torch.Tensor) -> torch.Tensor:
        """``(N, num_slots)`` source logits -> ``(N, C+1)`` label logits (background: log-sum-exp of the rest)."""
        out = slots[:, list(self.class_slots)]
        background = torch.logsumexp(slots[:, self.background_slots], dim=1)
        return torch.cat([background[:, None], out[:, 1:]], dim=1)

    def deltas(self, rows: torch.Tensor) -> torch.Tensor:
        """``(N, reg_width)`` source deltas -> ``(N, 4(C+1))`` per label."""
        n = len(rows)
        if self.reg_layout == "agnostic":
            return rows.repeat(1, self.num_labels)
        per_row = rows.reshape(n, -1, 4)
        if self.reg_layout == "per_slot":
            return per_row[:, list(self.class_slots)].reshape(n, -1)
        background = per_row.new_zeros((n, 1, 4))
        return torch.cat([background, per_row[:, self.reg_rows]], dim=1).reshape(n, -1)


class Predictor(nn.Module):
    """The last layers of one branch: a (C+1)-way classifier and/or class-specific box deltas ``(N, 4·(C+1))``.

    A task whose loss weight is 0 gets no layer (``None``). ``layout``: a converted model's `ClassLayout` (the
    layers then have the source's widths and outputs are remapped to labels); None is our own layout.
    """

    def __init__(self, in_dim: int, num_classes: int, cls: bool, reg: bool, layout: ClassLayout | None = None):
        super().__init__()
        self.layout = None if layout is None or layout.identity else layout
        slots = self.layout.num_slots if self.layout else num_classes
        reg_width = self.layout.reg_width if self.layout else num_classes * 4
        self.cls_score = nn.Linear(in_dim, slots) if cls else None
        self.bbox_pred = nn.Linear(in_dim, reg_width) if reg else None
        if self.cls_score is not None:
            nn.init.normal_(self.cls_score.weight, std=0.01)
            nn.init.zeros_(self.cls_score.bias)
        if self.bbox_pred is not None:
            nn.init.normal_(self.bbox_pred.weight, std=0.001)
            nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits = self.cls_score(x) if self.cls_score is not None else None
        deltas = self.bbox_pred(x) if self.bbox_pred is not None else None
        if self.layout is not None:
            logits = self.layout.logits(logits) if logits is not None else None
            deltas = self.layout.deltas(deltas) if deltas is not None else None
        return logits, deltas

    @torch.no_grad()
    def inference_form(self, dtype: torch.dtype = torch.float32) -> FusedPredictor:
        """The inference form: classifier and box regressor as one matmul."""
        layers = [(task, lin) for task, lin in (("cls", self.cls_score), ("reg", self.bbox_pred)) if lin is not None]
        joint = FusedLinear(torch.cat([lin.weight for _, lin in layers]), torch.cat([lin.bias for _, lin in layers]),
                            dtype)
        return FusedPredictor(joint, [(task, lin.out_features) for task, lin in layers], self.layout)


@dataclass
class FusedPredictor:
    """`Predictor` as one matmul ``(N, D) -> {"cls": (N, C+1), "reg": (N, 4(C+1))}``, each task it has."""

    joint: FusedLinear
    splits: list[tuple[str, int]]
    layout: ClassLayout | None = None

    def flops_per_roi(self, size: int) -> int:
        return self.joint.flops_per_row

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.joint(x)
        out = dict(zip([task for task, _ in self.splits], y.split([width for _, width in self.splits], dim=1)))
        if self.layout is not None:
            out = {task: self.layout.logits(v) if task == "cls" else self.layout.deltas(v) for task, v in out.items()}
        return out


class Branch(nn.Module):
    """One head and its predictor: ``branches[name].head`` and ``branches[name].predictor``."""

    def __init__(self, head_type: str, head: nn.Module, predictor: Predictor):
        super().__init__()
        self.head_type = head_type
        self.head = head
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.predictor(self.head(x))

    def inference_form(self, dtype: torch.dtype = torch.float32) -> FusedBranch:
        """The inference form of head and predictor; a head passed in without an ``inference_form`` has none."""
        if not callable(getattr(self.head, "inference_form", None)):
            raise TypeError(f"head {type(self.head).__name__} has no inference form (no inference_form() method); "
                            "score it with the model's own probe")
        return FusedBranch(self.head_type, self.head.inference_form(dtype), self.predictor.inference_form(dtype))


@dataclass
class FusedBranch:
    """`Branch` on channels-last RoI features ``(N, S, S, C)`` -> {task: outputs} in the fused dtype."""

    head_type: str
    head: FusedFCHead | FusedConvHead
    predictor: FusedPredictor

    def flops_per_roi(self, size: int) -> int:
        return self.head.flops_per_roi(size) + self.predictor.flops_per_roi(size)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.predictor(self.head(x))
