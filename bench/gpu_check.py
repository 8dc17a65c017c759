"""``python -m bench.gpu_check`` (``make gpu-check``): the GPU check as one command.

Runs the test suite's ``cuda``-marked tests (tests/test_cuda.py) on the GPU, then the benchmark on CUDA
(``python -m bench --device cuda --json bench-cuda.json``). Where torch sees no CUDA device it prints one line and
exits 2: asking for the GPU check on a machine without one is an error, not a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("no GPU present: make gpu-check needs a CUDA device visible to torch (torch.cuda.is_available() is "
              "False)", file=sys.stderr)
        return 2
    env = dict(os.environ, DHANALYSIS_REQUIRE_CUDA="1")
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"], env=env)
    if tests.returncode:
        return tests.returncode
    return subprocess.run([sys.executable, "-m", "bench", "--device", "cuda", "--json", "bench-cuda.json"],
                          env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
