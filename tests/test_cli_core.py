"""The core subcommands run and user errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dhanalysis.cli import main
from dhanalysis.config import preset_path


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
