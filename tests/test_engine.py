"""Training resumes bitwise on CPU, the schedule follows the config, and evaluation agrees with pycocotools."""

from __future__ import annotations

import json

import pytest
import torch

from dhanalysis.config import replace as cfg_replace
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.engine.evaluate import coco_ap, evaluate
from dhanalysis.engine.train import lr_factor, scale_schedule, train
from dhanalysis.errors import DHError
from dhanalysis.model.checkpoint import load_checkpoint, read_checkpoint

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


def test_non_finite_loss_stops_with_iteration_and_terms(synth, tmp_path):
    cfg = cfg_replace(_cfg(synth, "single-fc", iterations=6), ["train.lr=1e30", "train.warmup_iters=0"])
    with pytest.raises(DHError, match=r"non-finite loss at iteration \d+ \(loss_fc_cls="):
        train(cfg, tmp_path / "nan", progress=False)


def test_evaluation_matches_pycocotools_and_perfect_detections(synth, tmp_path):
    from pycocotools.cocoeval import COCOeval

    ds = CocoDataset(synth, "val")
    gt = ds.coco
    # perfect detections: every ground-truth box with score 1
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt.dataset["annotations"]]
    summary, per_class = coco_ap(gt, perfect, ds.ids)
    assert summary["AP"] == pytest.approx(1.0) and summary["AP50"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in per_class.values() if v == v)

    # a hand-built case: shifted boxes, a wrong class and a duplicate; compare with COCOeval run directly
    made = []
    for i, a in enumerate(gt.dataset["annotations"]):
        x, y, w, h = a["bbox"]
        made.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + 0.2 * w, y, w, h],
                     "score": 0.9 - 0.01 * i})
        if i % 3 == 0:
            other = [c for c in gt.getCatIds() if c != a["category_id"]][0]
            made.append({"image_id": a["image_id"], "category_id": other, "bbox": a["bbox"], "score": 0.95})
    summary, per_class = coco_ap(gt, made, ds.ids)
    ev = COCOeval(gt, gt.loadRes(made), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert summary["AP"] == pytest.approx(ev.stats[0]) and summary["AP75"] == pytest.approx(ev.stats[2])
    assert 0 < summary["AP"] < 1


@pytest.mark.slow
def test_evaluate_all_modes_in_one_pass(synth, tmp_path):
    cfg = _cfg(synth, iterations=2)
    final = train(cfg, tmp_path / "run", progress=False)
    model = load_checkpoint(final)
    ds = CocoDataset(synth, "val")
    table, per_class = evaluate(model, ds, out=tmp_path / "ev", progress=False)
    assert list(table.columns) == ["model", "mode", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert list(table["mode"]) == ["conv", "fc", "fc-cls+conv-reg", "conv-cls+fc-reg", "max", "average",
                                   "complementary"]
    assert ((table[["AP", "AP50"]] >= 0) & (table[["AP", "AP50"]] <= 1)).all().all()
    assert list(per_class.columns) == ["model", "mode", "category_id", "category", "AP"]
    assert set(per_class["category_id"]) == set(ds.label_to_cat_id.values())
    for name in ("eval.csv", "per_class_ap.csv", "detections_complementary.json"):
        assert (tmp_path / "ev" / name).exists()
    dets = json.loads((tmp_path / "ev" / "detections_fc.json").read_text())
    assert all(d["category_id"] in ds.label_to_cat_id.values() for d in dets)
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
