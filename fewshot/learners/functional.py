"""The functional core of the gradient-based learners.

Parameters are plain ``{name: tensor}`` dicts and the network is called with
:func:`torch.func.functional_call`, so an inner loop produces new tensors that stay in
the autograd graph of the initialization (second-order MAML) and never writes to the
module.

BatchNorm, on purpose: inside :func:`forward` every BatchNorm layer normalises with the
statistics of the batch it is given (each task's support set, then its query set, as in
Finn et al.'s MAML) and neither reads nor updates running statistics. Inner steps
therefore cannot corrupt the meta-model's running statistics, and the forward pass is a
pure function, as :func:`torch.func.grad` and :func:`torch.vmap` require. At test time
:class:`SupportStatistics` can instead normalise queries by statistics recorded on the
support set.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
LearningRate = float | torch.Tensor | Callable[[str], float | torch.Tensor]


def parameters(module: nn.Module) -> Params:
    """The module's parameters as a dict (the tensors themselves, no copies)."""
    return dict(module.named_parameters())


def submodule_params(params: Params, prefix: str) -> Params:
    """The entries of ``params`` under ``prefix`` (e.g. ``"backbone."``), named as in that submodule."""
    return {n[len(prefix) :]: p for n, p in params.items() if n.startswith(prefix)}


