"""On a CUDA GPU (marked ``cuda``; skipped without one, `make gpu-check` runs them and fails where there is none):
the conv-head's training forms against float64, a training run with AMP, the fast scorer against the reference,
evaluation, and a one-process torchrun with NCCL."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dhanalysis.probes.proposals import sliding_window_proposals
from dhanalysis.probes.harness import image_context
from dhanalysis.probes.scoring import AdaptiveBatch, FastScorer, score_boxes
from dhanalysis.data.coco import CocoDataset
from dhanalysis.data.synth import make_synth_dataset
from dhanalysis.engine.evaluate import evaluate
from dhanalysis.engine.train import train
from dhanalysis.model import build_model
from dhanalysis.model.checkpoint import load_checkpoint
from dhanalysis.model.heads import TRAINING_FORMS, ConvHead

from helpers import ROOT, TINY, tiny_config

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("cuda")
    make_synth_dataset(base / "data", num_train=8, num_val=2, image_size=96, seed=0)
    return base


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off, so float32 on the GPU is float32 (the tolerances below are float32 rounding)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("form", list(TRAINING_FORMS))
def test_conv_head_training_forms_on_cuda_match_float64(form):
    torch.manual_seed(0)
    head = ConvHead(8, 32, 8, num_blocks=3, non_local_dim=16, non_local_groups=2).train()
    x, w = torch.randn(6, 8, 7, 7), torch.randn(6, 32)
    ref_head = copy.deepcopy(head).double()
    x64 = x.double().requires_grad_()
    (ref_head.forward_as("modules", x64) * w.double()).sum().backward()
    gpu = copy.deepcopy(head).to(CUDA)
    xg = x.to(CUDA).requires_grad_()
    (gpu.forward_as(form, xg) * w.to(CUDA)).sum().backward()
    scale = max(p.grad.abs().max().item() for p in ref_head.parameters())
    for (name, p64), pg in zip(ref_head.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(pg.grad.cpu().double(), p64.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
    for (name, b64), bg in zip(ref_head.named_buffers(), gpu.buffers()):
        torch.testing.assert_close(bg.cpu().to(b64.dtype), b64, rtol=1e-4, atol=1e-5, msg=name)


def test_training_with_amp_on_cuda_then_evaluation(synth, tmp_path):
    cfg = tiny_config("double-head-ext", f"data.root={synth / 'data'}", "model.num_classes=0", "data.num_workers=0",
                      "train.iterations=3", "train.ims_per_batch=2", "train.amp=true", "train.log_period=1")
    ckpt = train(cfg, tmp_path / "run", device="cuda", progress=False)
    model = load_checkpoint(ckpt).to(CUDA).eval()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    table, _ = evaluate(model, CocoDataset(synth / "data", "val"), device="cuda", progress=False)
    assert len(table) and table["AP"].between(0, 1).all()


def test_fast_scorer_equals_the_reference_on_cuda(synth):
    torch.manual_seed(0)
    model = build_model(tiny_config("double-head-ext", "model.num_classes=6", "model.min_size=96",
                                    "model.max_size=96")).to(CUDA).eval()
    dataset = CocoDataset(synth / "data", "val")
    with torch.inference_mode():
        ctx = image_context(model, *dataset[0], CUDA)[0]
        windows, owner = sliding_window_proposals(ctx.boxes, ctx.image_size, 300)
        args = (ctx.features, ctx.image_size, windows, ctx.labels[owner], ctx.boxes[owner])
        ref = score_boxes(model, *args, AdaptiveBatch(64))
        ours = FastScorer(model).score(*args, AdaptiveBatch(41))
    for head, parts in ref.items():
        for key, value in parts.items():
            torch.testing.assert_close(ours[head][key], value, rtol=1e-4, atol=1e-4)


def test_torchrun_one_process_nccl(synth, tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "1", "-m", "dhanalysis", "train", "--config",
           str(ROOT / "configs/synth/double-head-ext.yaml"), "--out", str(tmp_path / "ck"), "--data-root",
           str(synth / "data"), "--device", "cuda"]
    for s in TINY + ["model.num_classes=0", "data.num_workers=0", "train.iterations=2", "train.ims_per_batch=2"]:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ck" / "model_final.pth").exists()
