"""Inference-only forms of the heads, built from a trained model's modules at run time (the sliding-window path).

The training modules (`dhanalysis.model.heads`) work on NCHW RoI features ``(N, C, S, S)``. For scoring millions of
boxes the same arithmetic is cheaper as a chain of large matmuls over channels-last rows ``(N·S·S, C)``, which is what
the fast RoIAlign (`dhanalysis.model.gather_roi.pool_rows`) produces:

- **fc-head**: fc6's columns are reordered once from (c, y, x) to (y, x, c), so pooled rows flatten straight into it;
- **conv-head**: every eval-mode BatchNorm is folded into the conv before it (w·γ/σ, β − μ·γ/σ); a 1×1 conv is a
  matmul; a 3×3 conv runs on a channels-last view of the same rows (oneDNN's direct convolution measured twice as fast
  as im2col + matmul on CPU, BENCHMARKS.md); θ, φ and g of a non-local block share one matmul; a residual add rides
  on ``addmm``;
- **predictor**: classifier and box regressor are one matmul.

Nothing here changes the model: weights are copied (optionally cast to bf16) when a `FastHeads` is built, so build
it again after the model's weights change. Outputs equal the modules' to float32 rounding (tests/test_fast_path.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dhanalysis.model.heads import Bottleneck, ConvHead, FCHead, NonLocalBlock, ResidualBlock
from dhanalysis.model.variants import HEAD_TYPES


def fold_conv_bn(conv_bn: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight (Cout, kh, kw, Cin), bias (Cout,))`` of a ``conv_bn`` with its eval-mode BatchNorm folded in."""
    conv, bn = conv_bn[0], conv_bn[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight.permute(0, 2, 3, 1).contiguous(), bias


def conv_weight(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight (Cout, kh, kw, Cin), bias (Cout,))`` of a plain conv (zero bias when it has none)."""
    bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
    return conv.weight.permute(0, 2, 3, 1).contiguous(), bias


class Linear:
    """A matmul with bias on rows ``(M, K) -> (M, N)``; weight stored as ``(K, N)`` for ``addmm``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype):
        self.weight_t = weight.reshape(len(weight), -1).t().to(dtype).contiguous()
        self.bias = bias.to(dtype).contiguous()

    @property
    def flops_per_row(self) -> int:
        return 2 * self.weight_t.shape[0] * self.weight_t.shape[1]

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if residual is None:
            return torch.addmm(self.bias, x, self.weight_t)
        out = torch.addmm(residual, x, self.weight_t)
        return out.add_(self.bias)


