"""The host memory policy (engine/host.py): a training step's freed activations are reused without faulting their
pages in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

STEPS = """
import resource, sys, torch
from dhanalysis.engine.host import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "1" else False
torch.manual_seed(0)
x, w = torch.randn(4096, 2048), torch.randn(2048, 2048, requires_grad=True)  # 32 MiB activations
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    h = (x @ w).relu()
    (h * h).mean().backward()
    w.grad = None
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(sorted(faults[-4:])[1:3]))  # the middle two of the last four
"""


def steady_faults(retain: bool) -> tuple[str, int]:
    """Page faults of the middle two of the last four of eight identical small training steps, in a fresh process
    (the retained heap fragments now and then, so one step of a few may fault its pages again)."""
    out = subprocess.run([sys.executable, "-c", STEPS, "1" if retain else "0"], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"}).stdout.split()
    return out[0], int(out[1])


def huge_pages_always() -> bool:
    try:
        return "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.skipif(huge_pages_always(), reason="transparent huge pages always on: few page faults either way")
def test_freed_activations_are_reused_without_page_faults():
    """By default every step maps its activations afresh (about 60,000 faults per step here: each 32 MiB tensor is
    8,192 pages); with the policy the steps reuse the freed blocks. Each case in its own process (the policy is
    process-wide)."""
    applied, retained = steady_faults(True)
    _, default = steady_faults(False)
    assert applied == "True"
    assert default > 50_000 and retained * 3 < default


def test_a_user_tuned_malloc_is_left_alone(monkeypatch):
    import dhanalysis.engine.host as host

    monkeypatch.setattr(host, "_applied", None)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert host.retain_freed_memory() is False
    monkeypatch.setattr(host, "_applied", None)


class _Applied(Exception):
    """Raised by the stand-in policy: the caller reached it."""


def test_every_command_and_every_training_run_applies_the_policy(monkeypatch, tmp_path, capsys):
    """The policy works only where it is called: `dhanalysis` applies it before running any command, and a training
    run before its first step (a library caller who never goes through the command line)."""
    import dhanalysis.cli as cli
    import dhanalysis.engine.train as train_module
    from helpers import tiny_config

    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append("cli") or True)
    assert cli.main(["variants"]) == 0 and calls == ["cli"]
    capsys.readouterr()

    def reached():
        raise _Applied

    monkeypatch.setattr(train_module, "retain_freed_memory", reached)
    with pytest.raises(_Applied):
        train_module.train(tiny_config("single-fc", f"data.root={tmp_path / 'none'}"), tmp_path / "run")
