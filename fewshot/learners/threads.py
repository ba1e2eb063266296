"""Two tasks at a time on CPU threads: the ``"threads"`` strategy of MAML and Reptile.

The tasks of a meta-batch are independent, and on a CPU much of each task's time goes to
work that leaves cores idle: Python and dispatch overhead, and element-wise kernels on
tensors too small to split across threads. Running two tasks side by side, each with the
process's usual intra-op threads, lets one task's convolutions use the cores while the
other does that serial work (``benchmarks/meta_step.py`` measures it). Every kernel runs
with the same thread count as in the plain loop, so the numbers are the loop's exactly.

Two things make it safe and reproducible:

* :func:`torch.func.functional_call` and
  :func:`~fewshot.learners.functional.batch_statistics` swap tensors and flags on the
  module while a forward pass runs, so two threads must not share a module. Each worker
  runs its task on a private copy (:func:`replica`); parameters still come from the
  caller's dict, so gradients reach the original tensors.
* :func:`map_tasks` yields results in task order, whatever thread finishes first, so a
  sum over tasks is the same on every run.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")

TASK_WORKERS = 2  # tasks in flight: one computes while the other does serial work
_local = threading.local()  # in a worker, during a task: the module in use and its copy
_pools: dict[int, ThreadPoolExecutor] = {}
_copies: weakref.WeakKeyDictionary[nn.Module, list[nn.Module]] = weakref.WeakKeyDictionary()


def replica(module: nn.Module) -> nn.Module:
    """``module``, or, inside a task run by :func:`map_tasks` on it, this worker's own copy."""
    return _local.copy if getattr(_local, "module", None) is module else module


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, created once and kept."""
    if workers not in _pools:
        _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="fewshot-task")
    return _pools[workers]


def _where(p: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    return p.device, p.dtype


def map_tasks(fn: Callable[[int], T], module: nn.Module, n: int, workers: int) -> Iterator[T]:
    """``fn(0), ..., fn(n - 1)``, run on ``workers`` threads, yielded in that order.

    While ``fn`` runs, :func:`replica` of ``module`` is a copy of it that no other
    thread uses, and grad mode and autocast are the caller's. With ``workers <= 1`` the calls run here,
    one after another.
    """
    if workers <= 1:
        yield from map(fn, range(n))
        return
    copies = _copies.setdefault(module, [])
    if copies and _where(next(copies[0].parameters())) != _where(next(module.parameters())):
        copies.clear()  # the module moved or changed dtype: the copies' buffers would be stale
    while len(copies) < workers:
        copies.append(copy.deepcopy(module).requires_grad_(False))
    free: queue.SimpleQueue[nn.Module] = queue.SimpleQueue()
    for c in copies[:workers]:
        free.put(c.train(module.training))

    # Grad mode and autocast are thread-local: the caller's, entered again in every worker.
    grad_enabled = torch.is_grad_enabled()
    autocast = [(d, torch.get_autocast_dtype(d)) for d in ("cpu", "cuda") if torch.is_autocast_enabled(d)]

    def run(i: int) -> T:
        own = free.get()
        _local.module, _local.copy = module, own
        try:
            with contextlib.ExitStack() as modes:
                modes.enter_context(torch.set_grad_enabled(grad_enabled))
                for device_type, dtype in autocast:
                    modes.enter_context(torch.autocast(device_type, dtype=dtype))
                return fn(i)
        finally:
            _local.module = _local.copy = None
            free.put(own)

    yield from _pool(workers).map(run, range(n))


def resolve(strategy: str, module: nn.Module, on_cuda: str) -> str:
    """The strategy in use: ``strategy``, with ``"auto"`` resolved for ``module``'s device.

    ``"auto"`` is ``on_cuda`` on a GPU; on a CPU it is threads when torch has more than one
    intra-op thread to share between the two tasks, else the plain loop.
    """
    if strategy != "auto":
        return strategy
    if next(module.parameters()).device.type == "cuda":
        return on_cuda
    return "threads" if torch.get_num_threads() > 1 else "loop"


def workers(strategy: str) -> int:
    """Tasks in flight under a resolved ``strategy``: :data:`TASK_WORKERS` for threads, else one."""
    return TASK_WORKERS if strategy == "threads" else 1


def adapt_each(
    adapt: Callable[[torch.Tensor, torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
    module: nn.Module,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    workers: int,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``adapt_batch`` from a per-episode ``adapt``: episodes adapted, then scored, on
    ``workers`` threads (:func:`map_tasks`); the logits of ``adapt`` on each episode alone."""
    predictors = list(map_tasks(lambda i: adapt(support_x[i], support_y[i]), module, len(support_x), workers))

    def predict(query_x: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            list(map_tasks(lambda i: predictors[i](query_x[i]), module, len(query_x), workers))
        )

    return predict
