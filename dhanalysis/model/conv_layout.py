"""How each convolution of a channels-last model computes: two rules of the CPU kind, the call's shape and whether a
backward follows, never a timing, so every process of a run, and a resumed run, computes the same arithmetic.

**Large maps train in NCHW on AVX2.** A channels-last model (`build.conv_memory_format`) runs every convolution in
oneDNN's channels-last kernels: faster in inference on every CPU kind measured, and for the 1×1 convolutions and the
conv-head's 7 × 7 maps in training too. On a CPU whose best kernels are AVX2 (no AVX-512, no AMX) one thing goes the
other way: the *backward* of a 3×3 convolution over a large map. Measured on a 2-core AMD EPYC Zen 3 (BENCHMARKS.md,
"on a real AVX2-only EPYC"), forward + backward, channels-last ÷ NCHW: 256 → 256 at 2 × 128² 1.41, at 2 × 64² 1.20,
64 → 64 at 2 × 128² 1.24, while at 32² and below the two are within 7 % and every 1×1 convolution is 0.47-0.91.
Those large 3×3 convolutions are the FPN's output convs and the RPN's shared conv at P2 and P3. So a 3×3 (or larger)
convolution that will run backward over at least 64² output positions per image, on such a CPU, computes in NCHW and
hands its output back channels-last, so that every other layer keeps its own kernels.

**Frozen BatchNorms fold into their convolutions in inference.** A ResNet's `FrozenBatchNorm2d` is an affine map of
each channel, two passes over every map after its convolution (140 ms of a 5.1 s evaluation of one 800 × 1088 image
on that EPYC). Without gradients and in eval mode, a convolution followed by one computes with the norm's scale in
its weights and the norm's shift as its bias, and the norm passes its input on: the same function, rounded once
fewer. The folded weights are kept while the weights and the norm's buffers stay as they are (their versions and
storage), and computed again when either changes. Training, and maps in NCHW (``conv_memory_format=contiguous``,
the source library's arithmetic), compute as built.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

# the ATen CPU capabilities whose oneDNN channels-last 3×3 backward was measured slower than NCHW on large maps
NCHW_TRAINING_CAPABILITIES = ("AVX2", "DEFAULT")
LARGE_MAP = 64 * 64  # output positions per image from which the NCHW backward was measured faster (1.20× at 64²)


@functools.cache
def cpu_capability() -> str:
    """ATen's CPU capability (``AVX512``, ``AVX2``, ``DEFAULT``, ...); ``ATEN_CPU_CAPABILITY`` lowers it."""
    return torch.backends.cpu.get_cpu_capability()


def trains_in_nchw(device_type: str, capability: str, kernel: tuple[int, int], out_positions: int,
                   backward: bool) -> bool:
    """Whether a convolution call computes in NCHW rather than in its channels-last layout (see the module)."""
    return (backward and device_type == "cpu" and capability in NCHW_TRAINING_CAPABILITIES
            and kernel[0] * kernel[1] > 1 and out_positions >= LARGE_MAP)


def strictly_channels_last(t: torch.Tensor) -> bool:
    """A 4-d tensor in channels-last order that is not also NCHW (a 1×1 kernel's weight, or a map of one position or
    one channel, is both)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


class FoldableFrozenBatchNorm2d(FrozenBatchNorm2d):
    """`FrozenBatchNorm2d` that passes its input on when the convolution before it has applied it (`LayoutConv2d`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.__dict__.pop("_applied", False):
            return x
        return super().forward(x)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, shift)``, computed as `FrozenBatchNorm2d.forward` computes them."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale


class LayoutConv2d(nn.Conv2d):
    """`nn.Conv2d` that follows both rules of the module per call; the same parameters, state-dict keys and values.

    ``norm`` (kept out of the module tree, so the state dict is unchanged): the frozen BatchNorm that follows it."""

    @property
    def norm(self) -> FoldableFrozenBatchNorm2d | None:
        return self.__dict__.get("_norm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = strictly_channels_last(x)
        norm = self.norm
        if (norm is not None and (channels_last or strictly_channels_last(self.weight)) and not self.training
                and not torch.is_grad_enabled()):
            weight, bias = self.folded()
            norm.__dict__["_applied"] = True
            return self._conv_forward(x, weight, bias)
        backward = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        positions = x.shape[-2] * x.shape[-1] // (self.stride[0] * self.stride[1])
        if not (channels_last and self.padding_mode == "zeros"
                and trains_in_nchw(x.device.type, cpu_capability(), self.kernel_size, positions, backward)):
            return super().forward(x)
        y = F.conv2d(x.contiguous(), self.weight.contiguous(), self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        return y.contiguous(memory_format=torch.channels_last)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and bias with the norm applied, cached while the tensors they come from are unchanged."""
        sources = (self.weight, self.bias, *self.norm.buffers())
        key = tuple((t._version, t.data_ptr()) for t in sources if t is not None)
        cached = self.__dict__.get("_folded")
        if cached is None or cached[0] != key:
            scale, shift = self.norm.affine()
            weight = self.weight * scale.reshape(-1, 1, 1, 1)
            bias = shift if self.bias is None else self.bias * scale + shift
            cached = self.__dict__["_folded"] = (key, weight.detach(), bias.detach())
        return cached[1], cached[2]


def conv_norm_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, FrozenBatchNorm2d]]:
    """Every convolution whose output goes straight into a frozen BatchNorm, as torchvision's ResNets name them: a
    ``conv<k>`` beside a ``bn<k>`` (the stem, every block) and a conv followed by a norm in an ``nn.Sequential`` (the
    downsampling shortcut)."""
    pairs = []
    for module in model.modules():
        children = dict(module.named_children())
        for name, child in children.items():
            norm = children.get("bn" + name[4:]) if name.startswith("conv") else None
            if isinstance(child, nn.Conv2d) and isinstance(norm, FrozenBatchNorm2d):
                pairs.append((child, norm))
        if isinstance(module, nn.Sequential):
            layers = list(module)
            pairs += [(a, b) for a, b in zip(layers, layers[1:])
                      if isinstance(a, nn.Conv2d) and isinstance(b, FrozenBatchNorm2d)]
    return pairs


def apply_conv_rules(model: nn.Module) -> int:
    """Make every plain `nn.Conv2d` of ``model`` a `LayoutConv2d` and every frozen BatchNorm after one foldable (in
    place: modules keep their parameters and buffers, so an optimizer built before still holds them); returns how
    many convolutions fold a norm."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = LayoutConv2d
    pairs = conv_norm_pairs(model)
    for conv, norm in pairs:
        if type(norm) is FrozenBatchNorm2d and isinstance(conv, LayoutConv2d):
            norm.__class__ = FoldableFrozenBatchNorm2d
            conv.__dict__["_norm"] = norm
    return sum(isinstance(conv, LayoutConv2d) and conv.norm is not None for conv, _ in pairs)
