"""Reptile (Nichol et al. 2018): move the initialization toward task-adapted weights.

For each task of a batch, train a copy of the weights for ``inner_steps`` steps of SGD or
Adam on the task's support set, giving ``phi_b`` (sample episodes with a larger
``k_shot`` for more training shots, as Nichol et al. do). The Reptile update is
``theta <- theta + epsilon * (mean_b phi_b - theta)``. :meth:`Reptile.meta_loss` returns
the surrogate ``0.5 * ||theta - mean_b phi_b||^2``, whose gradient is exactly
``theta - mean_b phi_b``: with plain SGD of learning rate ``epsilon`` as the outer
optimizer, ``loss.backward(); optimizer.step()`` is the Reptile update, and any other
outer optimizer (Adam, schedules) sees the Reptile direction as its gradient.

With ``proto_head=True`` every task's head starts from its support set's class means, as
Proto-MAML's does (:func:`~fewshot.learners.protonet.prototype_head`): training and
adaptation start where ProtoNet's prediction is, at any number of ways, and only the
backbone is meta-learned (the head belongs to the task, so it has no Reptile update).
``zero_head=True`` starts it from zero instead (Kao et al. 2022,
:func:`~fewshot.learners.functional.zero_head`): the first SGD step makes it a centred
class-mean head and leaves the backbone as it is; again only the backbone is meta-learned.

Every inner step trains on the whole support set unless ``step_shots`` is given: then each
step of meta-training takes ``step_shots`` images of every class, successive steps taking
successive images (:func:`step_minibatches`), so different steps see different images, as
Nichol et al.'s inner minibatches do. Their analysis credits Reptile's generalisation to
that: the update rewards gradients of *different* minibatches of a task that agree, a term
that is absent when every step sees the same batch. Adaptation (:meth:`Reptile.adapt`)
always uses the whole support set, as the other learners' does, so two runs that differ
only in ``step_shots`` are scored with the same rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewshot.data import Episode
from fewshot.learners.base import BatchPredictor, MetaLearner, Predictor
from fewshot.learners.functional import (
    Params,
    cross_entropy_and_accuracy,
    fit_head,
    forward,
    parameters,
    submodule_params,
    zero_head,
)
from fewshot.learners.protonet import prototype_head
from fewshot.learners.threads import adapt_each, map_tasks, replica, resolve, workers
from fewshot.models import Classifier, channels_last

_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


def step_minibatches(y: torch.Tensor, steps: int, shots: int) -> list[torch.Tensor]:
    """Indices into a support set with labels ``y`` for each of ``steps`` inner steps:
    ``shots`` images of every class per step, step ``t`` taking that class's images
    ``t * shots`` onward (from its first again after its last), so that successive steps see
    different images and every class is in every step.

    Raises:
        ValueError: a class has fewer than ``shots`` images.
    """
    per_class = [torch.nonzero(y == c).flatten() for c in range(int(y.max()) + 1)]
    fewest = min(len(idx) for idx in per_class)
    if fewest < shots:
        raise ValueError(
            f"step_shots={shots} but a class has only {fewest} support images; "
            "sample more shots or lower step_shots"
        )
    offsets = torch.arange(shots)
    return [torch.cat([idx[(t * shots + offsets) % len(idx)] for idx in per_class]) for t in range(steps)]


class Reptile(MetaLearner):
    """Reptile with an SGD or Adam inner loop.

    Args:
        model: the classifier whose parameters are the initialization.
        inner_lr, inner_steps, inner_optimizer: the per-task training (``"sgd"`` or ``"adam"``).
        test_steps, test_lr: inner steps and lr used by :meth:`adapt` (default: as in training).
        strategy: ``"loop"`` over tasks, ``"threads"`` (two tasks at a time on CPU threads,
            :mod:`fewshot.learners.threads`; the loop's numbers exactly), or ``"auto"``
            (threads on a CPU with more than one intra-op thread, else the loop).
        proto_head: start every task's head from its class means (see the module docstring).
        zero_head: start every task's head from zero (see the module docstring).
        step_shots: images per class in each inner step of meta-training (default: the
            whole support set; see the module docstring).

    Example:
        >>> reptile = Reptile(build_model("conv4", n_way=5), inner_lr=1e-3, inner_steps=5)
        >>> opt = torch.optim.SGD(reptile.parameters(), lr=1.0)   # lr = meta step size
        >>> loss, metrics = reptile.meta_loss(batch); loss.backward(); opt.step()
    """

    def __init__(
        self,
        model: Classifier,
        inner_lr: float = 1e-3,
        inner_steps: int = 5,
        inner_optimizer: str = "adam",
        test_steps: int | None = None,
        test_lr: float | None = None,
        strategy: str = "auto",
        proto_head: bool = False,
        zero_head: bool = False,
        step_shots: int | None = None,
    ):
        super().__init__()
        if proto_head and zero_head:
            raise ValueError("proto_head and zero_head are two starts for the head; pick one")
        if step_shots is not None and step_shots < 1:
            raise ValueError(f"step_shots must be >= 1 (or None for the whole support set), got {step_shots}")
        if strategy not in ("auto", "loop", "threads"):
            raise ValueError(f"strategy must be 'auto', 'loop' or 'threads', got {strategy!r}")
        if inner_optimizer not in _OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {sorted(_OPTIMIZERS)}, got {inner_optimizer!r}")
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
        self.model = model
        self.inner_lr, self.inner_steps, self.inner_optimizer = inner_lr, inner_steps, inner_optimizer
        self.test_steps = inner_steps if test_steps is None else test_steps
        self.test_lr = inner_lr if test_lr is None else test_lr
        self.strategy, self.proto_head, self.zero_head = strategy, proto_head, zero_head
        self.step_shots = step_shots

    def _workers(self) -> int:
        return workers(resolve(self.strategy, self.model, on_cuda="loop"))

    def train_on_task(
        self, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, step_shots: int | None = None
    ) -> Params:
        """Weights after ``steps`` optimizer steps of rate ``lr`` on ``(x, y)`` from the current
        initialization, each step on all of ``(x, y)`` or on ``step_shots`` images per class
        (:func:`step_minibatches`).

        Tasks with another number of ways than the head's start from :func:`fit_head`, or,
        with ``proto_head``, every task's head from its class means, with ``zero_head`` from zero.
        """
        n_way = int(y.max()) + 1
        start = fit_head(parameters(self.model), n_way)
        x = channels_last(x)
        if step_shots is None:
            batches = [(x, y)] * steps
        else:
            batches = [(channels_last(x[i]), y[i]) for i in step_minibatches(y, steps, step_shots)]
        if self.proto_head:
            with torch.no_grad():
                features = forward(replica(self.model).backbone, submodule_params(start, "backbone."), x)
            start = {**start, **prototype_head(features, y, n_way)}
        elif self.zero_head:
            start = zero_head(start)
        fast = {n: p.detach().clone().requires_grad_() for n, p in start.items()}
        opt = _OPTIMIZERS[self.inner_optimizer](fast.values(), lr=lr)
        with torch.enable_grad():
            for xb, yb in batches:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(forward(replica(self.model), fast, xb), yb).backward()
                opt.step()
        return {n: p.detach() for n, p in fast.items()}

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        params = parameters(self.model)
        task_head = self.proto_head or self.zero_head  # made per task: no Reptile update
        meta = [n for n in params if not (task_head and n.startswith("head."))]
        target = {n: torch.zeros_like(params[n]) for n in meta}
        b = len(batch.support_x)

        def task(i: int) -> tuple[Params, torch.Tensor]:
            sx, sy = batch.support_x[i], batch.support_y[i]
            phi = self.train_on_task(sx, sy, self.inner_steps, self.inner_lr, self.step_shots)
            with torch.no_grad():
                logits = forward(replica(self.model), phi, channels_last(batch.query_x[i]))
            return phi, cross_entropy_and_accuracy(logits, batch.query_y[i])[1]

        accs = []
        for phi, acc in map_tasks(task, self.model, b, self._workers()):  # summed in task order
            for n in target:
                target[n] += phi[n] / b
            accs.append(acc)
        loss = sum(0.5 * (params[n] - target[n]).pow(2).sum() for n in meta)
        return loss, {"loss": loss.detach(), "accuracy": torch.stack(accs).mean()}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        fast = self.train_on_task(support_x, support_y, self.test_steps, self.test_lr)

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return forward(replica(self.model), fast, channels_last(query_x))

        return predict

    def adapt_batch(self, support_x: torch.Tensor, support_y: torch.Tensor) -> BatchPredictor:
        """:meth:`adapt` on each episode, two at a time on CPU threads under ``"threads"``."""
        return adapt_each(self.adapt, self.model, support_x, support_y, self._workers())
