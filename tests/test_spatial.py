"""Spatial correlation (§3.4): the fc reconstruction is exact and the cosine matrices match direct loops."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dhanalysis.probes.harness import image_context
from dhanalysis.probes.spatial import (SPATIAL_COLUMNS, SpatialTask, cell_cosine, fc_cell_outputs,
                                         fc_weight_correlation, spatial_branches, spatial_frame)
from dhanalysis.model import build_model

from helpers import tiny_config, two_images

C, S, D = 5, 7, 12


def test_fc_reconstruction_sums_to_fc6_output():
    torch.manual_seed(0)
    fc6 = nn.Linear(C * S * S, D).double()
    x = torch.randn(4, C, S, S, dtype=torch.float64)
    cells = fc_cell_outputs(x, fc6)
    assert cells.shape == (4, D, S, S)
    torch.testing.assert_close(cells.sum(dim=(2, 3)) + fc6.bias, fc6(x.flatten(1)), rtol=1e-12, atol=1e-12)


def test_fc_reconstruction_respects_the_flatten_order():
    """fc6's input index is c·S·S + y·S + x: a single active input cell lights only that output cell."""
    torch.manual_seed(1)
    fc6 = nn.Linear(C * S * S, D).double()
    c, y, x = 3, 2, 5
    inp = torch.zeros(1, C, S, S, dtype=torch.float64)
    inp[0, c, y, x] = 1.0
    cells = fc_cell_outputs(inp, fc6)[0]
    nonzero = (cells.abs().sum(0) > 0).nonzero().tolist()
    assert nonzero == [[y, x]]
    torch.testing.assert_close(cells[:, y, x], fc6.weight[:, c * S * S + y * S + x])


def loop_cosine(maps: torch.Tensor) -> torch.Tensor:
    n = maps.shape[0]
    vec = maps.reshape(n, maps.shape[1], -1)
    out = torch.zeros(n, S * S, S * S, dtype=maps.dtype)
    for k in range(n):
        for i in range(S * S):
            for j in range(S * S):
                a, b = vec[k, :, i], vec[k, :, j]
                out[k, i, j] = torch.dot(a, b) / (a.norm() * b.norm())
    return out


def test_cell_cosine_matches_a_loop():
    torch.manual_seed(2)
    maps = torch.randn(2, D, S, S, dtype=torch.float64)
    torch.testing.assert_close(cell_cosine(maps), loop_cosine(maps), rtol=1e-10, atol=1e-10)


def test_fc_weight_correlation_matches_a_loop():
    torch.manual_seed(3)
    fc6 = nn.Linear(C * S * S, D).double()
    w = fc6.weight.detach().reshape(D, C, S * S)
    ref = torch.zeros(S * S, S * S, dtype=torch.float64)
    for i in range(S * S):
        for j in range(S * S):
            ref[i, j] = F.cosine_similarity(w[:, :, i].flatten(), w[:, :, j].flatten(), dim=0)
    torch.testing.assert_close(fc_weight_correlation(fc6, C, S), ref, rtol=1e-10, atol=1e-10)


def test_spatial_task_over_ground_truth_rois():
    torch.manual_seed(0)
    model = build_model(tiny_config("double-head-ext")).eval()
    images, targets = two_images()
    task = SpatialTask(model, batch_size=1)  # one RoI per batch: the sums must not depend on batching
    state = task.new_state()
    direct = {"conv_output": 0, "conv_output_pre_relu": 0, "fc_output": 0}
    objects = 0
    for image, target in zip(images, targets):
        target = {**target, "image_id": 0, "iscrowd": torch.zeros(len(target["boxes"]), dtype=torch.long),
                  "area": torch.full((len(target["boxes"]),), 500.0)}
        with torch.inference_mode():
            ctx, _, _ = image_context(model, image, target, torch.device("cpu"))
            task.process(ctx, state)
            x = model.roi_heads.box_roi_pool(ctx.features, [ctx.boxes], [ctx.image_size])
            branches = model.roi_heads.branches
            direct["conv_output"] += cell_cosine(branches["conv"].head.feature_map(x)).double().sum(0)
            # before the last ReLU, by hand: the last block's sum of identity and expansion, not clamped at 0
            conv = branches["conv"].head
            h = conv.blocks[:-1](x)
            last = conv.blocks[-1]
            pre = h + last.conv3(torch.relu(last.conv2(torch.relu(last.conv1(h)))))
            assert torch.allclose(torch.relu(pre), conv.feature_map(x), atol=1e-6) and (pre < 0).any()
            direct["conv_output_pre_relu"] += cell_cosine(pre).double().sum(0)
            direct["fc_output"] += cell_cosine(fc_cell_outputs(x, branches["fc"].head.fc6)).double().sum(0)
        objects += len(ctx.boxes)
    result = task.result(state)
    assert set(result) == {"conv_output", "conv_output_pre_relu", "fc_output", "fc_weight"}
    assert state.counts["objects"] == objects == 3
    for k in ("conv_output", "conv_output_pre_relu", "fc_output"):
        torch.testing.assert_close(torch.as_tensor(result[k]), direct[k] / objects, rtol=1e-5, atol=1e-6)
        assert result[k].shape == (49, 49)
    frame = spatial_frame(result, "m")
    assert list(frame.columns) == list(SPATIAL_COLUMNS) and len(frame) == 4 * 49 * 49


def test_spatial_branches_pick_the_first_branch_of_each_head_type():
    model = build_model(tiny_config("double-fc"))
    assert spatial_branches(model) == {"fc": "fc_cls"}
