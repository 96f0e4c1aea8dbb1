"""How often a gloo rank that has finished aborts as it exits, and whether vaezoo's exit avoids it.

    python benchmarks/gloo_exit_abort.py --pairs 40

Each pair is two CPU ranks in a gloo group: a DDP-wrapped linear layer takes 20 steps, then a barrier, as a
training run ends. "plain" ranks then call destroy_process_group and return, so Python shuts down as usual;
"vaezoo" ranks end with vaezoo.core.distributed.exit_leaving_process_group(0), as the vaezoo command does.
Under the plain exit gloo's threads, which outlive destroy_process_group once DDP has used the group, can
drop their last collective during the interpreter's shutdown, and the rank dies of SIGABRT ("terminate called
without an active exception"; pytorch/pytorch#179291). The modes alternate pair by pair, so the machine's
load falls on both alike. A race: small counts mean little, so ask for tens of pairs.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.multiprocessing import ProcessExitedException

sys.path.insert(0, str(Path(__file__).parent))
from common import positive_int, print_header  # noqa: E402

from vaezoo.core.distributed import exit_leaving_process_group  # noqa: E402

MODES = ("plain", "vaezoo")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, port: int, mode: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64))
    for _ in range(20):
        model(torch.randn(8, 64)).sum().backward()
    dist.barrier()
    if mode == "vaezoo":
        exit_leaving_process_group(0)
    dist.destroy_process_group()


def pair_aborted(mode: str) -> bool:
    """Run one pair of ranks ending as ``mode`` says; True when a rank died of SIGABRT (any other failure raises)."""
    try:
        torch.multiprocessing.spawn(_rank, args=(_free_port(), mode), nprocs=2, join=True)
    except ProcessExitedException as error:
        if error.signal_name == "SIGABRT":
            return True
        raise
    return False


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=positive_int, default=40, help="pairs of ranks per mode")
    args = parser.parse_args(argv)
    print_header("gloo ranks aborting at exit")
    aborted = dict.fromkeys(MODES, 0)
    for _ in range(args.pairs):
        for mode in MODES:
            aborted[mode] += pair_aborted(mode)
    print(f"{'exit':<8} {'pairs':>6} {'aborted':>8}")
    for mode in MODES:
        print(f"{mode:<8} {args.pairs:6d} {aborted[mode]:8d}")
    return aborted


if __name__ == "__main__":
    main()
