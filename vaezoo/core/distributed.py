"""Devices and data parallelism: which device a name means, and torch.distributed under torchrun (a no-op alone).

    torchrun --nproc_per_node 4 -m vaezoo.cli train hvae --data fashion-mnist --out runs/hvae
"""
from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from vaezoo.errors import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def exit_leaving_process_group(code: int | None) -> None:
    """End this process at once with exit ``code`` if it is in a torch.distributed process group; else do nothing.

    The command line calls it as it exits under torchrun. Gloo's worker threads outlive
    ``destroy_process_group`` once DDP has used the group, still holding their last collective, whose
    thread-local state holds Python objects. If a thread drops it while the interpreter shuts down, taking
    the GIL ends that thread and std::terminate aborts the process (SIGABRT, "terminate called without an
    active exception") after a run that finished and wrote everything: the bug pytorch/pytorch#179291
    describes; benchmarks/gloo_exit_abort.py counts it (8 of 40 two-rank pairs on a 2-core CPU, none of 40
    through this function). Skipping the interpreter's shutdown avoids it; the standard streams and the log
    handlers are flushed first, and nothing vaezoo writes waits for exit. After an error the group is left as
    it is: a peer may still be inside a collective.

    >>> exit_leaving_process_group(0)  # alone, not under torchrun: returns, and the process exits as usual
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not code:  # on success the ranks have passed training's last barrier; after an error a peer may
        dist.destroy_process_group()  # still be inside a collective, which destroying the group can hang
    exit_now(0 if code is None else code)


def exit_now(code: int) -> NoReturn:
    """End this process with exit ``code`` without the interpreter's shutdown, once the log handlers and the
    standard streams are flushed: for a process whose gloo threads may still run after its process group was
    destroyed (see exit_leaving_process_group)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or its reader has gone: the exit code still says how it ended
            pass
    os._exit(code)


def all_reduce_mean(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= context.world_size
    return tensor


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place when running under torch.distributed; a no-op otherwise.

    For statistics a model gathers inside ``forward`` (a VQ codebook's EMA counts, say), so that every
    rank applies the same update.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main_(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank 0's copy; a no-op in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor


DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?|mps")


def check_device_name(name: object) -> str:
    """``name`` if it has the form of a device vaezoo runs on (auto, cpu, cuda, cuda:N, mps), else ConfigError."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"device={name!r} is unknown; use {DEVICE_NAMES} (this machine has {', '.join(available_devices())})")
    return name


def available_devices() -> list[str]:
    """The devices this machine can run on, e.g. ``["cpu", "cuda:0", "cuda:1"]`` or ``["cpu", "mps"]``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    return devices


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` means here: ``auto`` is the first CUDA GPU if there is one, else the CPU
    (Apple's ``mps`` is used only when asked for). A device this machine lacks is a ConfigError naming
    the ones it has.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = available_devices()
    if name not in available and not (name == "cuda" and torch.cuda.is_available()):
        raise ConfigError(f"device {name!r} is not available here; this machine has {', '.join(available)}: "
                          "pass one of those to --device, or auto")
    return torch.device(name)
