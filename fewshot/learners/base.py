"""The one interface every method implements, so evaluation treats them all alike.

* :class:`Learner` (every method): ``adapt(support_x, support_y)`` returns a
  :class:`Predictor` for that episode; ``predictor(query_x)`` gives logits.
  ``adapt_batch`` does the same for a batch of episodes at once; learners that can
  vectorise across episodes (fine-tuning, prototypes, MAML under vmap) override it, and
  the evaluator always calls it.
* A learner that sees images only through fixed per-image features (ProtoNet and SimpleShot
  at test time, the linear probe) says so with :meth:`Learner.feature_extractor`; its
  ``adapt_batch`` then also takes features, and an evaluator embeds each image once.
* :class:`MetaLearner` (MAML, Reptile, ProtoNet, ...): also ``meta_loss(batch)``, the outer
  loss of a batch of tasks and its metrics, and ``meta_backward(batch)``, which
  accumulates the same gradients into ``.grad`` with less memory. The training loop owns
  the optimizer: ``zero_grad()``, ``meta_backward(batch)``, ``step()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from fewshot.data import Episode

Predictor = Callable[[torch.Tensor], torch.Tensor]
"""Maps query images ``[M, C, H, W]`` to logits ``[M, N]``."""

BatchPredictor = Callable[[torch.Tensor], torch.Tensor]
"""Maps the query images of a batch of episodes ``[B, M, C, H, W]`` to logits ``[B, M, N]``."""


class Learner(nn.Module):
    """A few-shot method: adapt to a labelled support set, then predict.

    Subclasses implement :meth:`adapt`, :meth:`adapt_batch`, or both; each has a default
    in terms of the other.
    """

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        """A predictor for the episode whose support set is given (labels ``0..N-1``)."""
        if type(self).adapt_batch is Learner.adapt_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither adapt nor adapt_batch")
        predict = self.adapt_batch(support_x.unsqueeze(0), support_y.unsqueeze(0))
        return lambda query_x: predict(query_x.unsqueeze(0))[0]

    def adapt_batch(self, support_x: torch.Tensor, support_y: torch.Tensor) -> BatchPredictor:
        """:meth:`adapt` for a batch of episodes: ``support_x [B, S, C, H, W]``, ``support_y [B, S]``.

        Every episode of the batch is adapted independently: the logits are those of
        :meth:`adapt` on each episode alone.
        """
        if type(self).adapt is Learner.adapt:
            raise NotImplementedError(f"{type(self).__name__} implements neither adapt nor adapt_batch")
        predictors = [self.adapt(x, y) for x, y in zip(support_x, support_y, strict=True)]
        return lambda query_x: torch.stack([p(q) for p, q in zip(predictors, query_x, strict=True)])

    def feature_extractor(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The fixed map from images ``[M, C, H, W]`` to features ``[M, D]`` through which
        alone this learner sees images, or ``None`` (the default: adaptation changes it).

        Where there is one, an image's features depend on nothing else (not the episode, not
        the other images of a pass), and :meth:`adapt_batch` and its predictor also take
        features ``[B, M, D]`` in place of images. An evaluator can then embed each image of
        a dataset once instead of once per episode that draws it.
        """
        return None


class MetaLearner(Learner):
    """A learner trained on batches of tasks."""

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Outer loss of a batch of tasks (tensors with a leading task dimension ``B``).

        Returns the scalar loss to back-propagate and detached metrics (at least
        ``"accuracy"``, the mean query accuracy of the adapted models); metrics stay
        tensors so that no host synchronisation happens inside the step.
        """
        raise NotImplementedError

    def meta_backward(self, batch: Episode) -> dict[str, torch.Tensor]:
        """Accumulate the gradient of :meth:`meta_loss` into ``.grad``; return its metrics.

        Learners override this to back-propagate task by task, so that only one task's
        graph is alive at a time; the gradients are the same.
        """
        loss, metrics = self.meta_loss(batch)
        loss.backward()
        return metrics


def episode_accuracies(
    learner: Learner, episodes: Iterable[Episode], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Query accuracy of ``learner`` on each (unbatched) episode, as a float tensor."""
    accs = []
    for ep in episodes:
        ep = ep.to(device)
        predict = learner.adapt(ep.support_x, ep.support_y)
        with torch.no_grad():
            accs.append((predict(ep.query_x).argmax(-1) == ep.query_y).float().mean())
    return torch.stack(accs).cpu()
