"""Data-parallel training across processes started by torchrun (one per GPU, or gloo on the CPU).

Every process takes its share of each global minibatch; DDP averages the gradients. The helpers
here are the only places processes talk to each other, and they are no-ops in a single process, so
the training loop reads the same either way.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .devices import resolve_device
from .errors import SatError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_size: int = 1  # processes on this node, which share its threads and memory
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, writes checkpoints and outputs."""
        return self.rank == 0

    def share(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """This process's rows of a global minibatch and the weight of its mean loss.

        With weight ``size * n_local / n_global``, DDP's average of the processes' gradients equals
        the gradient of the mean loss over the global batch. A process left without rows (a batch
        smaller than the world) computes on one row with weight 0, so that it still joins the reduction.
        """
        mine = rows[self.rank :: self.size]
        if len(mine) == 0:
            return rows[:1], 0.0
        return mine, self.size * len(mine) / len(rows)

    def sum(self, values: list[float]) -> list[float]:
        """Elementwise sum of ``values`` over the processes."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def merge(self, part: dict) -> dict:
        """The union of every process's dict."""
        if self.size == 1:
            return part
        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, part)
        return {k: v for p in parts for k, v in p.items()}

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def join(device: str, declared_gpus: int = 0) -> World:
    """This process's World: a process group under torchrun (nccl on CUDA, else gloo), else a world of one."""
    if not launched_by_torchrun():
        return World(device=resolve_device(device, declared_gpus))
    rank, size, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    dev = resolve_device(device, declared_gpus)
    if dev.type == "cuda":
        if torch.cuda.device_count() < local_size:
            raise SatError(
                f"{local_size} training processes on this node but {torch.cuda.device_count()} GPU(s) "
                "visible: start one process per GPU (torchrun --nproc_per_node)"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(hours=1))
    if rank != 0:  # one voice in the log: rank 0's
        logging.getLogger(__package__).setLevel(logging.WARNING)
    return World(rank, size, local_size, dev)


def leave(world: World) -> None:
    if launched_by_torchrun() and dist.is_initialized():
        dist.destroy_process_group()


def exec_torchrun(processes: int, argv: list[str], threads: int | None) -> None:
    """Replace this process by torchrun running this command as ``processes`` training processes.

    torchrun then receives the scheduler's signals itself and passes them on to every process.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        __package__,
        *argv,
    ]
    logging.getLogger(__name__).info("starting %d training processes: %s", processes, " ".join(command))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (threads or os.cpu_count() or 1) // processes)))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)
