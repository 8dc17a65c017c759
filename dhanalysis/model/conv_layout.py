"""How each convolution of a channels-last model computes: a rule of the CPU kind, the call's shape and whether a
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
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

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


class LayoutConv2d(nn.Conv2d):
    """`nn.Conv2d` that follows the module's rule per call; the same parameters, state-dict keys and values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = strictly_channels_last(x)
        backward = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        positions = x.shape[-2] * x.shape[-1] // (self.stride[0] * self.stride[1])
        if not (channels_last and self.padding_mode == "zeros"
                and trains_in_nchw(x.device.type, cpu_capability(), self.kernel_size, positions, backward)):
            return super().forward(x)
        y = F.conv2d(x.contiguous(), self.weight.contiguous(), self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        return y.contiguous(memory_format=torch.channels_last)


def apply_conv_rules(model: nn.Module) -> int:
    """Make every plain 3×3-or-larger `nn.Conv2d` of ``model`` a `LayoutConv2d` (in place: modules keep their
    parameters, so an optimizer built before still holds them); returns how many. 1×1 convolutions, which the rule
    never moves, stay as built."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and module.kernel_size[0] * module.kernel_size[1] > 1:
            module.__class__ = LayoutConv2d
            count += 1
    return count
