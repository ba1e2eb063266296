"""MAML (second and first order), MetaSGD and ANIL on the functional core.

All three share one per-task computation, :meth:`MAML._task_loss`: embed the support
set, take inner gradient steps on the adapted parameters, and score the query set with
the adapted parameters. They differ only in which parameters adapt (all, or the head),
what is computed once per task (nothing, or the backbone features), and the inner
learning rate (a number, or a learned tensor per parameter).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data import Episode
from fewshot.learners.base import BatchPredictor, MetaLearner, Predictor
from fewshot.learners.functional import (
    LearningRate,
    Params,
    SupportStatistics,
    cross_entropy_and_accuracy,
    fit_head,
    forward,
    gradient_steps,
    parameters,
    submodule_params,
    zero_head,
)
from fewshot.learners.protonet import prototype_head
from fewshot.learners.threads import adapt_each, map_tasks, replica, resolve, workers
from fewshot.models import Classifier, channels_last

TEST_NORMS = ("batch", "running", "support")  # BatchNorm outside training (MAML's test_norm)


class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning (Finn et al. 2017), from any initialization.

    Args:
        model: the classifier whose parameters are the meta-learned initialization; start
            it from a pretrained backbone with ``build_model(..., pretrained=path)``.
        inner_lr: inner-loop step size during meta-training.
        inner_steps: inner-loop steps during meta-training.
        first_order: drop second-order terms (FOMAML).
        test_steps, test_lr: inner loop used by :meth:`adapt` (default: as in training).
        strategy: how a batch of tasks runs: ``"loop"`` (one after another), ``"threads"``
            (:meth:`meta_backward` and :meth:`adapt_batch` run two tasks at a time on CPU
            threads, :mod:`fewshot.learners.threads`; the loop's numbers exactly), ``"vmap"``,
            or ``"auto"`` (vmap on CUDA; threads on a CPU with more than one intra-op thread;
            else the loop). vmap gives the loop's numbers up to floating-point rounding.
        channels_last: run CPU convolutions on channels-last images (same values, faster).
        proto_head: start every task's head from its support set, row ``2 c_k`` and bias
            ``-|c_k|^2`` for the class mean ``c_k`` of the backbone features (Proto-MAML,
            Triantafillou et al. 2020): before any inner step the predictions are
            ProtoNet's, for any number of ways, instead of a head whose rows belong to no
            class. The meta-gradient flows through the class means to the backbone.
        zero_head: start every task's head from zero (Kao et al. 2022,
            :func:`~fewshot.learners.functional.zero_head`): the first inner step turns it into
            a class-mean head, so no head is meta-learned and every number of ways starts
            alike. Not with ``proto_head``.
        test_norm: BatchNorm outside training: ``"batch"`` normalises every forward pass by
            its own batch (Finn et al.'s MAML, at test too), so a query's prediction depends
            on the other queries of its episode; ``"running"`` uses the model's running
            statistics, so each image is classified on its own (inductive). Meta-training
            always uses batch statistics and leaves the running ones as they were, so
            ``"running"`` suits a network whose statistics match its weights: a pretrained
            one adapted without meta-training, or one meta-trained with a small outer lr.
            ``"support"`` normalises each query by the support set's statistics through the
            adapted network (MetaBN, :class:`~fewshot.learners.functional.SupportStatistics`):
            inductive too, but the statistics are the task's own. Not under vmap:
            :meth:`adapt_batch` then runs the episodes on threads or one after another.

    Example:
        >>> maml = MAML(build_model("conv4", n_way=5), inner_lr=0.4, inner_steps=1)
        >>> loss, metrics = maml.meta_loss(sampler.batch(range(32)))
        >>> loss.backward(); optimizer.step()
        >>> logits = maml.adapt(ep.support_x, ep.support_y)(ep.query_x)
    """

    adapted_prefix = ""  # inner loop adapts the parameters whose names start with this

    def __init__(
        self,
        model: Classifier,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        first_order: bool = False,
        test_steps: int | None = None,
        test_lr: float | None = None,
        strategy: str = "auto",
        channels_last: bool = True,
        proto_head: bool = False,
        zero_head: bool = False,
        test_norm: str = "batch",
    ):
        super().__init__()
        if test_norm not in TEST_NORMS:
            raise ValueError(f"test_norm must be one of {', '.join(TEST_NORMS)}, got {test_norm!r}")
        if proto_head and zero_head:
            raise ValueError("proto_head and zero_head are two starts for the head; pick one")
        if strategy not in ("auto", "loop", "threads", "vmap"):
            raise ValueError(f"strategy must be 'auto', 'loop', 'threads' or 'vmap', got {strategy!r}")
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
        self.model = model
        self.inner_lr, self.inner_steps, self.first_order = inner_lr, inner_steps, first_order
        self.test_steps = inner_steps if test_steps is None else test_steps
        self.test_lr = inner_lr if test_lr is None else test_lr
        self.strategy, self.channels_last = strategy, channels_last
        self.proto_head, self.zero_head = proto_head, zero_head
        self.test_norm = test_norm
        self._in_vmap = False  # set while a batch of tasks runs under torch.vmap

    # -- what the variants override -------------------------------------------------
    def _adapted_names(self, params: Params) -> list[str]:
        return [n for n in params if n.startswith(self.adapted_prefix)]

    def _lr(self, name: str) -> float | torch.Tensor:
        return self.inner_lr

    def _embed(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """What is computed once per task, before the inner loop (MAML: nothing)."""
        return x

    def _classify(self, params: Params, h: torch.Tensor) -> torch.Tensor:
        return forward(self._net, params, h, self._in_vmap, self._batch_stats)

    def _features(self, params: Params, h: torch.Tensor) -> torch.Tensor:
        """Backbone features of what :meth:`_embed` returned (MAML: the images themselves)."""
        return self._backbone(params, h)

    def _backbone(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return forward(
            self._net.backbone, submodule_params(params, "backbone."), x, self._in_vmap, self._batch_stats
        )

    @property
    def _batch_stats(self) -> bool:
        """Whether BatchNorm normalises by the batch: always in training, and per ``test_norm`` outside
        (``"support"``: the inner loop's batch is the support set; :meth:`adapt` sets the queries')."""
        return self.training or self.test_norm != "running"

    @property
    def _net(self) -> Classifier:
        """The module forward passes run on: ``self.model``, or a task worker's own copy."""
        return replica(self.model)

    # -- the shared per-task computation -----------------------------------------------
    def _adapt_params(
        self,
        params: Params,
        sx: torch.Tensor,
        sy: torch.Tensor,
        steps: int,
        lr: LearningRate,
        first_order: bool,
    ) -> Params:
        h = self._embed(params, sx)
        if self.proto_head:
            n_way = params["head.weight"].shape[0]
            params = {**params, **prototype_head(self._features(params, h), sy, n_way)}
        elif self.zero_head:
            params = zero_head(params)

        def support_loss(p: Params) -> torch.Tensor:
            return F.cross_entropy(self._classify(p, h), sy)

        return gradient_steps(support_loss, params, self._adapted_names(params), steps, lr, first_order)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """Images in channels-last memory order on the CPU loop (:func:`channels_last`)."""
        return x if not self.channels_last or self._in_vmap else channels_last(x)

    def _task_loss(
        self, params: Params, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sx, qx = self._layout(sx), self._layout(qx)
        fast = self._adapt_params(params, sx, sy, self.inner_steps, self._lr, self.first_order)
        return cross_entropy_and_accuracy(self._classify(fast, self._embed(fast, qx)), qy)

    def _strategy(self) -> str:
        return resolve(self.strategy, self.model, on_cuda="vmap")

    def _use_vmap(self) -> bool:
        return self._strategy() == "vmap"

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        params = parameters(self.model)
        tasks = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        if self._use_vmap():
            self._in_vmap = True
            try:
                losses, accs = torch.vmap(self._task_loss, in_dims=(None, 0, 0, 0, 0))(params, *tasks)
            finally:
                self._in_vmap = False
        else:
            pairs = [self._task_loss(params, *(t[i] for t in tasks)) for i in range(len(batch.support_x))]
            losses, accs = (torch.stack(v) for v in zip(*pairs, strict=True))
        loss = losses.mean()
        return loss, {"loss": loss.detach(), "accuracy": accs.mean()}

    def meta_backward(self, batch: Episode) -> dict[str, torch.Tensor]:
        """Back-propagate each task's share of the outer loss as soon as it is computed.

        Peak memory is one task's graph (one per worker under ``"threads"``) instead of the
        whole meta-batch's; under vmap the batch is one graph anyway. Gradients are added
        to ``.grad`` in task order, as ``backward()`` task after task would add them.
        """
        if self._use_vmap():
            return super().meta_backward(batch)
        params = parameters(self.model)
        leaves = [p for p in self.parameters() if p.requires_grad]
        b = len(batch.support_x)

        def task(i: int) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, ...]]:
            loss, acc = self._task_loss(
                params, batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i]
            )
            return loss.detach(), acc, torch.autograd.grad(loss / b, leaves, allow_unused=True)

        losses, accs = [], []
        for loss, acc, grads in map_tasks(task, self.model, b, workers(self._strategy())):
            for p, g in zip(leaves, grads, strict=True):
                if g is not None:
                    p.grad = torch.empty_like(p).copy_(g) if p.grad is None else p.grad.add_(g)
            losses.append(loss)
            accs.append(acc)
        return {"loss": torch.stack(losses).mean(), "accuracy": torch.stack(accs).mean()}

    def _test_start(self, support_y: torch.Tensor) -> tuple[Params, LearningRate]:
        """Detached initialization (head fitted to the episode's ways) and the test-time rate."""
        params = fit_head(
            {n: p.detach() for n, p in parameters(self.model).items()}, int(support_y.max()) + 1
        )
        if not callable(self.test_lr):
            return params, self.test_lr
        rates = self.test_lr

        def lr(name: str) -> torch.Tensor:  # learned per-entry rates: a resized head takes their mean row
            rate = rates(name)
            return rate.mean(0, keepdim=True) if rate.shape != params[name].shape else rate

        return params, lr

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        """Fine-tune a copy of the initialization on the support set (``test_steps`` steps).

        Episodes with another number of ways than training start from :func:`fit_head`.
        """
        params, lr = self._test_start(support_y)
        support_x = self._layout(support_x)
        with torch.enable_grad():
            fast = self._adapt_params(params, support_x, support_y, self.test_steps, lr, True)
        fast = {n: p.detach() for n, p in fast.items()}
        norms: SupportStatistics | None = None
        if self.test_norm == "support" and not self.training:
            norms = SupportStatistics()
            with torch.no_grad(), norms.record(self._net):
                self._classify(fast, self._embed(fast, support_x))

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), norms.use(self._net) if norms else contextlib.nullcontext():
                return self._classify(fast, self._embed(fast, self._layout(query_x)))

        return predict

    def adapt_batch(self, support_x: torch.Tensor, support_y: torch.Tensor) -> BatchPredictor:
        """:meth:`adapt` for a batch of episodes: vmapped (CUDA), on task threads, or a loop."""
        if not self._use_vmap() or self.test_norm == "support":
            return adapt_each(self.adapt, self.model, support_x, support_y, workers(self._strategy()))
        params, lr = self._test_start(support_y)

        def adapt_one(x: torch.Tensor, y: torch.Tensor) -> Params:
            return self._adapt_params(params, x, y, self.test_steps, lr, True)

        def predict_one(fast: Params, x: torch.Tensor) -> torch.Tensor:
            return self._classify(fast, self._embed(fast, x))

        self._in_vmap = True
        try:
            with torch.enable_grad():
                fast = torch.vmap(adapt_one)(support_x, support_y)
        finally:
            self._in_vmap = False
        fast = {n: p.detach() for n, p in fast.items()}

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            self._in_vmap = True
            try:
                with torch.no_grad():
                    return torch.vmap(predict_one)(fast, query_x)
            finally:
                self._in_vmap = False

        return predict


