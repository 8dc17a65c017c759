"""All branches of a model's RoI heads in inference form, for scoring many boxes (the sliding-window path).

Each head, block and predictor carries its own inference form (``inference_form`` in `dhanalysis.model.heads`: folded
BatchNorm, matmuls over channels-last rows); this module only assembles them per branch, feeds each branch the pooled
RoIs it reads (the RoI itself or, for a conv-head with ``conv_roi_scale`` ≠ 1, the enlarged RoI) and regroups the
outputs by head type as ``DoubleHeadRoIHeads.head_outputs`` does. Outputs equal the modules' to float32 rounding
(tests/test_fast_path.py). Weights are copied when a `FastHeads` is built, so build it again after they change.
"""

from __future__ import annotations

import torch

from dhanalysis.vocab import HEAD_TYPES


class FastHeads:
    """All branches of a `DoubleHeadRoIHeads` in inference form, regrouped by head type like ``head_outputs``.

    ``dtype``: float32, or bfloat16 for matmuls on hardware with bf16 units (outputs are returned in float32).
    """

    @torch.no_grad()
    def __init__(self, roi_heads, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self.size = roi_heads.box_roi_pool.output_size[0]
        enlarged = roi_heads.enlarged_branches
        self.branches = [(branch.inference_form(dtype), name in enlarged)
                         for name, branch in roi_heads.branches.items()]

    @property
    def pooled_keys(self) -> set[str]:
        """Which pooled inputs the branches read: "plain" (the RoI) and/or "enlarged" (the conv-head's RoI × scale)."""
        return {"enlarged" if enlarged else "plain" for _, enlarged in self.branches}

    def flops_per_roi(self) -> int:
        """Matmul FLOPs (2·MACs) of every branch for one RoI: heads and predictors."""
        return sum(branch.flops_per_roi(self.size) for branch, _ in self.branches)

    def __call__(self, pooled: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """``pooled``: {"plain": (N, S·S, C), "enlarged": the same for the enlarged RoIs}, each key present when a
        branch reads it (`pooled_keys`) -> {head type: {"cls", "reg"}} float32."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for branch, enlarged in self.branches:
            rows = pooled["enlarged" if enlarged else "plain"]
            maps = rows.to(self.dtype).reshape(len(rows), self.size, self.size, -1)  # channels-last (N, S, S, C)
            for task, value in branch(maps).items():
                out.setdefault(branch.head_type, {})[task] = value.float()
        return {h: out[h] for h in HEAD_TYPES if h in out}


__all__ = ["FastHeads"]
