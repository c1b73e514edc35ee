"""Splitting an evaluation over processes, and meeting again afterwards, without a process group.

Each process of a ``torchrun`` / ``srun`` / Lightning launch reads its rank from the environment,
generates its own share of the layouts (``items[rank::world_size]``) into a shared folder and finishes
with a marker file. Rank 0 then waits until every expected image is on disk ("gathering by scanning
the folder"), so no ``torch.distributed`` set-up, NCCL timeout or shared memory is needed and a
crashed or restarted rank only costs its own images. A rank that fails writes a ``.failed`` marker
with its error, and rank 0 stops waiting with that message instead of hanging. Inside a running
process group (``torch.distributed`` initialised) a plain barrier is used instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# (rank, world size, local rank) variables, most specific launcher first.
_LAUNCHER_VARIABLES = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),  # torchrun, Lightning's DDP launcher
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),  # srun
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),  # mpirun
)


class ShardError(RuntimeError):
    """Another rank failed, or its images did not appear in time."""


@dataclass(frozen=True)
class Shard:
    """This process's place in the launch: ``rank`` of ``world_size``, GPU ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Shard:
        env = os.environ if environ is None else environ
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                local = int(env.get("LOCAL_RANK", env.get("SLURM_LOCALID", "0")))
                return cls(dist.get_rank(), dist.get_world_size(), local)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        for rank_var, world_var, local_var in _LAUNCHER_VARIABLES:
            if rank_var in env and world_var in env and int(env[world_var]) > 1:
                return cls(int(env[rank_var]), int(env[world_var]), int(env.get(local_var, "0")))
        return cls()

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"bad shard: rank {self.rank} of {self.world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's share: every ``world_size``-th item from position ``rank`` (balanced, order-free)."""
        return list(items[self.rank :: self.world_size])

    def device(self, requested: str = "auto") -> str:
        """``auto`` → this rank's GPU (``cuda:<local_rank>``) when there is one, else the CPU."""
        import torch

        if requested != "auto":
            return requested
        if torch.cuda.is_available():
            return f"cuda:{self.local_rank % max(1, torch.cuda.device_count())}"
        return "cpu"

    # -- markers -------------------------------------------------------------------------------------
    def marker(self, folder: Path, state: str, rank: int | None = None) -> Path:
        rank = self.rank if rank is None else rank
        return Path(folder) / f"rank-{rank:04d}-of-{self.world_size:04d}.{state}"

    def clear_markers(self, folder: Path) -> None:
        for state in ("done", "failed"):
            self.marker(folder, state).unlink(missing_ok=True)

    def mark(self, folder: Path, state: str, message: str = "") -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.marker(folder, state).write_text(message + "\n", encoding="utf-8")


def distributed_barrier() -> bool:
    """A barrier when a process group is running; False (nothing done) otherwise."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return False
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
        return True
    return False


def wait_for_files(
    paths: Sequence[Path],
    shard: Shard,
    marker_dir: Path,
    since: float,
    timeout_s: float | None = None,
    poll_s: float = 10.0,
    log=None,
) -> None:
    """Block until every path exists; raise when another rank wrote a ``.failed`` marker after ``since``
    (a ``time.time()``), or when ``timeout_s`` passes first (``None``: wait as long as it takes)."""
    pending = [Path(p) for p in paths if not Path(p).exists()]
    started = time.monotonic()
    last_report = started
    while pending:
        for rank in range(shard.world_size):
            failed = shard.marker(marker_dir, "failed", rank)
            if failed.exists() and failed.stat().st_mtime >= since - 1.0:
                reason = failed.read_text(encoding="utf-8").strip()
                raise ShardError(f"rank {rank} failed while generating its share: {reason or '(no message)'}")
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise ShardError(
                f"{len(pending)} images still missing after {timeout_s:.0f} s (e.g. {pending[0]}); "
                "did every rank run? Run the same command again to generate what is missing"
            )
        if log is not None and time.monotonic() - last_report > 300:
            log.info(f"waiting for the other ranks: {len(pending)} of {len(paths)} images still missing")
            last_report = time.monotonic()
        time.sleep(poll_s)
        pending = [p for p in pending if not p.exists()]
