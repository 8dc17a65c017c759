"""Parameter counts the way the paper reports them (§4.1, Table 2).

The paper's "M" is 2^20 and counts the weights of conv and fc layers only (no biases, no BatchNorm), rounded half up
to two decimals: the fc-head is 13.25M, a residual block 1.06M, a non-local block 2.00M.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
from torch import nn

from dhanalysis.config import HeadConfig
from dhanalysis.model.heads import ConvHead, FCHead

MEGA = 2**20

# Table 2's parameter column and §4.1's fc-head size, as printed in the paper: (K, non-local) -> "M"
PAPER_TABLE2 = {
    (1, False): "1.06",
    (2, False): "2.13",
    (3, False): "3.19",
    (4, False): "4.25",
    (5, False): "5.31",
    (6, False): "6.38",
    (7, False): "7.44",
    (3, True): "4.13",
    (5, True): "7.19",
    (7, True): "10.25",
}
PAPER_FC_HEAD = "13.25"


def paper_m(count: int) -> str:
    """A weight count in the paper's unit: M = 2^20, two decimals, half rounded up (2.125 -> 2.13)."""
    return str((Decimal(count) / Decimal(MEGA)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def layer_weights(module: nn.Module) -> int:
    """Number of conv and fc weights in ``module`` (biases and normalisation layers excluded)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def all_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_table(model: nn.Module, depth: int = 3) -> pd.DataFrame:
    """One row per module down to ``depth`` dotted levels: conv/fc weights (exact and in M) and all parameters."""
    rows = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if level > depth or not any(True for _ in module.parameters()):
            continue
        weights = layer_weights(module)
        rows.append(
            {
                "module": name or "(total)",
                "type": type(module).__name__,
                "weights": weights,
                "weights_M": paper_m(weights),
                "all_params": all_params(module),
                "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
            }
        )
    return pd.DataFrame(rows)


def branch_table(model: nn.Module) -> pd.DataFrame:
    """One row per branch of a model's RoI heads: its head's and predictor's conv/fc weights, and the head's weights
    over the conv-heads' (``fc_over_conv``, on fc-head rows of a model that has both): the capacity ratio the paper's
    heads have (13.25M ÷ 5.31M = 2.5 for K = 5 without non-local blocks, Table 2)."""
    rows = []
    for name, branch in model.roi_heads.branches.items():
        blocks = getattr(branch.head, "blocks", None)
        structure = ("2 fc" if branch.head_type == "fc" else
                     " + ".join(f"{n} {t}" for t, n in _block_counts(blocks).items()) if blocks is not None else "")
        head = layer_weights(branch.head)
        rows.append({"branch": name, "head": branch.head_type, "structure": structure, "head_weights": head,
                     "head_M": paper_m(head), "predictor_weights": layer_weights(branch.predictor)})
    df = pd.DataFrame(rows)
    conv = df.loc[df["head"] == "conv", "head_weights"]
    df["fc_over_conv"] = [w / conv.max() if h == "fc" and len(conv) else float("nan")
                          for h, w in zip(df["head"], df["head_weights"])]
    return df


def _block_counts(blocks: nn.Module) -> dict[str, int]:
    counts: dict[str, int] = {}
    for block in blocks:
        counts[type(block).__name__] = counts.get(type(block).__name__, 0) + 1
    return counts


def table2(head: HeadConfig | None = None, in_channels: int = 256) -> pd.DataFrame:
    """Table 2's parameter column (and the fc-head size) computed from freshly built heads, beside the paper's."""
    head = head or HeadConfig()
    rows = []
    for (k, non_local), paper in PAPER_TABLE2.items():
        conv = ConvHead(
            in_channels,
            head.conv_dim,
            head.bottleneck_dim,
            k,
            non_local,
            head.non_local_dim,
            head.non_local_groups,
        )
        count = layer_weights(conv)
        rows.append({"head": "conv", "K": k, "non_local": non_local, "weights": count, "ours_M": paper_m(count),
                     "paper_M": paper})
    fc = layer_weights(FCHead(in_channels, head.roi_size, head.fc_dim))
    rows.append({"head": "fc", "K": 0, "non_local": False, "weights": fc, "ours_M": paper_m(fc), "paper_M": PAPER_FC_HEAD})
    df = pd.DataFrame(rows)
    df["match"] = df["ours_M"] == df["paper_M"]
    return df
