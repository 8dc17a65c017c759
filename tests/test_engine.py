"""Training resumes bitwise on CPU, the schedule follows the config, and evaluation agrees with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

from dhanalysis.config import replace as cfg_replace
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.engine.evaluate import coco_ap, evaluate
from dhanalysis.engine.train import lr_factor, scale_schedule, train
from dhanalysis.errors import DHError
from dhanalysis.model.checkpoint import load_checkpoint, read_checkpoint
from dhanalysis.vocab import INFERENCE_MODES, METRICS

from helpers import tiny_config


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_synth_dataset(root, num_train=6, num_val=4, image_size=96, seed=3)
    return root


def _cfg(root, variant="double-head-ext", iterations=4):
    return tiny_config(
        variant, f"data.root={root}", "data.num_workers=0", "model.num_classes=0",
        f"train.iterations={iterations}", "train.ims_per_batch=2", "train.checkpoint_period=2",
        "train.log_period=1", "train.warmup_iters=2", "train.steps=[3]",
    )


def test_lr_schedule_and_linear_scaling():
    cfg = tiny_config("single-fc", "train.lr=0.02", "train.warmup_iters=10", "train.warmup_factor=0.1",
                      "train.steps=[20, 30]", "train.iterations=40", "train.ims_per_batch=4")
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.55)
    assert lr_factor(10, cfg) == 1.0
    assert lr_factor(25, cfg) == pytest.approx(0.1)
    assert lr_factor(35, cfg) == pytest.approx(0.01)
    scaled = scale_schedule(cfg, 8)
    assert scaled.train.lr == pytest.approx(0.04)
    assert (scaled.train.iterations, scaled.train.steps, scaled.train.warmup_iters) == (20, (10, 15), 5)


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_weights(synth, tmp_path):
    cfg = _cfg(synth)
    full = train(cfg, tmp_path / "full", progress=False)
    # an interruption after iteration 3: the last checkpoint is at iteration 2
    part = tmp_path / "part"
    train(cfg, part, max_iterations=3, progress=False)
    ckpt = read_checkpoint(part / "checkpoint.pth")
    assert ckpt["iteration"] == 3  # the early stop saves where it stopped
    # simulate a crash between checkpoints: roll back to the periodic checkpoint at iteration 2
    partial = tmp_path / "crash"
    train(cfg, partial, max_iterations=2, progress=False)
    with pytest.raises(DHError, match="already holds a training run .*; pass resume=True"):
        train(cfg, partial, progress=False)
    resumed = train(cfg, partial, resume=True, progress=False)
    a, b = read_checkpoint(full)["model"], read_checkpoint(resumed)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = [json.loads(x) for x in (partial / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4]
    assert {"lr", "loss_fc_cls", "loss_fc_reg", "loss_conv_cls", "loss_conv_reg", "time_per_iter"} <= set(lines[0])
    # a finished run resumed again does nothing; another config in the same folder is refused
    assert train(cfg, partial, resume=True, progress=False) == resumed
    with pytest.raises(DHError, match=r"another model or configuration \(train\.lr: .* vs 0\.5\)"):
        train(cfg_replace(cfg, ["train.lr=0.5"]), partial, resume=True, progress=False)


def _signal_at(monkeypatch, engine, signum: int, step: int) -> list[int]:
    """Send ``signum`` to this process during training step ``step`` (1-based), as a scheduler would; the list
    collects the iteration of every checkpoint the loop writes."""
    calls, saved = [0], []
    real_apply, real_save = engine.apply_gradients, engine.save_run

    def apply(run, total):
        calls[0] += 1
        if calls[0] == step:
            os.kill(os.getpid(), signum)
        real_apply(run, total)

    def save(run, path, iteration):
        saved.append(iteration)
        real_save(run, path, iteration)

    monkeypatch.setattr(engine, "apply_gradients", apply)
    monkeypatch.setattr(engine, "save_run", save)
    return saved


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_signals_write_a_checkpoint_between_periodic_ones(synth, tmp_path, monkeypatch, capsys):
    """SIGUSR1 writes a checkpoint at the end of the iteration it arrives in and training goes on unchanged; SIGTERM
    writes one and stops, and the run resumed from it ends with the uninterrupted run's weights, bitwise."""
    import dhanalysis.engine.train as engine

    cfg = cfg_replace(_cfg(synth, "single-fc", iterations=5), ["train.checkpoint_period=100"])  # none periodic
    full = read_checkpoint(train(cfg, tmp_path / "full", progress=False))["model"]
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}

    saved = _signal_at(monkeypatch, engine, signal.SIGUSR1, step=2)
    went_on = read_checkpoint(train(cfg, tmp_path / "usr1", progress=False))
    assert saved == [2, 5] and went_on["iteration"] == 5  # the requested one, then the final one
    assert "checkpoint at iteration 2 written on request" in capsys.readouterr().out
    assert all(torch.equal(full[k], went_on["model"][k]) for k in full)

    saved = _signal_at(monkeypatch, engine, signal.SIGTERM, step=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "term", progress=False)
    assert saved == [3] and read_checkpoint(tmp_path / "term" / "checkpoint.pth")["iteration"] == 3
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are the caller's again
    monkeypatch.undo()
    resumed = read_checkpoint(train(cfg, tmp_path / "term", resume=True, progress=False))["model"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)

    # asked in the last iteration: the run is complete, so the stop keeps the final weights, not a checkpoint
    _signal_at(monkeypatch, engine, signal.SIGTERM, step=5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "last", progress=False)
    last = read_checkpoint(tmp_path / "last" / "model_final.pth")
    assert last["iteration"] == 5 and not (tmp_path / "last" / "checkpoint.pth").exists()
    assert all(torch.equal(full[k], last["model"][k]) for k in full)


