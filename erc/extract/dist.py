"""Several processes on one extraction: the ranks of ``torchrun`` (torch.distributed).

``torchrun --nproc-per-node N [--nnodes M ...] --no-python erc extract ...`` starts N processes per
node with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. Each rank encodes its share of the
batch plan and writes shards into the one journal (a folder every node must see: a shared
filesystem); rank 0 holds the cache's lock, opens the journal, and commits each group after a
barrier. The ranks exchange only small Python objects (decisions, errors), never tensors, so
they coordinate over gloo whatever the device; on CUDA each rank uses GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar

from erc.errors import UserError

T = TypeVar("T")
TIMEOUT = timedelta(hours=24)  # a barrier waits this long for the slowest rank


class FollowerStop(SystemExit):
    """A rank other than 0 stops because rank 0 failed (and already said why)."""


@dataclass
class Ranks:
    """This process's place among the extraction's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as td

        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def lead(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and give its (picklable) result to every rank. When it fails, rank
        0 raises the error and the other ranks stop quietly (exit 2 for a UserError, else 1)."""
        if self.world == 1:
            return fn()
        result: Any = None
        error: tuple[bool, str] | None = None
        failure: BaseException | None = None
        if self.leader:
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised below, after telling the others
                failure, error = e, (isinstance(e, UserError), f"{type(e).__name__}: {e}")
        result, error = self.broadcast((result, error))
        if failure is not None:
            raise failure
        if error is not None:
            raise FollowerStop(2 if error[0] else 1)
        return result

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as td

            td.destroy_process_group()
            self.owns_group = False


def from_env() -> Ranks:
    """The ranks torchrun describes in the environment (a process group over gloo is started
    here when there are several), or rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks()
    import torch.distributed as td

    owns = False
    if not td.is_initialized():
        td.init_process_group("gloo", timeout=TIMEOUT)
        owns = True
    return Ranks(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def rank_device(ranks: Ranks, device: str) -> str:
    """``device`` (resolved by :func:`erc.device.resolve_device`) for this rank: under torchrun on
    CUDA, GPU ``LOCAL_RANK`` becomes the current device, so that "cuda" means this rank's GPU (a
    fixed ``cuda:N`` would put every rank on one GPU: refused)."""
    if not device.startswith("cuda") or ranks.world == 1:
        return device
    if device != "cuda":
        raise UserError(f"--device {device} under torchrun: each rank takes GPU LOCAL_RANK; use --device cuda")
    import torch

    count = torch.cuda.device_count()
    if ranks.local_rank >= count:
        raise UserError(f"rank {ranks.rank} has LOCAL_RANK {ranks.local_rank}, but this node has {count} GPU(s); "
                        "start at most one process per GPU (torchrun --nproc-per-node <= GPUs)")
    torch.cuda.set_device(ranks.local_rank)
    return device


def device_name(device: str) -> str:
    """What a rank runs on, for the cache's provenance (``cpu``, ``cuda:1 NVIDIA ...``)."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch

    i = torch.device(device).index if device != "cuda" else torch.cuda.current_device()
    return f"cuda:{i} {torch.cuda.get_device_name(i)}"
