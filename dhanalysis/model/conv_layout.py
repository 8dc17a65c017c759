"""Which memory layout each convolution of a channels-last model trains in.

A channels-last model (`build.conv_memory_format`) runs every convolution in oneDNN's channels-last kernels: faster
in inference on every CPU kind measured, and for the 1×1 convolutions and the conv-head's 7 × 7 maps in training too.
On a CPU whose best kernels are AVX2 (no AVX-512, no AMX) one thing goes the other way: the *backward* of a 3×3
convolution over a large map. Measured on a 2-core AMD EPYC Zen 3 (BENCHMARKS.md, "on a real AVX2-only EPYC"), forward
+ backward, channels-last ÷ NCHW: 256 → 256 at 2 × 128² 1.41, at 2 × 64² 1.20, 64 → 64 at 2 × 128² 1.24, while at
32² and below the two are within 7 % and every 1×1 convolution is 0.47-0.91. Those large 3×3 convolutions are the
FPN's output convs and the RPN's shared conv at P2 and P3, the most expensive layers of a training step after the
conv-head.

So a 3×3 (or larger) convolution that will run backward over a map of at least 64² positions per image, on such a
CPU, computes in NCHW and hands its output back in channels-last, so that every other layer keeps its own kernels.
The choice is a rule of the CPU's kind and the call's shape, never a timing: every process of a run, and a resumed
run, computes the same arithmetic. Inference, GPUs and AVX-512 / AMX CPUs are untouched.
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


class LargeMapConv2d(nn.Conv2d):
    """`nn.Conv2d` that follows `trains_in_nchw` per call; the same parameters, state-dict keys and values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = (x.dim() == 4 and not x.is_contiguous()
                         and x.is_contiguous(memory_format=torch.channels_last))
        backward = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        positions = x.shape[-2] * x.shape[-1] // (self.stride[0] * self.stride[1])
        if not (channels_last and self.padding_mode == "zeros"
                and trains_in_nchw(x.device.type, cpu_capability(), self.kernel_size, positions, backward)):
            return super().forward(x)
        y = F.conv2d(x.contiguous(), self.weight.contiguous(), self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        return y.contiguous(memory_format=torch.channels_last)


def train_large_maps_in_nchw(model: nn.Module) -> int:
    """Make every plain 3×3-or-larger `nn.Conv2d` of ``model`` a `LargeMapConv2d` (in place: the module keeps its
    parameters, so an optimizer built before still holds them); returns how many. 1×1 convolutions stay as built."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and module.kernel_size[0] * module.kernel_size[1] > 1:
            module.__class__ = LargeMapConv2d
            count += 1
    return count