def test_non_finite_loss_stops_with_iteration_and_terms(synth, tmp_path):
    cfg = cfg_replace(_cfg(synth, "single-fc", iterations=6), ["train.lr=1e30", "train.warmup_iters=0"])
    with pytest.raises(DHError, match=r"non-finite loss at iteration \d+ \(loss_fc_cls="):
        train(cfg, tmp_path / "nan", progress=False)


def test_perfect_detections_score_ap_one(synth):
    ds = CocoDataset(synth, "val")
    gt = ds.coco
    # perfect detections: every ground-truth box with score 1
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt.dataset["annotations"]]
    summary, per_class = coco_ap(gt, perfect, ds.ids)
    assert summary["AP"] == pytest.approx(1.0) and summary["AP50"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in per_class.values() if v == v)


def _interpolated_ap(matched: list[bool], num_gt: int) -> float:
    """COCO's AP of one class at one IoU threshold, by hand in float64: detections in score order, precision made
    monotone from the right, read at the 101 recall points 0, 0.01, ..., 1 (0 past the highest recall)."""
    tp = np.cumsum(matched)
    precision = tp / np.arange(1, len(matched) + 1)
    recall = tp / num_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0, 1, 101)
    return float(np.mean([envelope[recall >= r - 1e-12].max() if (recall >= r - 1e-12).any() else 0.0
                          for r in points]))


