"""Two CPU processes under torchrun (gloo) train a few iterations; the checkpoint loads in a single process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.model.checkpoint import load_checkpoint

from helpers import ROOT, TINY


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_two_processes_gloo(tmp_path):
    make_synth_dataset(tmp_path / "synth", num_train=8, num_val=2, image_size=96, seed=1)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    sets = TINY + ["model.num_classes=0", "data.num_workers=0", "train.iterations=3", "train.ims_per_batch=4",
                   "train.checkpoint_period=2", "train.log_period=1"]
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "dhanalysis", "train",
           "--config", str(ROOT / "configs/synth/double-head-ext.yaml"), "--out", str(tmp_path / "ck"),
           "--data-root", str(tmp_path / "synth"), "--device", "cpu"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = load_checkpoint(tmp_path / "ck" / "model_final.pth")
    assert model.config.model.num_classes == 6
    with torch.no_grad():
        out = model([torch.rand(3, 96, 96)])
    assert set(out[0]) == {"boxes", "labels", "scores"}
    lines = (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # only rank 0 writes
