"""The two head structures of the paper and their predictors (§4.1, Fig. 1, Fig. 5).

Shapes: every head takes pooled RoI features ``(N, C, S, S)`` (C = FPN channels, S = RoI size, 256×7×7 in the paper)
and returns a vector ``(N, D)`` (D = 1024 in the paper). Module names are stable (``fc6``, ``fc7``, ``blocks.0``)
because the analyses look weights up by them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def conv_bn(in_ch: int, out_ch: int, kernel: int, bias: bool = False) -> nn.Sequential:
    """A conv followed by BatchNorm: every conv of the conv-head is (§5.1). Bias-free except where the authors'
    code has one (the non-local block's output conv)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias), nn.BatchNorm2d(out_ch))


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
    ):
        super().__init__()
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


class Predictor(nn.Module):
    """The last layers of one branch: a (C+1)-way classifier and/or class-specific box deltas ``(N, 4·(C+1))``.

    A task whose loss weight is 0 gets no layer (``None``).
    """

    def __init__(self, in_dim: int, num_classes: int, cls: bool, reg: bool):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes) if cls else None
        self.bbox_pred = nn.Linear(in_dim, num_classes * 4) if reg else None
        if self.cls_score is not None:
            nn.init.normal_(self.cls_score.weight, std=0.01)
            nn.init.zeros_(self.cls_score.bias)
        if self.bbox_pred is not None:
            nn.init.normal_(self.bbox_pred.weight, std=0.001)
            nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits = self.cls_score(x) if self.cls_score is not None else None
        deltas = self.bbox_pred(x) if self.bbox_pred is not None else None
        return logits, deltas


class Branch(nn.Module):
    """One head and its predictor: ``branches[name].head`` and ``branches[name].predictor``."""

    def __init__(self, head_type: str, head: nn.Module, predictor: Predictor):
        super().__init__()
        self.head_type = head_type
        self.head = head
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.predictor(self.head(x))
