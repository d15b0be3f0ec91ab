"""Distributed (DDP) helpers: torchrun detection, the process group, and gathering results.

graphsmile trains in one of two modes, picked from the environment:

* **plain**: one process (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``);
* **torchrun**: ``torchrun --nproc_per_node K -m graphsmile train ...`` (or
  ``python -m torch.distributed.run ...``) sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT``; every process then joins one process group (NCCL when it
  trains on a CUDA device, gloo on the CPU) with ``init_method="env://"``. Nothing is spawned
  here and no port is picked: torchrun owns that (``--standalone`` for one machine).

On CUDA each process uses ``cuda:LOCAL_RANK``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.distributed as dist

__all__ = ["DistContext", "torchrun_env", "init_distributed", "resolve_device"]


def torchrun_env() -> Optional[Tuple[int, int, int]]:
    """``(world_size, rank, local_rank)`` when launched by torchrun with ``WORLD_SIZE > 1``,
    else ``None``. Raises ``ValueError`` for inconsistent variables."""
    ws = os.environ.get("WORLD_SIZE")
    if ws is None:
        return None
    try:
        world = int(ws)
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"bad torchrun environment (WORLD_SIZE/RANK/LOCAL_RANK): {e}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"bad torchrun environment: WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local}")
    if world == 1:
        return None
    return world, rank, local


def resolve_device(spec: str = "auto", local_rank: int = 0, distributed: bool = False) -> torch.device:
    """The training device for ``--device spec`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    ``auto``: ``cuda`` when available, else ``cpu``. Under torchrun a CUDA device is always
    ``cuda:LOCAL_RANK`` (an explicit index is overridden with a warning).
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        if distributed:
            if dev.index is not None and dev.index != local_rank:
                warnings.warn(f"--device {spec} ignored under torchrun: rank uses cuda:{local_rank} (LOCAL_RANK)")
            dev = torch.device("cuda", local_rank)
        elif dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {dev} does not exist ({torch.cuda.device_count()} CUDA device(s))")
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    return dev


@dataclass
class DistContext:
    """Where this process stands: ``world_size`` processes, this one is ``rank``
    (``local_rank`` on its machine). ``world_size == 1``: no process group, every collective
    is the identity."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: Optional[str] = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, writes files and checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_gather_object(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` of rank ``src`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over ranks, in place (``t`` must live on the collective's device)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on some rank (so that every rank takes the same branch)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        """Destroys the process group if this context created it."""
        if self.owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False


def init_distributed(device_spec: str = "auto") -> Tuple[DistContext, torch.device]:
    """Detects torchrun, joins the process group when there is one, resolves the device.

    Returns ``(ctx, device)``. In a single process ``ctx.world_size == 1`` and no process group
    is created. Under torchrun the backend is NCCL when the device is CUDA, gloo otherwise
    (override with ``GRAPHSMILE_DIST_BACKEND``).
    """
    env = torchrun_env()
    if env is None:
        return DistContext(), resolve_device(device_spec)
    world, rank, local = env
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this torch build")
    device = resolve_device(device_spec, local_rank=local, distributed=True)
    backend = os.environ.get("GRAPHSMILE_DIST_BACKEND") or ("nccl" if device.type == "cuda" else "gloo")
    owns = False
    if not dist.is_initialized():
        kw = {}
        if backend == "nccl":
            kw["device_id"] = device
        dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank, **kw)
        owns = True
    return DistContext(world_size=world, rank=rank, local_rank=local, backend=backend, owns_group=owns), device