def _coco(gt: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.dataset = gt
        coco.createIndex()
    return coco


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coco_ap_equals_pycocotools(seed):
    """eval's AP (COCOeval's stats[0:6]) and per-class AP equal pycocotools' COCOeval on files with crowds, objects of
    every size group, several categories (one without objects, one of crowds only), more than 100 detections of one
    image and class, images with no detections or no objects, on a subset of the images."""
    from test_coco_match import pycocotools_eval, sparse_case

    gt, dets, image_ids = sparse_case(seed)
    ref = pycocotools_eval(gt, dets, image_ids)
    summary, per_class = coco_ap(_coco(gt), dets, image_ids)
    assert list(summary) == list(METRICS)
    for i, name in enumerate(METRICS):
        assert summary[name] == pytest.approx(ref.stats[i], abs=1e-12), name
    prec = ref.eval["precision"][:, :, :, 0, -1]
    assert list(per_class) == ref.params.catIds
    for k, cat in enumerate(ref.params.catIds):
        p = prec[:, :, k][prec[:, :, k] > -1]
        assert (per_class[cat] == pytest.approx(p.mean(), abs=1e-12)) if p.size else np.isnan(per_class[cat]), cat
    assert len({v for v in per_class.values() if v == v}) >= 3


def test_coco_ap_of_no_detections_is_zero_where_objects_count():
    """No detections: AP 0, and per class 0 where the evaluated images hold objects that count, NaN elsewhere (as
    COCOeval leaves a class without such objects out)."""
    from test_coco_match import sparse_case

    gt, _, image_ids = sparse_case(0)
    summary, per_class = coco_ap(_coco(gt), [], image_ids)
    assert summary == dict.fromkeys(METRICS, 0.0)
    counted = {a["category_id"] for a in gt["annotations"] if not a["iscrowd"] and a["image_id"] in image_ids}
    assert {c for c, v in per_class.items() if v == 0.0} == counted
    assert all(np.isnan(v) for c, v in per_class.items() if c not in counted)


def test_coco_ap_equals_the_paper_metric_computed_by_hand():
    """Two classes, large boxes: class 1 has a true positive, a false positive, then a box of IoU 2/3 with its
    second object; class 2 is found exactly. AP averages 10 IoU thresholds, of which 4 (0.5-0.65) accept the
    shifted box."""
    from pycocotools.coco import COCO

    gt = COCO()
    box = lambda x: [x, 0.0, 100.0, 100.0]  # noqa: E731 - xywh, area 10^4 >= 96^2: a large object
    anns = [(1, box(0)), (1, box(300)), (2, box(600))]
    gt.dataset = {"images": [{"id": 7, "width": 800, "height": 200}],
                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                  "annotations": [{"id": i + 1, "image_id": 7, "category_id": c, "bbox": b, "area": 1e4,
                                   "iscrowd": 0} for i, (c, b) in enumerate(anns)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    dets = [{"image_id": 7, "category_id": 1, "bbox": box(0), "score": 0.9},
            {"image_id": 7, "category_id": 1, "bbox": [0.0, 100.0, 100.0, 100.0], "score": 0.8},  # overlaps nothing
            {"image_id": 7, "category_id": 1, "bbox": box(320), "score": 0.7},  # IoU 80/120 with the second object
            {"image_id": 7, "category_id": 2, "bbox": box(600), "score": 0.6}]
    summary, per_class = coco_ap(gt, dets, [7])
    accepted, rejected = _interpolated_ap([True, False, True], 2), _interpolated_ap([True, False, False], 2)
    thresholds = np.linspace(0.5, 0.95, 10)
    class1 = np.mean([accepted if t <= 2 / 3 else rejected for t in thresholds])
    assert per_class[1] == pytest.approx(class1, abs=1e-9) and per_class[2] == pytest.approx(1.0)
    assert summary["AP"] == pytest.approx((class1 + 1) / 2, abs=1e-9)
    assert summary["AP50"] == pytest.approx((accepted + 1) / 2, abs=1e-9)
    assert summary["AP75"] == pytest.approx((rejected + 1) / 2, abs=1e-9)
    assert summary["APl"] == pytest.approx(summary["AP"]) and summary["APs"] == summary["APm"] == 0.0


@pytest.mark.slow
def test_evaluate_all_modes_in_one_pass(synth, tmp_path):
    """Every mode from one backbone, RPN and branch pass per batch, each mode's detections and AP those of
    evaluating that mode alone."""
    cfg = _cfg(synth, iterations=2)
    model = load_checkpoint(train(cfg, tmp_path / "run", progress=False))
    ds = CocoDataset(synth, "val")
    calls = {"backbone": 0, "rpn": 0, **{name: 0 for name in model.roi_heads.branches}}

    def counter(key):
        def hook(module, args, output):
            calls[key] += 1
        return hook

    hooks = [model.backbone.register_forward_hook(counter("backbone")), model.rpn.register_forward_hook(counter("rpn"))]
    hooks += [b.register_forward_hook(counter(n)) for n, b in model.roi_heads.branches.items()]
    table, per_class = evaluate(model, ds, out=tmp_path / "ev", batch_size=2, progress=False)
    for h in hooks:
        h.remove()
    batches = -(-len(ds) // 2)
    assert calls == dict.fromkeys(calls, batches)  # one pass per batch whatever the number of modes
    assert list(table["mode"]) == list(INFERENCE_MODES)  # Double-Head-Ext with λ < 1 supports every mode
    assert list(per_class.columns) == ["model", "mode", "category_id", "category", "AP"]
    assert set(per_class["category_id"]) == set(ds.label_to_cat_id.values())
    detections = {m: json.loads((tmp_path / "ev" / f"detections_{m}.json").read_text()) for m in table["mode"]}
    assert len({json.dumps(d) for d in detections.values()}) > 1, "the modes' detections should differ"
    # the COCO results format, nothing pycocotools' loadRes adds while the AP is computed
    assert {k for d in detections.values() for r in d for k in r} == {"image_id", "category_id", "bbox", "score",
                                                                       "fc_score", "conv_score"}
    for mode in table["mode"]:
        alone, _ = evaluate(model, ds, modes=[mode], out=tmp_path / mode, batch_size=2, progress=False)
        assert json.loads((tmp_path / mode / f"detections_{mode}.json").read_text()) == detections[mode], mode
        pd.testing.assert_frame_equal(alone.reset_index(drop=True),
                                      table[table["mode"] == mode].reset_index(drop=True))
    with pytest.raises(DHError, match="mode 'conv' needs the conv-head"):
        evaluate(load_checkpoint(train(_cfg(synth, "single-fc", 1), tmp_path / "fc", progress=False)), ds,
                 modes=["conv"], progress=False)


@pytest.mark.slow
def test_heads_on_a_frozen_shared_trunk(synth, tmp_path):
    """Heads train on another run's backbone + RPN, which stay bitwise unchanged; the trunk cache changes nothing
    (cached, uncached and resumed runs end with the same weights); a trunk of another shape is refused."""
    from dhanalysis.engine import trunk

    source = train(_cfg(synth, "single-fc"), tmp_path / "trunk", progress=False)
    trunk_state = read_checkpoint(source)["model"]
    sets = [f"train.init_from={source}", "train.freeze=[backbone, rpn]"]
    cfg = cfg_replace(_cfg(synth, "single-conv"), sets)
    cached = read_checkpoint(train(cfg, tmp_path / "cached", progress=False))["model"]
    for k, v in trunk_state.items():
        if k.startswith(("backbone.", "rpn.")):
            assert torch.equal(cached[k], v), k
    fresh = build_fresh_conv_head(cfg)
    assert any(not torch.equal(cached[k], fresh[k]) for k in fresh if k.startswith("roi_heads."))
    assert trunk._CACHES and next(iter(trunk._CACHES.values())).hits > 0  # the second epoch read the cache

    trunk._CACHES.clear()
    uncached = read_checkpoint(train(cfg_replace(cfg, ["train.trunk_cache_gb=0"]), tmp_path / "uncached",
                                     progress=False))["model"]
    train(cfg, tmp_path / "resumed", max_iterations=2, progress=False)
    trunk._CACHES.clear()  # a resumed run starts with a cold cache
    resumed = read_checkpoint(train(cfg, tmp_path / "resumed", resume=True, progress=False))["model"]
    for k in cached:
        assert torch.equal(cached[k], uncached[k]), k
        assert torch.equal(cached[k], resumed[k]), k

    other = cfg_replace(cfg, ["model.backbone.fpn_channels=8", "model.head.fc_dim=16"])
    with pytest.raises(DHError, match="does not hold this model's backbone/rpn"):
        train(other, tmp_path / "other", progress=False)
    with pytest.raises(DHError, match="init_from is empty"):
        train(cfg_replace(cfg, ["train.init_from=null"]), tmp_path / "none", progress=False)


def build_fresh_conv_head(cfg) -> dict:
    from dhanalysis.model.build import build_model

    torch.manual_seed(cfg.train.seed)
    return build_model(cfg, 6).state_dict()


def test_heads_trained_together_equal_heads_trained_alone(synth, tmp_path):
    """One sampling and pooling per iteration feeds every head: the first model's run is the one it makes alone,
    a model of the same architecture sees the same RoIs (common random numbers) and so equals its lone run too, a
    model of another architecture trains beside them on the same trunk, and an interrupted group resumes exactly."""
    from dhanalysis.engine.train import train_together

    source = train(_cfg(synth, "single-fc"), tmp_path / "trunk", progress=False)
    sets = [f"train.init_from={source}", "train.freeze=[backbone, rpn]"]
    a = cfg_replace(_cfg(synth, "single-conv"), sets)
    b = cfg_replace(a, ["model.loss.w_conv=2.5", "train.lr=0.01", "name=b"])
    c = cfg_replace(_cfg(synth, "double-head-ext"), sets)
    together = train_together([a, b, c], [tmp_path / "a", tmp_path / "b", tmp_path / "c"], progress=False)
    alone = [train(cfg, tmp_path / f"alone-{cfg.name}", progress=False) for cfg in (a, b)]
    for joint, single in zip(together[:2], alone):
        x, y = read_checkpoint(joint)["model"], read_checkpoint(single)["model"]
        for k in y:
            torch.testing.assert_close(x[k], y[k], rtol=1e-5, atol=1e-6, msg=k)
    ext = read_checkpoint(together[2])["model"]
    trunk_state = read_checkpoint(source)["model"]
    assert all(torch.equal(ext[k], v) for k, v in trunk_state.items() if k.startswith(("backbone.", "rpn.")))
    assert load_checkpoint(together[2]).config.model.variant == "double-head-ext"
    torch.manual_seed(c.train.seed)
    from dhanalysis.model.build import build_model

    fresh = build_model(c, 6).state_dict()
    learned = [k for k in fresh if k.startswith("roi_heads.") and k.endswith(("cls_score.weight", "bbox_pred.weight"))]
    assert len(learned) == 4 and all(not torch.equal(ext[k], fresh[k]) for k in learned)

    outs = [tmp_path / f"r{i}" for i in range(3)]
    train_together([a, b, c], outs, max_iterations=2, progress=False)
    resumed = train_together([a, b, c], outs, resume=True, progress=False)
    for r, j in zip(resumed, together):
        x, y = read_checkpoint(r)["model"], read_checkpoint(j)["model"]
        assert all(torch.equal(x[k], y[k]) for k in y)
    with pytest.raises(DHError, match="cannot train together.*train"):
        train_together([a, cfg_replace(a, ["train.iterations=6", "name=longer"])], [tmp_path / "x", tmp_path / "y"])
    with pytest.raises(DHError, match="only on a frozen shared trunk"):
        train_together([_cfg(synth, "single-fc"), _cfg(synth, "single-conv")], [tmp_path / "x", tmp_path / "y"])


def test_models_on_one_trunk_evaluated_together_equal_their_own_evaluations(synth, tmp_path):
    """The trunk runs once per batch for every model; each model's detections, AP and files are its own."""
    from dhanalysis.engine.evaluate import evaluate_together
    from dhanalysis.model.build import build_model

    torch.manual_seed(0)
    models = [build_model(cfg_replace(_cfg(synth, v), ["model.score_thresh=0.0", "model.num_classes=6"]))
              for v in ("single-fc", "double-head-ext", "single-conv")]
    for m in models[1:]:
        m.backbone.load_state_dict(models[0].backbone.state_dict())
        m.rpn.load_state_dict(models[0].rpn.state_dict())
    dataset = CocoDataset(synth, "val")
    outs = [tmp_path / f"together-{i}" for i in range(3)]
    together = evaluate_together(models, dataset, [None, ["fc", "complementary"], None], outs=outs,
                                 names=["a", "b", "c"], progress=False)
    for i, (model, modes) in enumerate(zip(models, [None, ["fc", "complementary"], None])):
        alone = evaluate(model, dataset, modes, out=tmp_path / f"alone-{i}", name="abc"[i], progress=False)
        assert together[i][0].equals(alone[0]) and together[i][1].equals(alone[1])
        for f in sorted((tmp_path / f"alone-{i}").glob("detections_*.json")):
            assert (outs[i] / f.name).read_text() == f.read_text()
    assert len(json.loads((outs[1] / "detections_complementary.json").read_text())) > 0
    other = build_model(cfg_replace(_cfg(synth, "single-fc"), ["model.num_classes=6"]))
    with pytest.raises(DHError, match="must share their backbone"):
        evaluate_together([models[0], other], dataset, progress=False)
