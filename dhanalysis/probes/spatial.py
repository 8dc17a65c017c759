"""Spatial correlation of head outputs and of fc6's weights (paper §3.4, Fig. 4).

Three S×S-cell maps (S = 7: 49 cells, cell index = y·S + x), each summarised by the cosine similarity between every
pair of cells, a (S², S²) matrix:

- ``conv_output``: the conv-head's output map before average pooling, ``(D, S, S)`` per RoI; averaged over objects;
- ``fc_output``: the fc-head's *reconstructed* output map. fc6 is ``y = W·vec(x) + b`` with ``W`` of shape
  (D, C·S·S) and the input flattened channel-major (index ``c·S·S + y·S + x``). Splitting W by spatial cell gives
  S² matrices ``W_p`` of shape (D, C), and cell p's output is ``W_p · x[:, p]``: its C-d input through its own
  matrix. The S² cell outputs add up, with the bias, to fc6's pre-activation output (`fc_cell_outputs`; the bias
  belongs to no cell and the ReLU comes after the sum, so neither is in the map). Averaged over objects;
- ``fc_weight``: fc6's weights themselves, cell against cell: the cosine between the flattened ``W_p`` of two cells;
- ``conv_output_pre_relu``: the conv-head's map before its last ReLU (`conv_map_before_relu`). The paper's
  ``conv_output`` is taken after it, where every value is ≥ 0 and so every cosine too, while the fc-head's cell
  outputs are taken before fc6's ReLU and can point anywhere: comparing ``fc_output`` with this map instead puts
  both heads at the same point, the control for how much of Fig. 4's gap that asymmetry makes.

The RoIs are the ground-truth boxes (crowd boxes left out), pooled exactly as the detector pools them (a
conv-head pools its enlarged RoI when ``model.head.conv_roi_scale`` ≠ 1). A variant with two heads
of one type (Double-FC, Double-Conv) is read through its first, classification-focused branch. A cell whose vector
is all zero has cosine 0 with every cell.
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dhanalysis.probes.harness import (ImageContext, ModelRun, RunOptions, TaskState, Written, run_analysis,
                                        write_summary)
from dhanalysis.probes.scoring import AdaptiveBatch
from dhanalysis.errors import DHError
from dhanalysis.folders import atomic_write_bytes, write_table
from dhanalysis.model.conventions import to_convention
from dhanalysis.results import RESULTS, SPATIAL_COLUMNS, spatial_frame  # noqa: F401 - SPATIAL_COLUMNS as before
from dhanalysis.vocab import SPATIAL_CORR_CSV, SPATIAL_CORR_NPZ

MAPS = ("conv_output", "conv_output_pre_relu", "fc_output", "fc_weight")


def cell_cosine(maps: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every pair of cells: maps ``(N, D, S, S)`` -> ``(N, S·S, S·S)``."""
    vectors = F.normalize(maps.flatten(2).transpose(1, 2), dim=-1)  # (N, S·S, D)
    return vectors @ vectors.transpose(1, 2)


def fc_cell_weights(fc6: nn.Linear, in_channels: int, roi_size: int) -> torch.Tensor:
    """fc6's weight ``(D, C·S·S)`` split by cell: ``(S·S, D, C)``, the matrix ``W_p`` of each cell p = y·S + x."""
    d = fc6.weight.shape[0]
    return fc6.weight.reshape(d, in_channels, roi_size * roi_size).permute(2, 0, 1)


def fc_cell_outputs(x: torch.Tensor, fc6: nn.Linear) -> torch.Tensor:
    """The fc-head's reconstructed output map: RoI features ``(N, C, S, S)`` -> ``(N, D, S, S)``.

    Cell p's output is ``W_p · x[:, :, p]``; summing over cells and adding ``fc6.bias`` gives ``fc6(x.flatten(1))``.
    """
    n, c, s, _ = x.shape
    weights = fc_cell_weights(fc6, c, s)  # (P, D, C)
    out = torch.einsum("ncp,pdc->ndp", x.flatten(2), weights)
    return out.reshape(n, -1, s, s)


def fc_weight_correlation(fc6: nn.Linear, in_channels: int, roi_size: int) -> torch.Tensor:
    """Cosine similarity ``(S·S, S·S)`` between the flattened per-cell matrices ``W_p`` of fc6 (Fig. 4 right)."""
    flat = F.normalize(fc_cell_weights(fc6, in_channels, roi_size).flatten(1).double(), dim=-1)
    return flat @ flat.T


