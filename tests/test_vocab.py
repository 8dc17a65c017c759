"""The shared names of `dhanalysis.vocab`: importable without torch, and true of what the model builds and of COCO."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from fnmatch import fnmatch

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dhanalysis.vocab import (DIFFICULTY_GROUPS, FUSION_MODES, HEAD_TYPES, INFERENCE_MODES, LARGE_MIN_AREA, METRICS,
                              SIZE_GROUPS, SMALL_MAX_AREA, TASKS, VARIANTS, detections_file, table_files)

from helpers import tiny_config


def test_vocab_and_everything_that_reads_tables_import_without_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "import dhanalysis.figures, dhanalysis.vocab, dhanalysis.model.variants, dhanalysis.metrics.groups\n"
        "for m in pkgutil.iter_modules(dhanalysis.figures.__path__, 'dhanalysis.figures.'):\n"
        "    importlib.import_module(m.name)\n"
        "from dhanalysis.model import VARIANTS, get_variant\n"
        "sys.exit('torch' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "a torch-free module imported torch"


# Every inference mode, written from the paper (Table 3, Fig. 8): name -> (whose classifiers score, whose regressor
# places the box, how two classifiers' scores combine), and the other names each answers to
PAPER_MODES = {
    "conv": (("conv",), "conv", None),
    "fc": (("fc",), "fc", None),
    "fc-cls+conv-reg": (("fc",), "conv", None),
    "conv-cls+fc-reg": (("conv",), "fc", None),
    "max": (("fc", "conv"), "conv", "max"),
    "average": (("fc", "conv"), "conv", "average"),
    "complementary": (("fc", "conv"), "conv", "complementary"),
}
PAPER_ALIASES = {"none": "fc-cls+conv-reg", "conv-cls+conv-reg": "conv", "fc-cls+fc-reg": "fc",
                 "max-cls+conv-reg": "max", "average-cls+conv-reg": "average",
                 "complementary-cls+conv-reg": "complementary"}


def test_every_mode_name_resolves_to_the_papers_row():
    from dhanalysis.errors import DHError
    from dhanalysis.model.variants import parse_mode

    assert set(INFERENCE_MODES) == set(PAPER_MODES)
    for name, (cls, reg, fusion) in {**PAPER_MODES, **{a: PAPER_MODES[m] for a, m in PAPER_ALIASES.items()}}.items():
        m = parse_mode(name)
        assert (m.cls, m.reg, m.fusion) == (cls, reg, fusion), name
    with pytest.raises(DHError, match="complementary"):  # the error lists the table's modes
        parse_mode("no-such-mode")
    # Table 3's rows, in the paper's order: no fusion (fc-head classifies, conv-head regresses), max, average,
    # complementary, each with the conv-head's boxes
    assert FUSION_MODES == ("fc-cls+conv-reg", "max", "average", "complementary")


def test_each_mode_detects_with_the_scores_and_boxes_the_paper_says():
    """What a mode's row does, through the RoI heads: the scores are the named head's probabilities (or the two
    heads' fused by the named rule: Eq. 4 for complementary) and the deltas the named head's, against float64."""
    import torch

    from dhanalysis.model import build_model

    g = torch.Generator().manual_seed(0)
    heads = {h: {"cls": torch.randn(6, 4, generator=g) * 2, "reg": torch.randn(6, 16, generator=g)}
             for h in ("fc", "conv")}
    p = {h: np.exp(v["cls"].double().numpy()) / np.exp(v["cls"].double().numpy()).sum(1, keepdims=True)
         for h, v in heads.items()}
    expected_scores = {
        "conv": p["conv"], "fc": p["fc"], "fc-cls+conv-reg": p["fc"], "conv-cls+fc-reg": p["conv"],
        "max": np.maximum(p["fc"], p["conv"]), "average": (p["fc"] + p["conv"]) / 2,
        "complementary": 1 - (1 - p["fc"]) * (1 - p["conv"]),
    }
    expected_boxes = {"conv": "conv", "fc": "fc", "fc-cls+conv-reg": "conv", "conv-cls+fc-reg": "fc", "max": "conv",
                      "average": "conv", "complementary": "conv"}
    roi_heads = build_model(tiny_config("double-head-ext")).roi_heads
    assert set(expected_scores) == set(INFERENCE_MODES)
    for name in (*INFERENCE_MODES, *PAPER_ALIASES):
        scores, deltas = roi_heads.mode_scores_and_deltas(heads, name)
        mode = PAPER_ALIASES.get(name, name)
        np.testing.assert_allclose(scores.double().numpy(), expected_scores[mode], rtol=0, atol=1e-6, err_msg=name)
        assert torch.equal(deltas, heads[expected_boxes[mode]]["reg"]), name


def test_variant_table_is_well_formed():
    from dhanalysis.model.variants import parse_mode

    for name, v in VARIANTS.items():
        assert v.name == name and v.label
        assert len({b.name for b in v.branches}) == len(v.branches), f"{name}: two branches share a module name"
        assert all(b.head in HEAD_TYPES and b.focus in (*TASKS, None) for b in v.branches), name
        parse_mode(v.default_mode)  # raises for an unknown mode
    assert len({v.label for v in VARIANTS.values()}) == len(VARIANTS)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_builds_the_heads_and_tasks_it_names(variant):
    from dhanalysis.model import build_model

    v = VARIANTS[variant]
    preset = tiny_config(variant).model.loss  # the variant's shipped config carries its default λ
    assert (preset.lambda_fc, preset.lambda_conv) == (v.lambda_fc, v.lambda_conv)

    # at λ = 1 a branch has a predictor for exactly the tasks it focuses on (Fig. 1, Table 1)
    model = build_model(tiny_config(variant, "model.loss.lambda_fc=1.0", "model.loss.lambda_conv=1.0"))
    branches = model.roi_heads.branches
    assert {name: b.head_type for name, b in branches.items()} == {b.name: b.head for b in v.branches}
    assert tuple(h for h in HEAD_TYPES if any(b.head_type == h for b in branches.values())) == v.head_types
    built = {(b.head_type, task) for b in branches.values() for task, layer in
             (("cls", b.predictor.cls_score), ("reg", b.predictor.bbox_pred)) if layer is not None}
    assert built == set(v.focused_tasks)


def _cocoeval_group(area: float, params) -> str:
    """The size group COCOeval counts ``area`` in; on a shared bound (COCOeval's ranges are closed) the larger one."""
    hits = [label for label, (lo, hi) in zip(params.areaRngLbl, params.areaRng) if label != "all" and lo <= area <= hi]
    return hits[-1]


def test_size_groups_and_thresholds_are_cocoevals():
    from dhanalysis.metrics.groups import size_index
    from dhanalysis.data import synth
    from dhanalysis.data.coco import size_group

    params = COCOeval(iouType="bbox").params
    assert tuple(params.areaRngLbl) == ("all", *SIZE_GROUPS)
    ranges = dict(zip(params.areaRngLbl, params.areaRng))
    assert ranges["small"][1] == SMALL_MAX_AREA and ranges["large"][0] == LARGE_MIN_AREA
    assert ranges["medium"] == [SMALL_MAX_AREA, LARGE_MIN_AREA]
    assert (synth.SMALL_MAX_SIDE**2, synth.LARGE_MIN_SIDE**2) == (SMALL_MAX_AREA, LARGE_MIN_AREA)

    areas = [0.0, 1.0, 1023.5, 1024.0, 1024.5, 5000.0, 9215.5, 9216.0, 9216.5, 1e6]
    expected = [_cocoeval_group(a, params) for a in areas]
    assert [size_group(a) for a in areas] == expected
    assert [size_group(np.float32(a)) for a in areas] == expected  # numpy scalars, as read from arrays
    assert [SIZE_GROUPS[i] for i in size_index(np.array(areas))] == expected
    # the results-file metrics group and match by the same rule: detections.csv's size column, coco_match's ranges
    from dhanalysis.metrics import coco_match, detections

    assert list(detections._size_group(np.array(areas))) == expected
    assert coco_match.AREA_LABELS == tuple(params.areaRngLbl)
    assert coco_match.AREA_RANGES == tuple(tuple(float(v) for v in r) for r in params.areaRng)
    assert len(set(DIFFICULTY_GROUPS)) == 3


def test_metrics_are_cocoeval_stats_in_order():
    """Each name of METRICS describes the COCOeval.stats entry at its index, as COCOeval's summary prints it."""
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 200, "height": 200}], "categories": [{"id": 1, "name": "a"}],
                  "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40], "area": 2000,
                                   "iscrowd": 0}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40], "score": 0.9}])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.summarize()
    lines = out.getvalue().splitlines()
    wanted_iou = {"AP": "0.50:0.95", "AP50": "0.50", "AP75": "0.75"}
    wanted_area = {"APs": "small", "APm": "medium", "APl": "large"}
    for i, name in enumerate(METRICS):
        match = re.search(r"Average Precision\s+\(AP\) @\[ IoU=(\S+)\s+\| area=\s*(\w+)", lines[i])
        assert match, lines[i]
        iou, area = match.groups()
        assert iou == wanted_iou.get(name, "0.50:0.95") and area == wanted_area.get(name, "all"), (name, lines[i])


def test_result_file_helpers():
    assert table_files("pcc.csv") == ("pcc.csv", "pcc.parquet")
    assert fnmatch(detections_file("fc-cls+conv-reg"), detections_file("*"))
    assert not fnmatch("eval.csv", detections_file("*"))


def test_names_keyed_by_the_vocabulary_elsewhere():
    from dhanalysis.figures import render, style

    for table in (style.VARIANT_COLORS, style.VARIANT_LINESTYLES, style.VARIANT_MARKERS):
        assert set(table) == set(VARIANTS)
    assert set(style.HEAD_COLORS) == set(style.HEAD_LABELS) == set(HEAD_TYPES)
    assert set(render.PAPER_HEAD_VARIANTS) == set(HEAD_TYPES)
    assert all(VARIANTS[v].head_types == (h,) for h, v in render.PAPER_HEAD_VARIANTS.items())