class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017): MAML with a learned inner learning rate per parameter entry.

    The rates start at ``inner_lr`` and are meta-trained with the initialization; they are
    parameters of this module (``lrs``), so the outer optimizer must be given
    ``learner.parameters()``, not only ``learner.model.parameters()``. :meth:`adapt` uses
    the learned rates too, unless a fixed ``test_lr`` is given.

    Unconstrained, a rate may turn negative: that entry then steps up its support loss's
    gradient. ``min_lr`` keeps every rate at or above it by projection: call
    :meth:`clamp_rates_` after each outer optimizer step (``fewshot.train`` does), so a rate
    held at the floor still gets its gradient and can rise again.
    """

    def __init__(self, model: Classifier, inner_lr: float = 0.4, min_lr: float | None = None, **kwargs):
        if min_lr is not None and inner_lr < min_lr:
            raise ValueError(f"inner_lr={inner_lr} is below min_lr={min_lr}; the rates start at inner_lr")
        super().__init__(model, inner_lr=inner_lr, **kwargs)
        self.min_lr = min_lr
        self.lrs = nn.ParameterDict(
            {
                n.replace(".", "/"): nn.Parameter(torch.full_like(p, inner_lr))
                for n, p in parameters(model).items()
            }
        )
        if kwargs.get("test_lr") is None:
            self.test_lr = lambda n: self._lr(n).detach()

    def _lr(self, name: str) -> torch.Tensor:
        return self.lrs[name.replace(".", "/")]

    @torch.no_grad()
    def clamp_rates_(self) -> None:
        """Raise every learned rate below ``min_lr`` to it (no-op without ``min_lr``)."""
        if self.min_lr is not None:
            for rate in self.lrs.values():
                rate.clamp_(min=self.min_lr)


class ANIL(MAML):
    """Almost No Inner Loop (Raghu et al. 2020): the inner loop adapts the head only.

    The backbone features of the support and query sets are computed once per task, and
    the meta-gradient still reaches the backbone through them.
    """

    adapted_prefix = "head."

    def _embed(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self._backbone(params, x)

    def _classify(self, params: Params, h: torch.Tensor) -> torch.Tensor:
        return forward(self._net.head, submodule_params(params, "head."), h, self._in_vmap)

    def _features(self, params: Params, h: torch.Tensor) -> torch.Tensor:
        return h  # _embed already ran the backbone