def _composite_batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch-statistics normalisation from elementary ops.

    Equal to ``F.batch_norm(x, None, None, w, b, training=True)``, but its second
    derivative is also right under :func:`torch.vmap`, where the fused kernel's is not
    (torch 2.14: second-order MAML gradients off by ~0.3% with BatchNorm; see
    tests/test_learners.py::test_vmap_equals_loop).
    """
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + norm.eps)
    if norm.affine:
        y = y * norm.weight.view(shape) + norm.bias.view(shape)
    return y


def _norm_layers(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def _forwards_replaced(
    module: nn.Module, make: Callable[[str, nn.modules.batchnorm._BatchNorm], Callable] | None
) -> Iterator[None]:
    """Within the block, each BatchNorm layer ``m`` (named ``n`` in ``module``) runs
    ``make(n, m)`` instead of its forward, and uses batch statistics; a forward replaced
    by an enclosing block (``make=None`` keeps it) is restored on the way out."""
    norms = _norm_layers(module)
    saved = [(m.training, m.track_running_stats, m.__dict__.get("forward")) for _, m in norms]
    for n, m in norms:
        m.training, m.track_running_stats = True, False
        if make is not None:
            m.forward = make(n, m)
    try:
        yield
    finally:
        for (_, m), (training, track, replaced) in zip(norms, saved, strict=True):
            m.training, m.track_running_stats = training, track
            m.__dict__.pop("forward", None)
            if replaced is not None:
                m.forward = replaced


def batch_statistics(module: nn.Module, composite: bool = False) -> AbstractContextManager:
    """Within the block, BatchNorm layers of ``module`` use batch statistics only.

    ``composite=True`` also swaps in :func:`_composite_batch_norm` (for :func:`torch.vmap`);
    without it, inside a :class:`SupportStatistics` block, that block's normalisation stays.
    """
    return _forwards_replaced(
        module, (lambda _, m: functools.partial(_composite_batch_norm, m)) if composite else None
    )


class SupportStatistics:
    """BatchNorm statistics recorded on one batch, a task's support set, and used for others.

    MetaBN (Bronskill et al. 2020): at test time every query is normalised by the support
    set's mean and variance, layer by layer, instead of by its own batch's (transductive:
    a query's prediction then depends on the other queries) or by the running statistics
    of training (which know nothing of the task). Each query is still classified on its
    own. Statistics are kept by layer name, so a copy of the module (a task thread's
    :func:`~fewshot.learners.threads.replica`) can use what the original recorded.

    Example:
        >>> stats = SupportStatistics()
        >>> with stats.record(net):
        ...     net(support_x)
        >>> with stats.use(net):
        ...     logits = net(query_x)
    """

    def __init__(self) -> None:
        self._stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(self, module: nn.Module) -> AbstractContextManager:
        """Within the block, BatchNorm layers normalise by their batch and keep its statistics."""

        def make(name: str, norm: nn.modules.batchnorm._BatchNorm) -> Callable:
            def recording(x: torch.Tensor) -> torch.Tensor:
                dims = [0, *range(2, x.dim())]
                mean, var = x.mean(dims), x.var(dims, unbiased=False)
                self._stats[name] = (mean.detach(), var.detach())
                return F.batch_norm(x, mean, var, norm.weight, norm.bias, False, 0.0, norm.eps)

            return recording

        return _forwards_replaced(module, make)

    def use(self, module: nn.Module) -> AbstractContextManager:
        """Within the block, BatchNorm layers normalise by the recorded statistics."""
        missing = [n for n, _ in _norm_layers(module) if n not in self._stats]
        if missing:
            raise RuntimeError(
                f"no statistics recorded for BatchNorm layers {missing}; record the support set first"
            )

        def make(name: str, norm: nn.modules.batchnorm._BatchNorm) -> Callable:
            mean, var = self._stats[name]
            return lambda x: F.batch_norm(x, mean, var, norm.weight, norm.bias, False, 0.0, norm.eps)

        return _forwards_replaced(module, make)


def forward(
    module: nn.Module,
    params: Params,
    x: torch.Tensor,
    composite_norm: bool = False,
    batch_stats: bool = True,
) -> torch.Tensor:
    """``module(x)`` with ``params`` in place of its own, BatchNorm on batch statistics (with
    ``batch_stats=False``, as the module's mode says: its running statistics in eval mode)."""
    if not batch_stats:
        return functional_call(module, params, (x,), strict=False)
    with batch_statistics(module, composite=composite_norm):
        return functional_call(module, params, (x,), strict=False)


def gradient_steps(
    loss_fn: Callable[[Params], torch.Tensor],
    params: Params,
    names: Iterable[str],
    steps: int,
    lr: LearningRate,
    first_order: bool,
) -> Params:
    """``steps`` of gradient descent on the parameters ``names`` of ``loss_fn(params)``.

    Uses :func:`torch.func.grad`, so it runs unchanged inside :func:`torch.vmap`, and the
    result stays differentiable with respect to ``params`` for an outer ``backward()``:
    through the gradients themselves (second order), or, with ``first_order=True``, only
    through the identity path (the gradients are treated as constants: FOMAML).
    """
    names = list(names)
    adapted = {n: params[n] for n in names}
    rest = {n: p for n, p in params.items() if n not in adapted}
    grad_fn = torch.func.grad(lambda a: loss_fn({**rest, **a}))
    for _ in range(steps):
        grads = grad_fn(adapted)
        adapted = {
            n: adapted[n] - (lr(n) if callable(lr) else lr) * (grads[n].detach() if first_order else grads[n])
            for n in names
        }
    return {**rest, **adapted}


def fit_head(params: Params, n_way: int, prefix: str = "head.") -> Params:
    """The parameters with an ``n_way``-class head, for evaluating at another number of ways.

    A meta-learned head has one row per training label, but labels are a random order of
    the episode's classes, so no row belongs to a class. When ``n_way`` differs from the
    trained number of ways, every row (and bias) becomes the mean of the trained ones, so
    adaptation starts from the same logit for every class (the permutation-invariant
    initialization of Ye & Chao, 2022). With the trained ``n_way`` nothing changes.
    """
    out = dict(params)
    for name, p in params.items():
        if name.startswith(prefix) and p.dim() >= 1 and p.shape[0] != n_way:
            out[name] = p.mean(0, keepdim=True).expand(n_way, *p.shape[1:])
    return out


def zero_head(params: Params, prefix: str = "head.") -> Params:
    """The parameters with every head entry zero (the zeroing trick of Kao et al. 2022).

    From a zero head the first inner step leaves the backbone where it is (no gradient
    reaches it through a zero head) and makes row ``k`` of the head proportional to the
    class mean of class ``k`` minus the mean over the support set: every task starts from a
    nearest-mean rule on the meta-learned features, at any number of ways, and no row has
    to be meta-learned for labels that are a random order of the episode's classes.
    """
    return {n: torch.zeros_like(p) if n.startswith(prefix) else p for n, p in params.items()}


def cross_entropy_and_accuracy(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy, and detached accuracy, of ``[M, N]`` logits."""
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean().detach()


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: ``T^2 KL(softmax(t / T) || softmax(s / T))``, averaged
    over the ``[M, N]`` rows. The ``T^2`` keeps its gradient on the scale of a cross-entropy's
    as the temperature changes."""
    return temperature**2 * F.kl_div(
        F.log_softmax(logits / temperature, -1),
        F.log_softmax(teacher_logits / temperature, -1),
        reduction="batchmean",
        log_target=True,
    )