class Conv3x3:
    """A 3×3, padding-1 conv with bias on RoI rows ``(N·S·S, Cin) -> (N·S·S, Cout)`` via a channels-last view."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, size: int, dtype: torch.dtype):
        # weight arrives as (Cout, 3, 3, Cin) from `fold_conv_bn`
        self.weight = weight.permute(0, 3, 1, 2).to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = bias.to(dtype).contiguous()
        self.size = size

    @property
    def flops_per_row(self) -> int:
        out_ch, in_ch = self.weight.shape[:2]
        return 2 * 9 * in_ch * out_ch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.size
        nhwc = x.reshape(-1, s, s, x.shape[1])
        y = F.conv2d(nhwc.permute(0, 3, 1, 2), self.weight, self.bias, padding=1)
        return y.permute(0, 2, 3, 1).reshape(len(x), -1)


class FastFCHead:
    """`FCHead` on pooled rows ``(N, S·S, C)``: fc6 with its input columns reordered to (y, x, c), then fc7."""

    def __init__(self, head: FCHead, dtype: torch.dtype):
        c, s = head.in_channels, head.roi_size
        w6 = head.fc6.weight.reshape(-1, c, s, s).permute(0, 2, 3, 1)
        self.fc6 = Linear(w6, head.fc6.bias, dtype)
        self.fc7 = Linear(head.fc7.weight, head.fc7.bias, dtype)

    def flops_per_roi(self) -> int:
        return self.fc6.flops_per_row + self.fc7.flops_per_row

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.fc6(rows.reshape(len(rows), -1)).relu_()
        return self.fc7(x).relu_()


class FastConvHead:
    """`ConvHead` on pooled rows ``(N, S·S, C)`` with folded BatchNorm; returns the pooled ``(N, dim)`` vector."""

    def __init__(self, head: ConvHead, size: int, dtype: torch.dtype):
        self.size = size
        self.steps: list[tuple[str, dict]] = []
        for block in head.blocks:
            if isinstance(block, ResidualBlock):
                self.steps.append(("residual", {"conv1": Conv3x3(*fold_conv_bn(block.conv1), size, dtype),
                                                "conv2": Linear(*fold_conv_bn(block.conv2), dtype),
                                                "shortcut": Linear(*fold_conv_bn(block.shortcut), dtype)}))
            elif isinstance(block, Bottleneck):
                self.steps.append(("bottleneck", {"conv1": Linear(*fold_conv_bn(block.conv1), dtype),
                                                  "conv2": Conv3x3(*fold_conv_bn(block.conv2), size, dtype),
                                                  "conv3": Linear(*fold_conv_bn(block.conv3), dtype)}))
            elif isinstance(block, NonLocalBlock):
                parts = [conv_weight(getattr(block, k)) for k in ("theta", "phi", "g")]
                qkv = Linear(torch.cat([w for w, _ in parts]), torch.cat([b for _, b in parts]), dtype)
                self.steps.append(("non_local", {"qkv": qkv, "out": Linear(*fold_conv_bn(block.out), dtype),
                                                 "groups": block.groups, "mode": block.mode}))
            else:
                raise TypeError(f"no fast form for conv-head block {type(block).__name__}")

    def flops_per_roi(self) -> int:
        """Matmul FLOPs (2·MACs) of one RoI, counted from the layer shapes as the modules compute them."""
        pos = self.size * self.size
        total = 0
        for kind, p in self.steps:
            for name, layer in p.items():
                if isinstance(layer, (Linear, Conv3x3)):
                    total += pos * layer.flops_per_row
            if kind == "non_local":
                inner = p["qkv"].weight_t.shape[1] // 3
                total += 2 * (2 * pos * pos * inner)  # θφᵀ and (θφᵀ)g over all groups
        return total

    def _non_local(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        pos, groups = self.size * self.size, p["groups"]
        n = len(x) // pos
        qkv = p["qkv"](x).reshape(n, pos, 3, groups, -1)  # channel j of θ/φ/g is group j // (inner / groups)
        theta, phi, g = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (N, groups, pos, d)
        affinity = theta @ phi.transpose(2, 3)
        affinity = affinity.softmax(-1) if p["mode"] == "gaussian" else affinity.div_(pos)
        y = (affinity @ g).transpose(1, 2).reshape(n * pos, -1)
        return p["out"](y, residual=x).relu_()

    def feature_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The head's output map as rows ``(N·S·S, dim)`` (what `ConvHead.feature_map` gives, channels-last)."""
        x = rows.reshape(-1, rows.shape[-1])
        for kind, p in self.steps:
            if kind == "residual":
                h = p["conv1"](x).relu_()
                x = p["conv2"](h, residual=p["shortcut"](x)).relu_()
            elif kind == "bottleneck":
                h = p["conv1"](x).relu_()
                h = p["conv2"](h).relu_()
                x = p["conv3"](h, residual=x).relu_()
            else:
                x = self._non_local(x, p)
        return x

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.feature_rows(rows)
        return x.reshape(len(rows), self.size * self.size, -1).mean(dim=1)


class FastHeads:
    """All branches of a `DoubleHeadRoIHeads` in inference form, regrouped by head type like ``head_outputs``.

    ``dtype``: float32, or bfloat16 for matmuls on hardware with bf16 units (outputs are returned in float32).
    """

    @torch.no_grad()
    def __init__(self, roi_heads, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self.branches = []
        size = roi_heads.box_roi_pool.output_size[0]
        for name, branch in roi_heads.branches.items():
            if isinstance(branch.head, FCHead):
                head = FastFCHead(branch.head, dtype)
            elif isinstance(branch.head, ConvHead):
                head = FastConvHead(branch.head, size, dtype)
            else:
                raise TypeError(f"no fast form for head {type(branch.head).__name__}")
            pred = branch.predictor
            layers = [(task, lin) for task, lin in (("cls", pred.cls_score), ("reg", pred.bbox_pred))
                      if lin is not None]
            joint = Linear(torch.cat([lin.weight for _, lin in layers]), torch.cat([lin.bias for _, lin in layers]),
                           dtype)
            splits = [(task, lin.out_features) for task, lin in layers]
            enlarged = name in roi_heads.enlarged_branches
            self.branches.append((branch.head_type, head, joint, splits, enlarged))

    @property
    def pooled_keys(self) -> set[str]:
        """Which pooled inputs the branches read: "plain" (the RoI) and/or "enlarged" (the conv-head's RoI × scale)."""
        return {"enlarged" if enlarged else "plain" for *_, enlarged in self.branches}

    def flops_per_roi(self) -> int:
        """Matmul FLOPs (2·MACs) of every branch for one RoI: heads and predictors."""
        return sum(head.flops_per_roi() + joint.flops_per_row for _, head, joint, _, _ in self.branches)

    def __call__(self, pooled: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """``pooled``: {"plain": (N, S·S, C), "enlarged": the same for the enlarged RoIs}, each key present when a
        branch reads it (`pooled_keys`) -> {head type: {"cls", "reg"}} float32."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for head_type, head, joint, splits, enlarged in self.branches:
            rows = pooled["enlarged" if enlarged else "plain"]
            y = joint(head(rows.to(self.dtype))).float()
            for (task, width), part in zip(splits, y.split([w for _, w in splits], dim=1)):
                out.setdefault(head_type, {})[task] = part
        return {h: out[h] for h in HEAD_TYPES if h in out}


__all__ = ["fold_conv_bn", "FastFCHead", "FastConvHead", "FastHeads"]
