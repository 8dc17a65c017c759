"""One-process or torchrun: the small set of distributed helpers the engine and the analyses share.

Under ``torchrun`` the environment carries RANK, WORLD_SIZE and LOCAL_RANK; we initialise NCCL on GPUs and gloo on
CPUs. Without it everything degrades to a single process, so the same code runs on a laptop and on a cluster.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
import torch.distributed as dist

from dhanalysis.errors import DeviceUnavailable, DHError


def init_distributed(device: str = "cpu") -> None:
    """Join the process group torchrun describes (no-op when not launched by torchrun or already joined)."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest ``value`` any rank holds (``value`` itself in a single process): how ranks agree on a request
    that reached only some of them, so that all enter the same collective (a checkpoint) at the same iteration."""
    if not dist.is_initialized():
        return value
    flag = torch.tensor([value], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def resolve_device(name: str | None) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; None picks CUDA when present. Asking for CUDA without a GPU is a DHError."""
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if name != "cuda" and not re.fullmatch(r"cuda:\d+", name):
            raise DHError(f"unknown device '{name}'; use cpu, cuda or cuda:N with N a GPU index")
        if not torch.cuda.is_available():
            raise DeviceUnavailable(name, f"device '{name}' was asked for but no CUDA GPU is visible; use 'cpu'")
        if name == "cuda" and dist.is_initialized():
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    elif name != "cpu":
        raise DHError(f"unknown device '{name}'; use cpu, cuda or cuda:N")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 matmuls are emulated."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        try:
            flags = open("/proc/cpuinfo").read()
        except OSError:
            return True
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False
