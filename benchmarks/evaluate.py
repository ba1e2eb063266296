"""Evaluation speed: fewshot's batched adaptation against per-episode reference loops.

Two methods, each scored on the same episodes both ways in one run:

* linear probe (Chen et al. 2019: new linear head, SGD lr 0.01, momentum 0.9, weight decay
  1e-3, 100 epochs in mini-batches of 4) on a Conv-4 backbone. Reference: per episode,
  backbone features, an ``nn.Linear`` and ``torch.optim.SGD``. fewshot: ``FineTune`` with
  ``adapt_batch`` (features of a batch of episodes in one pass, every head trained at once).
* MAML test-time adaptation (first order, ``--steps`` steps of lr 0.4). Reference:
  learn2learn's ``MAML.clone()`` and ``adapt()`` per episode. fewshot: ``MAML.adapt_batch``
  (vmap on CUDA, two episodes at a time on CPU threads; ``--maml-strategy`` forces one).

Prints episodes/s, the ratios, and the largest logit difference between the two ways. They
compute the same function, but MAML's float32 rounding (channels-last kernels here, NCHW in
learn2learn) compounds over 10 steps of lr 0.4 from a random Conv-4, so its difference is
also printed in float64 on the first batch.

    python benchmarks/evaluate.py [--device cuda] [--episodes 100] [--batch-episodes 20] [--setting 5w5s]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
import torch.nn.functional as F

from fewshot import MAML, FineTune, Setting, build_backbone, build_model
from fewshot.data import Episode, EpisodeSampler, make_synthetic


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[torch.Tensor, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def reference_linear_probe(backbone, probe: FineTune, batches) -> torch.Tensor:
    """The textbook loop: one episode at a time, torch.optim.SGD on a new nn.Linear."""
    logits = []
    for b in batches:
        for sx, sy, qx in zip(b.support_x, b.support_y, b.query_x, strict=True):
            with torch.no_grad():
                support, query = backbone(sx), backbone(qx)
            torch.manual_seed(probe.seed)
            head = torch.nn.Linear(support.shape[1], int(sy.max()) + 1).to(sx.device)
            opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
            g = torch.Generator().manual_seed(probe.seed)
            for _ in range(probe.epochs):
                order = torch.randperm(len(sy), generator=g).to(sx.device)
                for i in range(math.ceil(len(sy) / probe.batch_size)):
                    idx = order[i * probe.batch_size : (i + 1) * probe.batch_size]
                    opt.zero_grad()
                    F.cross_entropy(head(support[idx]), sy[idx]).backward()
                    opt.step()
            with torch.no_grad():
                logits.append(head(query))
    return torch.stack(logits)


def reference_maml(model, steps: int, batches) -> torch.Tensor:
    """learn2learn's MAML, one episode at a time: clone, adapt, predict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import learn2learn as l2l
    maml = l2l.algorithms.MAML(model, lr=0.4, first_order=True)
    logits = []
    for b in batches:
        for sx, sy, qx in zip(b.support_x, b.support_y, b.query_x, strict=True):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(F.cross_entropy(learner(sx), sy))
            with torch.no_grad():
                logits.append(learner(qx))
    return torch.stack(logits)


def ours(learner, batches) -> torch.Tensor:
    return torch.cat([learner.adapt_batch(b.support_x, b.support_y)(b.query_x) for b in batches])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--batch-episodes", type=int, default=20)
    parser.add_argument("--setting", default="5w5s")
    parser.add_argument("--steps", type=int, default=10, help="MAML test-time steps")
    parser.add_argument("--maml-strategy", default="auto", choices=("auto", "loop", "threads", "vmap"))
    args = parser.parse_args()
    setting = Setting.parse(args.setting)
    dev = args.device
    sampler = EpisodeSampler(make_synthetic(num_classes=400), setting.n_way, setting.k_shot, 15, seed=0)
    ranges = [
        range(lo, min(lo + args.batch_episodes, args.episodes))
        for lo in range(0, args.episodes, args.batch_episodes)
    ]
    batches = [sampler.batch(r).to(dev) for r in ranges]
    print(
        f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads; {setting}, 15 queries, "
        f"{args.episodes} episodes in batches of {args.batch_episodes}"
    )

    torch.manual_seed(0)
    backbone = build_backbone("conv4").to(dev).eval()
    probe = FineTune(backbone)
    reference_linear_probe(backbone, probe, batches[:1])  # warm-up
    ours(probe, batches[:1])
    ref, t_ref = timed(lambda: reference_linear_probe(backbone, probe, batches), dev)
    new, t_new = timed(lambda: ours(probe, batches), dev)
    n = args.episodes
    print(
        f"linear probe: reference loop {n / t_ref:8.1f} episodes/s | fewshot {n / t_new:8.1f} episodes/s | "
        f"{t_ref / t_new:5.1f}x | max |logit diff| {float((ref - new).abs().max()):.1e}"
    )

    torch.manual_seed(0)
    model = build_model("conv4", setting.n_way).to(dev)
    maml = MAML(model, inner_lr=0.4, test_steps=args.steps, strategy=args.maml_strategy)
    reference_maml(model, args.steps, batches[:1])
    ours(maml, batches[:1])
    ref, t_ref = timed(lambda: reference_maml(model, args.steps, batches), dev)
    new, t_new = timed(lambda: ours(maml, batches), dev)
    used = maml._strategy()
    diff = float((ref - new).abs().max())
    model.double()  # the same function? float32 rounding compounds over inner steps, float64's does not
    first = batches[0]
    first = Episode(
        first.support_x.double(), first.support_y, first.query_x.double(), first.query_y, first.classes
    )
    diff64 = float((reference_maml(model, args.steps, [first]) - ours(maml, [first])).abs().max())
    print(
        f"MAML adapt ({args.steps} steps, {used}): learn2learn {n / t_ref:8.1f} episodes/s | fewshot "
        f"{n / t_new:8.1f} episodes/s | {t_ref / t_new:5.1f}x | max |logit diff| {diff:.1e} "
        f"(float64, first batch: {diff64:.1e})"
    )


if __name__ == "__main__":
    main()
