"""The core subcommands run and user errors are one line with exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from torch import nn

from dhanalysis.cli import main
from dhanalysis.config import load_config, preset_path
from dhanalysis.model.heads import ConvHead


def test_variants_lists_all_seven(capsys):
    assert main(["variants"]) == 0
    out = capsys.readouterr().out
    for name in ("single-fc", "single-conv", "double-fc", "double-conv", "double-head", "double-head-reverse",
                 "double-head-ext"):
        assert f"\n{name} " in "\n" + out
    assert "fc[fc-head cls=1.4 reg=0.6]  conv[conv-head cls=0.5 reg=2]" in out


def test_params_table2_prints_ours_beside_paper(capsys):
    assert main(["params", "--table2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("conv ", "fc "))]
    assert len(rows) == 11 and all(r[-1] == "True" for r in rows)
    assert ["conv", "5", "True", "7536640", "7.19", "7.19", "True"] in rows


def test_params_config_table(capsys, tmp_path, monkeypatch):
    # the preset names a backbone file (checkpoints/resnet18-synth.pth) that a fresh clone does not have: counting
    # parameters must not need it
    monkeypatch.chdir(tmp_path)
    assert main(["params", "--config", str(preset_path("synth/single-fc.yaml")), "--num-classes", "6"]) == 0
    out = capsys.readouterr().out
    assert "roi_heads.branches.fc.head" in out and "DoubleHeadRCNN" in out


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_checkpoint_request_outside_training_is_answered_not_fatal(capsys, monkeypatch):
    """SIGUSR1 ends a process by default; a command that is not in a training iteration says so and finishes."""
    import dhanalysis.cli.variants as variants

    real = variants.run

    def run_signalled(args):
        os.kill(os.getpid(), signal.SIGUSR1)
        return real(args)

    monkeypatch.setattr(variants, "run", run_signalled)
    before = signal.getsignal(signal.SIGUSR1)
    assert main(["variants"]) == 0
    captured = capsys.readouterr()
    assert "double-head-ext" in captured.out
    assert captured.err.count("no training iteration is running; going on") == 1
    assert signal.getsignal(signal.SIGUSR1) == before


@pytest.mark.slow
def test_user_error_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "dhanalysis", "params", "--config", "no/such.yaml"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("dhanalysis: error: config file no/such.yaml does not exist")


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  variant: single-fc\n  head: {fc_dimm: 3}\n")
    assert main(["params", "--config", str(cfg)]) == 2
    assert "unknown config key 'model.head.fc_dimm'" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["double-head", "double-head-reverse", "double-head-ext"])
def test_synthetic_presets_keep_the_papers_head_proportions(variant, capsys, tmp_path, monkeypatch):
    """Each preset's fc-head ÷ conv-head weights lies in [2, 3], as the paper's 13.25M ÷ 5.31M = 2.5 (Table 2), and
    both heads keep the paper's structure: two fc layers, and K = 5 conv blocks. (Every synthetic preset shares one
    head line, so Single-FC's fc-head and Single-Conv's conv-head stand in the same proportion.)"""
    monkeypatch.chdir(tmp_path)
    assert main(["params", "--config", str(preset_path(f"synth/{variant}.yaml")), "--num-classes", "6",
                 "--depth", "1"]) == 0
    out = capsys.readouterr().out
    rows = {r.split()[0]: r.split() for r in out.split("fc_over_conv")[-1].splitlines()[1:] if r.strip()}
    fc, conv = int(rows["fc"][-4]), int(rows["conv"][-4])
    cfg = load_config(preset_path(f"synth/{variant}.yaml"))
    c, h, d = cfg.model.backbone.fpn_channels, cfg.model.head.roi_size, cfg.model.head.fc_dim
    assert fc == c * h * h * d + d * d  # fc6 on the flattened RoI, then fc7: weights only, as the paper counts
    assert 2.0 <= fc / conv <= 3.0 and float(rows["fc"][-1]) == pytest.approx(fc / conv, abs=0.006)
    blocks = ConvHead(c, cfg.model.head.conv_dim, cfg.model.head.bottleneck_dim, cfg.model.head.num_blocks,
                      cfg.model.head.non_local, cfg.model.head.non_local_dim, cfg.model.head.non_local_groups).blocks
    assert len(blocks) == 5
    assert conv == sum(m.weight.numel() for m in blocks.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
