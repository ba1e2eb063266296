"""Data-parallel training and evaluation under ``torchrun``, on PyTorch's own process groups.

``torchrun --nproc_per_node=N -m fewshot.train maml ...`` starts N processes; each calls
:func:`init`, which joins the group that torchrun's environment describes (NCCL on CUDA, gloo
on CPU; one process without torchrun is a group of one and needs nothing). Every process
holds the whole model. Each takes a contiguous share of the meta-batch (:func:`share`),
back-propagates its tasks through its own functional inner loops, and the outer gradients are
then all-reduced, weighted by share (:func:`reduce_gradients`): the sum over processes is the
gradient of the mean over the whole meta-batch, so N processes take exactly the step one
process would (to float rounding). An explicit all-reduce, not DistributedDataParallel: the
inner loops run functional copies of the parameters, outside any DDP forward.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """This process's place in the group: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0, the one process that logs, validates and writes files."""
        return self.rank == 0


def init(device: torch.device) -> tuple[Context, torch.device]:
    """Join torchrun's process group if this process was started by torchrun.

    Returns the context and the device to use (CUDA: this process's local GPU).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Context(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Context(dist.get_rank(), dist.get_world_size()), device


def current() -> Context:
    """The context of an already-joined group (a group of one when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size())
    return Context()


def share(n: int, ctx: Context) -> range:
    """This process's contiguous share of ``range(n)`` (shares differ in size by at most one)."""
    return range(n * ctx.rank // ctx.world, n * (ctx.rank + 1) // ctx.world)


def broadcast_object(obj: Any, ctx: Context) -> Any:
    """Rank 0's ``obj`` on every process."""
    if ctx.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_parameters(params: Iterable[torch.Tensor], ctx: Context) -> None:
    """Copy rank 0's values into every process's tensors (identical starts, whatever the seeds)."""
    if ctx.world > 1:
        for p in params:
            dist.broadcast(p.data, src=0)


def _all_reduce_flat(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` over processes in place, in one collective call."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(part.view_as(t))


def reduce_gradients(params: Iterable[torch.nn.Parameter], weight: float, ctx: Context) -> None:
    """``grad <- sum over processes of weight * grad``; ``weight`` is this process's share of
    the batch (local items / global items), so a mean over the local share becomes the mean
    over the whole batch. Parameters without a gradient count as zero."""
    if ctx.world == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad.mul_(weight) for p in params]
    _all_reduce_flat(grads)


def reduce_metrics(metrics: dict[str, torch.Tensor], weight: float, ctx: Context) -> dict[str, torch.Tensor]:
    """Metrics averaged over the whole batch (each process's weighted by its share)."""
    if ctx.world == 1:
        return metrics
    values = [v.detach().float().reshape(1) * weight for v in metrics.values()]
    _all_reduce_flat(values)
    return {k: v[0] for k, v in zip(metrics, values, strict=True)}


def gather_objects(obj: Any, ctx: Context) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if ctx.world == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def close(ctx: Context) -> None:
    """Leave the group (after the last collective call), all processes together.

    The barrier keeps a process that has finished from tearing down its connections while
    rank 0 still writes the report: a Gloo peer that leaves early can abort the other
    ("terminate called without an active exception").
    """
    if ctx.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
