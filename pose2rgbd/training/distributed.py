"""Multi-process training under ``torchrun`` (data parallel: one process per GPU, or several CPU processes).

``torchrun`` starts N copies of ``pose2rgbd train`` and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each; :func:`init_from_env` reads them and joins the process group (NCCL
when the process trains on a CUDA device, else gloo). Nothing changes for a plain ``python`` run (world size 1).

How the gradients are shared: every optimizer of the model gets a step pre-hook
(:func:`average_gradients_before_step`) that averages the gradients of *its* parameters over all processes (one
coalesced all-reduce) just before it steps. That is what ``DistributedDataParallel`` does, but at the point
where the model's own ``train_step`` updates a group, so it works unchanged for models with a custom update
order and several optimizers (a GAN's discriminator and generator steps each average only their own group's
gradients), where wrapping one module in DDP would not see the networks' separate forward / backward passes.
It does not overlap the communication with the backward pass (DDP's buckets do): on many GPUs a large model
pays the all-reduce time once per step. Loss terms are per-sample means, so averaging over N processes of
batch B/N gives the gradient of batch B.

BatchNorm layers normalize with each process's own batch of B/N (like DDP without ``SyncBatchNorm``); their
running statistics are recomputed on rank 0 (precise BN) before each validation and checkpoint, so the saved
model does not depend on the split. The weights are broadcast from rank 0 when training starts.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def env_world() -> DistInfo | None:
    """The torchrun settings of this process (``None`` when it was not started by torchrun or alike)."""
    if not all(k in os.environ for k in ENV_KEYS):
        return None
    try:
        rank, world, local = (int(os.environ[k]) for k in ENV_KEYS)
    except ValueError as e:
        raise RuntimeError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e}); start with torchrun") from e
    return DistInfo(rank, world, local)


def current() -> DistInfo:
    """This process's place in an initialized process group (``SINGLE`` when there is none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))


def init_from_env(device: str = "auto", *, timeout_s: float = 1800.0) -> tuple[DistInfo, bool]:
    """Join the process group torchrun describes, if any; returns ``(info, initialized_here)``.

    ``device``: the training device setting (``TrainConfig.device``): NCCL when it resolves to CUDA (each process
    then uses GPU ``LOCAL_RANK``), else gloo. An already initialized group is used as it is.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return current(), False
    env = env_world()
    if env is None or env.world_size <= 1:
        return SINGLE, False
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed: multi-process training is not possible")
    cuda = (torch.cuda.is_available() and device == "auto") or device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    info = DistInfo(env.rank, env.world_size, env.local_rank, backend)
    log.info("process %d of %d (local rank %d, %s)", info.rank, info.world_size, info.local_rank, backend)
    return info, True


def destroy(*, barrier: bool = False) -> None:
    """Leave the process group. ``barrier``: first wait until every rank has come here (after a run that ended
    normally; not after an error, where another rank may never come). A rank that tears its group down while the
    others' last messages are still on the way can make another process abort at its exit (gloo: "terminate called
    without an active exception", SIGABRT): 5 of 22 runs of test/test_ddp.py's two processes without the barrier,
    none of 52 with it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def _control_group() -> Any:
    """A gloo group for small CPU messages (stop flags), so they never wait on a GPU stream."""
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None  # the default group
    global _CONTROL
    if _CONTROL is None:
        _CONTROL = dist.new_group(backend="gloo")
    return _CONTROL


_CONTROL: Any = None


def broadcast_flag(value: bool) -> bool:
    """Rank 0's ``value`` on every rank (a no-op without a process group)."""
    import torch.distributed as dist

    if not current().enabled:
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int32)
    dist.broadcast(t, src=0, group=_control_group())
    return bool(t.item())


def barrier() -> None:
    import torch.distributed as dist

    if current().enabled:
        dist.barrier(group=_control_group())


@torch.no_grad()
def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank."""
    import torch.distributed as dist

    if not current().enabled:
        return
    for t in module.state_dict().values():
        if torch.is_tensor(t) and t.numel():
            dist.broadcast(t, src=0)


@torch.no_grad()
def all_reduce_mean(tensors: Iterable[torch.Tensor]) -> None:
    """Average ``tensors`` in place over all processes, with one all-reduce per dtype and device."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    world = dist.get_world_size()
    by_kind: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        by_kind.setdefault((t.dtype, t.device), []).append(t)
    for ts in by_kind.values():
        flat = _flatten_dense_tensors(ts)
        dist.all_reduce(flat)
        flat.div_(world)
        for t, avg in zip(ts, _unflatten_dense_tensors(flat, ts)):
            t.copy_(avg)


def average_gradients_before_step(optimizer: torch.optim.Optimizer) -> Any:
    """Register a step pre-hook on ``optimizer`` that averages its parameters' gradients over all processes.

    A parameter without a gradient on every process is left without one; one that has a gradient on some
    processes only gets the average with zeros elsewhere (all processes then hold the same gradient).
    Returns the hook handle.
    """
    import torch.distributed as dist

    params = [p for g in optimizer.param_groups for p in g["params"]]

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not current().enabled:
            return
        dev = params[0].device
        has = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=dev)
        dist.all_reduce(has)
        grads = []
        for p, n in zip(params, has.tolist()):
            if n == 0:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        if grads:
            all_reduce_mean(grads)

    return optimizer.register_step_pre_hook(hook)
