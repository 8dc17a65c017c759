"""Two CPU processes under torchrun (gloo) train a few iterations; the checkpoint loads in a single process, and two
processes end with the weights one process reaches on the same total batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhanalysis.config import load_config
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.engine.train import train
from dhanalysis.model.checkpoint import load_checkpoint, read_checkpoint

from helpers import FLOAT32_ATOL, FLOAT32_RTOL, ROOT, TINY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun"),
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                       reason="torch.distributed without gloo"),
]

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def _train_command(launcher: list[str], config: Path, out: Path, data_root: Path, sets: list[str]) -> list[str]:
    cmd = [*launcher, "-m", "dhanalysis", "train", "--config", str(config), "--out", str(out), "--data-root",
           str(data_root), "--device", "cpu"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _run(cmd: list[str]) -> None:
    # one thread per process: two processes on two cores, and no oversubscribed thread pools
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_torchrun_two_processes_gloo(tmp_path):
    make_synth_dataset(tmp_path / "synth", num_train=8, num_val=2, image_size=96, seed=1)
    sets = TINY + ["model.num_classes=0", "data.num_workers=0", "train.iterations=3", "train.ims_per_batch=4",
                   "train.checkpoint_period=2", "train.log_period=1"]
    _run(_train_command([TORCHRUN, "--standalone", "--nproc_per_node", "2"],
                        ROOT / "configs/synth/double-head-ext.yaml", tmp_path / "ck", tmp_path / "synth", sets))
    model = load_checkpoint(tmp_path / "ck" / "model_final.pth")
    assert model.config.model.num_classes == 6
    with torch.no_grad():
        out = model([torch.rand(3, 96, 96)])
    assert set(out[0]) == {"boxes", "labels", "scores"}
    lines = (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # only rank 0 writes


# ---------------------------------------------------------------------------------------------- 2 processes = 1
BOXES = ((8.0, 10.0, 50.0, 46.0), (40.0, 44.0, 88.0, 90.0))  # xyxy, the same in every image


def write_fixed_box_dataset(root: Path, num_images: int = 8, size: int = 96, seed: int = 0) -> Path:
    """A COCO-format train split whose images differ (noise, box colours, labels) but whose boxes are `BOXES` in
    every image, so every image gives its losses the same number of anchors and RoIs."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for x1, y1, x2, y2 in BOXES:
            pixels[int(y1):int(y2), int(x1):int(x2)] = rng.integers(0, 256, 3, dtype=np.uint8)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.integers(1, 4)), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(root / "train" / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
    categories = [{"id": c, "name": f"shape{c}"} for c in (1, 2, 3)]
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


EQUAL_SETS = TINY + [
    "model.backbone.norm=frozen_bn",
    "model.num_classes=0",
    "data.num_workers=0",
    "data.hflip_prob=0",
    "model.rpn.batch_size_per_image=100000",
    "model.box_batch_size_per_image=100000",
    "model.rpn.pre_nms_top_n_train=200",
    "model.rpn.post_nms_top_n_train=16",
    "train.iterations=3",
    "train.ims_per_batch=4",
    "train.checkpoint_period=100",
    "train.log_period=1",
    "train.cpu_bf16=false",
]
PARTS = ("backbone.body.", "backbone.fpn.", "rpn.", "roi_heads.")


def test_two_processes_end_with_the_weights_of_one(tmp_path):
    """torchrun with 2 processes × 2 images and one process × 4 images train to the same weights (float32
    tolerance), from the same start, for 3 iterations (the third in the second epoch).

    Why they can be equal (dhanalysis/engine/train.py):
    - Data: `DistributedSampler` draws one permutation per (seed, epoch) whatever the number of processes, and rank
      r takes every other index of it, so at each iteration the two ranks' batches together are exactly the single
      process's batch (8 images: 2 iterations per epoch either way). Each image's augmentation seed is a function of
      (seed, epoch, image), not of the rank.
    - Start: the model is built after ``manual_seed(seed + rank)``; rank 0 builds what the single process builds and
      DistributedDataParallel copies rank 0's weights to rank 1.
    - Step: DDP averages the ranks' gradients. Every loss is a mean over its process's sampled anchors or RoIs, so
      the average of the two ranks' means is the mean over all four images when each image contributes the same
      number of samples; momentum, weight decay, clipping and the LR schedule then see the same gradient.

    What legitimately breaks equality, and what the config does about it:
    - BatchNorm with batch statistics normalises over each process's own images (backbone with norm=bn) or RoIs
      (the conv-head), and DDP does not synchronise them: frozen BatchNorm and the fc-only Single-FC.
    - The anchor and RoI samplers draw random subsets from each rank's own RNG stream (seeded seed + rank): budgets
      above the number of candidates make them take every candidate, so no draw matters.
    - Samples per image must be equal: every image has the same two boxes (its pixels and labels differ), hence the
      same labelled anchors, and exactly ``post_nms_top_n_train`` proposals plus its two boxes in the RoI head. No
      flips (a flipped image's boxes match other anchors) and one image size (no batch-dependent padding).
    Bit-for-bit equality is not expected: batches of 2 and 4 images run through kernels with different summation
    orders, and the all-reduce adds two partial sums, so the weights agree to float32 rounding, not to the last bit.
    """
    data = write_fixed_box_dataset(tmp_path / "data")
    config = ROOT / "configs/synth/single-fc.yaml"
    _run(_train_command([TORCHRUN, "--standalone", "--nproc_per_node", "2"], config, tmp_path / "two", data,
                        EQUAL_SETS))
    _run(_train_command([sys.executable], config, tmp_path / "one", data, EQUAL_SETS))
    # the common start: the same config stopped before its first iteration saves the weights it begins from
    cfg = load_config(config, EQUAL_SETS + [f"data.root={data}"])
    start = read_checkpoint(train(cfg, tmp_path / "start", device="cpu", max_iterations=0, progress=False))

    one = read_checkpoint(tmp_path / "one" / "model_final.pth")
    two = read_checkpoint(tmp_path / "two" / "model_final.pth")
    assert one["iteration"] == two["iteration"] == 3 and start["iteration"] == 0
    one, two, start = one["model"], two["model"], start["model"]
    assert one.keys() == two.keys() == start.keys()
    # every part of the detector trained, by far more than the tolerance (so equal weights are not the start's)
    for part in PARTS:
        moved = max((one[k] - start[k]).abs().max().item() for k in one if k.startswith(part))
        assert moved > 100 * FLOAT32_ATOL, f"{part} did not train ({moved:.2g})"
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL, msg=lambda m, k=k: f"{k}: {m}")
