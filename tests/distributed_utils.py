"""Test helper: run a function in several spawned CPU processes and collect what each wrote."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import torch
from torch import multiprocessing as mp


def spawned_ranks(worker: Callable[[int, int, str], None], output: Path, world: int) -> list[dict]:
    """Spawn ``world`` processes running ``worker(rank, port, output)``; load each ``output/rank<r>.pt``.

    The port is a free local one for the workers' process group (spawned, not forked: a forked child
    of a process that already ran autograd fails).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(worker, args=(port, str(output)), nprocs=world, start_method="spawn")
    return [torch.load(output / f"rank{rank}.pt", weights_only=True) for rank in range(world)]
