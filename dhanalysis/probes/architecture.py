"""The conv-head's three building blocks as a table, read from the modules themselves (paper §4.1, Fig. 5).

Fig. 5 draws a residual block (a), a bottleneck (b) and a non-local block (c) with their channel counts, and §4.1
gives their sizes (1.06M, 2M). `describe_conv_head` reads the first block of each kind from a model's conv-head, so
the figure shows the widths the model was really built with; `dhanalysis.figures.architecture` draws it without
touching torch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch import nn

from dhanalysis.model.heads import Bottleneck, ConvHead, NonLocalBlock, ResidualBlock
from dhanalysis.model.params import layer_weights, paper_m
from dhanalysis.vocab import ARCHITECTURE_CSV

# block kind -> (class, layers in the order data flows through them)
BLOCKS = {
    "residual": (ResidualBlock, ("conv1", "conv2", "shortcut")),
    "bottleneck": (Bottleneck, ("conv1", "conv2", "conv3")),
    "non_local": (NonLocalBlock, ("theta", "phi", "g", "out")),
}
ARCHITECTURE_COLUMNS = ("block", "block_index", "layer", "type", "kernel", "in_channels", "out_channels", "groups",
                        "norm", "weights", "block_weights", "block_M", "nl_groups", "nl_mode", "branch", "source")
PAPER_WIDTH_SOURCE = "paper-width ConvHead()"


def find_conv_head(model_or_head: nn.Module | None) -> tuple[ConvHead, str, str]:
    """(conv-head, branch name, source) of a model, its RoI heads, a branch or a conv-head.

    With no conv-head to be found (or ``None``), the paper-width ``ConvHead()`` is built and the source says so.
    """
    if isinstance(model_or_head, ConvHead):
        return model_or_head, "", "conv-head"
    if model_or_head is not None and isinstance(getattr(model_or_head, "head", None), ConvHead):
        return model_or_head.head, "", "branch"
    roi_heads = getattr(model_or_head, "roi_heads", model_or_head)
    branches = getattr(roi_heads, "branches", None) or {}
    for name, branch in branches.items():
        if getattr(branch, "head_type", None) == "conv" and isinstance(branch.head, ConvHead):
            return branch.head, name, "model"
    why = "no model given" if model_or_head is None else "the model has no conv-head"
    return ConvHead(), "", f"{PAPER_WIDTH_SOURCE} ({why})"


def _conv_row(block: str, index: int, layer: str, module: nn.Module) -> dict:
    conv = module[0] if isinstance(module, nn.Sequential) else module
    norm = module[1] if isinstance(module, nn.Sequential) and len(module) > 1 else None
    kh, kw = conv.kernel_size
    return {"block": block, "block_index": index, "layer": layer, "type": type(conv).__name__,
            "kernel": f"{kh}x{kw}", "in_channels": conv.in_channels, "out_channels": conv.out_channels,
            "groups": conv.groups, "norm": type(norm).__name__ if norm is not None else "",
            "weights": layer_weights(conv)}


def describe_conv_head(model_or_head: nn.Module | None = None) -> pd.DataFrame:
    """One row per conv layer of the first residual block, bottleneck and non-local block of the conv-head.

    Columns (`ARCHITECTURE_COLUMNS`): block kind, its index in ``head.blocks``, layer name, layer type, kernel
    ("3x3"), in/out channels, conv groups, the norm layer after it, its weight count (no bias, no BN), the block's
    total weights and the same in the paper's unit (M = 2^20, `paper_m`); for the non-local block its affinity
    groups and mode; the branch name and where the head came from (``source``).
    """
    head, branch, source = find_conv_head(model_or_head)
    rows = []
    for kind, (cls, layers) in BLOCKS.items():
        index, block = next(((i, b) for i, b in enumerate(head.blocks) if isinstance(b, cls)), (None, None))
        if block is None:
            continue
        total = layer_weights(block)
        for layer in layers:
            row = _conv_row(kind, index, layer, getattr(block, layer))
            row.update(block_weights=total, block_M=paper_m(total), branch=branch, source=source,
                       nl_groups=getattr(block, "groups", None) if kind == "non_local" else None,
                       nl_mode=getattr(block, "mode", None) if kind == "non_local" else None)
            rows.append(row)
    table = pd.DataFrame(rows, columns=list(ARCHITECTURE_COLUMNS))
    return table.astype({"nl_groups": "Int64"})


def write_architecture(model: nn.Module | None, out_dir: str | Path) -> Path:
    """Write `describe_conv_head` of ``model`` to ``out_dir/architecture.csv`` (what Fig. 5 is drawn from)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ARCHITECTURE_CSV
    describe_conv_head(model).to_csv(path, index=False)
    return path