def conv_map_before_relu(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The conv-head's output map before the ReLU that ends its last block: ``(N, C, S, S)`` -> ``(N, D, S, S)``.

    The last block is a bottleneck (x + conv3(...)) or, for K = 1, the residual block (conv2(...) + shortcut(x)).
    """
    from dhanalysis.model.heads import Bottleneck, ResidualBlock

    *first, last = head.blocks
    for block in first:
        x = block(x)
    if isinstance(last, Bottleneck):
        return x + last.conv3(F.relu(last.conv2(F.relu(last.conv1(x)))))
    if isinstance(last, ResidualBlock):
        return last.conv2(F.relu(last.conv1(x))) + last.shortcut(x)
    raise DHError(f"the conv-head ends in a {type(last).__name__}; its map before the last ReLU is not defined")


def spatial_branches(model) -> dict[str, str]:
    """{"fc": branch name, "conv": branch name}: the first branch of each head type the model has."""
    found: dict[str, str] = {}
    for name, branch in model.roi_heads.branches.items():
        found.setdefault(branch.head_type, name)
    return found


class SpatialTask:
    """Sum the per-object cosine matrices of the conv-head's and the fc-head's output maps over ground-truth RoIs."""

    name = "spatial"
    unit = "objects"

    def __init__(self, model, batch_size: int):
        self.model = model
        self.device = next(model.parameters()).device
        self.branches = spatial_branches(model)
        self.roi_size = model.config.model.head.roi_size
        self.batcher = AdaptiveBatch(batch_size)

    @property
    def maps(self) -> list[str]:
        conv = ["conv_output", "conv_output_pre_relu"] if "conv" in self.branches else []
        return conv + (["fc_output"] if "fc" in self.branches else [])

    def new_state(self) -> TaskState:
        cells = self.roi_size * self.roi_size
        sums = {m: torch.zeros(cells, cells, dtype=torch.float64, device=self.device) for m in self.maps}
        return TaskState(sums=sums, counts={"objects": 0})

    def process(self, ctx: ImageContext, state: TaskState) -> int:
        roi_heads = self.model.roi_heads

        def run(start: int, stop: int) -> dict[str, torch.Tensor]:
            boxes = to_convention(ctx.boxes[start:stop], roi_heads.box_convention)  # the model's own frame
            pooled = roi_heads.pool(ctx.features, [boxes], [ctx.image_size])
            out = {}
            for head, name in self.branches.items():
                branch = roi_heads.branches[name]
                x = roi_heads.branch_input(pooled, name)
                if head == "conv":
                    out["conv_output"] = cell_cosine(branch.head.feature_map(x).float()).double().sum(0)
                    out["conv_output_pre_relu"] = cell_cosine(conv_map_before_relu(branch.head, x).float()
                                                              ).double().sum(0)
                else:
                    out["fc_output"] = cell_cosine(fc_cell_outputs(x, branch.head.fc6).float()).double().sum(0)
            return out

        for part in self.batcher.map(run, len(ctx.boxes)):
            for k, v in part.items():
                state.sums[k] += v
        state.count("objects", len(ctx.boxes))
        return len(ctx.boxes)

    def result(self, state: TaskState) -> dict[str, np.ndarray]:
        """The averaged matrices (``(S², S²)`` float64 arrays) plus ``fc_weight`` when the model has an fc-head."""
        objects = max(state.counts.get("objects", 0), 1)
        out = {k: (state.sums[k] / objects).cpu().numpy() for k in self.maps if k in state.sums}
        if "fc" in self.branches:
            head = self.model.roi_heads.branches[self.branches["fc"]].head
            with torch.no_grad():
                out["fc_weight"] = fc_weight_correlation(head.fc6, head.in_channels, head.roi_size).cpu().numpy()
        return {k: out[k] for k in MAPS if k in out}


# ------------------------------------------------------------------------------------------------ one model
OUTPUTS = RESULTS["spatial-corr"]
DEFAULT_BATCH_SIZE = 256  # ground-truth RoIs per head forward; halved on out-of-memory


def compute_spatial_corr(run: ModelRun, *, batch_size: int = DEFAULT_BATCH_SIZE, options: RunOptions = RunOptions(),
                         overwrite: bool = False) -> Written | None:
    """The spatial correlation of one loaded model, written to ``spatial_corr.npz`` / ``.csv`` and
    ``spatial_summary.json``; rank 0 returns them (the table is `spatial_frame`'s), other ranks None."""
    started = time.perf_counter()
    key = {"analysis": OUTPUTS.analysis, "config": run.config, **run.data_key}
    task = SpatialTask(run.model, batch_size)
    merged = run_analysis(run, OUTPUTS, [task], key, options, overwrite)
    if merged is None:
        return None
    state = merged.states.get(task.name) or task.new_state()
    maps = task.result(state)
    buffer = io.BytesIO()
    np.savez(buffer, **maps)
    atomic_write_bytes(run.folder / SPATIAL_CORR_NPZ, buffer.getvalue())
    table = spatial_frame(maps, run.name)
    written = [run.folder / SPATIAL_CORR_NPZ, *write_table(table, run.folder / SPATIAL_CORR_CSV)]
    summary = write_summary(
        run, OUTPUTS, key, merged, started,
        maps=list(maps),
        branches=task.branches,
        objects=int(state.counts.get("objects", 0)),
        mean_off_diagonal={k: float((v.sum() - np.trace(v)) / (v.size - len(v))) for k, v in maps.items()},
    )
    return Written(table, summary, [*written, run.folder / OUTPUTS.summary])
