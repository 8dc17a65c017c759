"""Checkpoints rebuild identical models, load with weights_only, and fail in one line when they are wrong."""

from __future__ import annotations

import os
import pickle

import pandas as pd
import pytest
import torch

from dhanalysis.errors import DHError
from dhanalysis.model import VARIANTS, build_model, load_checkpoint, save_checkpoint

from helpers import assert_same_statistics, tiny_config, two_images


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkpoint_round_trip_gives_identical_outputs(variant, tmp_path):
    torch.manual_seed(1)
    model = build_model(tiny_config(variant, "model.score_thresh=0.0"))
    # take BN running statistics and weights away from their initial values, so the comparison means something
    model.train()
    images, targets = two_images()
    model(images, targets)
    model.eval()
    path = tmp_path / "m.pth"
    save_checkpoint(path, model)
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    assert not loaded.training
    with torch.no_grad():
        a, b = model(images), loaded(images)
        boxes = [t["boxes"] for t in targets]
        _, feats, _ = model.features(images)
        pa = model.roi_heads.probe(feats, boxes, [(96, 116), (106, 87)])
        pb = loaded.roi_heads.probe(feats, boxes, [(96, 116), (106, 87)])
    for da, db in zip(a, b):
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(da[k], db[k])
    assert pa.keys() == pb.keys()
    for head in pa:
        for k in pa[head]:
            assert torch.equal(pa[head][k], pb[head][k])


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(DHError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    model = build_model(tiny_config("single-fc"))
    good = tmp_path / "good.pth"
    save_checkpoint(good, model)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DHError, match="truncated or not a PyTorch file"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": model.state_dict()}, foreign)
    with pytest.raises(DHError, match="not written by dhanalysis"):
        load_checkpoint(foreign)
    with pytest.raises(DHError, match="is a folder"):
        load_checkpoint(tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_that_runs_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"format": "dhanalysis-checkpoint-v1", "payload": evil}, f)
    with pytest.raises(DHError, match="could run code; refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_mismatched_config_names_the_keys(tmp_path):
    path = tmp_path / "fc.pth"
    save_checkpoint(path, build_model(tiny_config("single-fc")))
    with pytest.raises(DHError, match="is a 'single-fc' model but the config asks for 'double-head'"):
        load_checkpoint(path, config=tiny_config("double-head"))
    with pytest.raises(DHError, match=r"of another shape \(e.g. roi_heads.branches.fc.head.fc6\."):
        load_checkpoint(path, config=tiny_config("single-fc", "model.head.fc_dim=64"))


def test_checkpoint_with_the_old_roi_scale_key_still_loads(tmp_path):
    """Checkpoints written before ``model.head.reg_roi_scale`` became ``conv_roi_scale`` load with its value."""
    torch.manual_seed(0)
    model = build_model(tiny_config("double-head-ext", "model.head.conv_roi_scale=1.3")).eval()
    save_checkpoint(tmp_path / "new.pth", model)
    state = torch.load(tmp_path / "new.pth", weights_only=True)
    head = state["config"]["model"]["head"]
    head["reg_roi_scale"] = head.pop("conv_roi_scale")
    torch.save(state, tmp_path / "old.pth")
    old = load_checkpoint(tmp_path / "old.pth")
    assert old.config.model.head.conv_roi_scale == 1.3 and old.roi_heads.conv_roi_scale == 1.3
    images, _ = two_images()
    with torch.no_grad():
        a, b = model(images), old(images)
    for da, db in zip(a, b):
        for k in da:
            torch.testing.assert_close(da[k], db[k])


def test_a_copied_checkpoint_is_analysed_without_its_pretraining_file(tmp_path, monkeypatch):
    """A checkpoint names the backbone file it was trained from; loading it elsewhere must not need that file."""
    from torchvision.models import resnet18

    from dhanalysis.cli import main
    from dhanalysis.data.synth import make_synth_dataset

    data = tmp_path / "data"
    make_synth_dataset(data, num_train=1, num_val=2, image_size=64, seed=0)
    pretrained = tmp_path / "pretrain" / "resnet18.pth"
    pretrained.parent.mkdir()
    torch.manual_seed(3)
    torch.save(resnet18().state_dict(), pretrained)
    cfg = tiny_config("single-fc", f"model.backbone.weights={pretrained}", "model.num_classes=6",
                      "model.min_size=64", "model.max_size=64", f"data.root={data}")
    model = build_model(cfg)
    assert torch.equal(model.backbone.body.conv1.weight, torch.load(pretrained)["conv1.weight"])
    with torch.no_grad():
        model.backbone.body.conv1.weight.mul_(-1.0)  # the checkpoint's weights, not the pretraining file's
    save_checkpoint(tmp_path / "trained.pth", model)
    args = ["--proposals-per-gt", "40", "--no-progress"]
    assert main(["sliding-window", "--ckpt", str(tmp_path / "trained.pth"), "--out", str(tmp_path / "here"), *args]) == 0
    # a colleague's machine: the checkpoint alone in an empty folder, the pretraining file gone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "fc.pth").write_bytes((tmp_path / "trained.pth").read_bytes())
    pretrained.unlink()
    monkeypatch.chdir(elsewhere)
    loaded = load_checkpoint("fc.pth")
    assert loaded.config.model.backbone.weights == str(pretrained)  # the config still says where it came from
    assert torch.equal(loaded.backbone.body.conv1.weight, model.backbone.body.conv1.weight)
    assert main(["sliding-window", "--ckpt", "fc.pth", "--out", "res", *args]) == 0
    there = pd.read_csv(elsewhere / "res" / "sliding_window_stats.csv")
    assert there["n"].sum() > 0
    assert_same_statistics(pd.read_csv(tmp_path / "here" / "sliding_window_stats.csv"), there)
