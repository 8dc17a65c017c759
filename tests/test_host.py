"""The host memory policy (engine/host.py): a training step's freed activations are reused without faulting their
pages in again."""

from __future__ import annotations

import json
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


def steady_faults(retain: bool, steps: str = STEPS) -> tuple[str, int]:
    """Whether the policy took effect, and the page faults of the steady steps of ``steps`` (`STEPS`: the middle two
    of the last four of eight identical small training steps; the retained heap fragments now and then, so one step
    of a few may fault its pages again), in a fresh process."""
    out = subprocess.run([sys.executable, "-c", steps, "1" if retain else "0"], capture_output=True, text=True,
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


LARGE_STEPS = """
import resource, sys, torch
from dhanalysis.engine.host import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "1" else False
x = torch.ones(64, 1024, 1024)  # 256 MiB, one map of a large conv-head's training step
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    live = [x + 1.0 for _ in range(10)]  # 2.5 GiB alive at once, then freed: more than a C int's trim threshold
    del live
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sorted(faults[-3:])[1])  # the median of the last three
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.skipif(huge_pages_always(), reason="transparent huge pages always on: few page faults either way")
def test_steps_holding_more_than_two_gib_reuse_their_memory_too():
    """A step that keeps more than 2 GiB of maps alive (the mmdetection-sized conv-head keeps some 6 GB) is reused
    whole: a trim threshold, which mallopt takes as a C int, would give back all but 2 GiB of it at every step and
    fault it in again (524,000 faults per step here, 655,000 with no policy at all), so the policy turns the trim
    off."""
    applied, retained = steady_faults(True, LARGE_STEPS)
    _, default = steady_faults(False, LARGE_STEPS)
    assert applied == "True"
    assert default > 300_000 and retained * 20 < default


def test_a_user_tuned_malloc_is_left_alone(monkeypatch):
    import dhanalysis.engine.host as host

    monkeypatch.setattr(host, "_applied", None)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert host.retain_freed_memory() is False
    monkeypatch.setattr(host, "_applied", None)


ENTRY = """
import json, resource, sys, torch
import dhanalysis.engine.host as host
from dhanalysis.cli import main
from dhanalysis.engine.train import train, train_together

entry, work = sys.argv[1], sys.argv[2]
if entry == "cli":
    assert main(["variants"]) == 0
elif entry in ("train", "train_together"):
    from dhanalysis.config import load_config, preset_path
    from dhanalysis.data.synth import make_synth_dataset
    make_synth_dataset(work + "/data", num_train=2, num_val=1, image_size=64, seed=0)
    cfg = load_config(preset_path("synth/single-fc.yaml"), json.loads(sys.argv[3]) + [
        f"data.root={work}/data", "data.num_workers=0", "model.num_classes=0", "train.iterations=1",
        "train.ims_per_batch=1",
        "train.warmup_iters=0", "train.steps=[]"])
    if entry == "train":
        train(cfg, work + "/run", progress=False)
    else:
        train_together([cfg], [work + "/run"], progress=False)
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(4096, 2048)  # 32 MiB, every page written
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(host._applied, sorted(faults[-3:])[1])  # the median of the last three
"""


def policy_after(entry: str, work) -> tuple[str, int]:
    """In a fresh process, after running ``entry`` ("none": the package imported, nothing run): the policy's
    recorded answer and the page faults of allocating a freed 32 MiB tensor again."""
    from helpers import ROOT, TINY

    out = subprocess.run([sys.executable, "-c", ENTRY, entry, str(work), json.dumps(TINY)], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, cwd=work)
    assert out.returncode == 0, out.stderr[-3000:]
    applied, faults = out.stdout.split()[-2:]
    return applied, int(faults)


@pytest.fixture(scope="module")
def untouched(tmp_path_factory) -> tuple[str, int]:
    return policy_after("none", tmp_path_factory.mktemp("untouched"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("entry", ["cli", "train", "train_together"])
def test_the_command_line_and_the_training_functions_put_the_policy_in_effect(entry, untouched, tmp_path):
    """The policy works only where it is called: `dhanalysis` applies it before running any command, and `train` /
    `train_together` before training (a notebook that never goes through the command line). Checked in the process
    itself after the entry point ran: the policy answered, and a freed 32 MiB block comes back without faulting its
    8,192 pages in again, where merely importing the package leaves malloc's default."""
    applied, faults = policy_after(entry, tmp_path)
    assert applied == "True"
    before, default = untouched
    assert before == "None"
    if not huge_pages_always():
        assert default > 4_000 and faults * 3 < default


