"""Episodes per second: fewshot's EpisodeSampler against learn2learn's Taskset.

Both draw 5-way tasks with K+Q = 16 images per class from the same in-memory data (the
embedded synthetic set: 1,200 classes x 20 images, 28x28), in this one process, and
return float image tensors with labels remapped to 0..N-1. learn2learn gets its images
already as float tensors, the cheapest form for it.

    python benchmarks/sampling.py [--episodes 2000]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from fewshot.data import EpisodeSampler, make_synthetic


def rate(draw, count: int) -> float:
    """Episodes per second of ``draw(i)`` over ``count`` calls, after a short warm-up."""
    for i in range(min(50, count)):
        draw(i)
    start = time.perf_counter()
    for i in range(count):
        draw(i)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32, help="tasks per batch for the batched rate")
    args = parser.parse_args()
    torch.manual_seed(0)

    data = make_synthetic()
    sampler = EpisodeSampler(data, n_way=5, k_shot=1, q_query=15, seed=0)
    ours = rate(sampler.episode, args.episodes)
    stream = iter(sampler.episodes(10**9))
    sequential = rate(lambda i: next(stream), args.episodes)
    batched = args.batch * rate(
        lambda i: sampler.batch(range(i * args.batch, (i + 1) * args.batch)),
        max(1, args.episodes // args.batch),
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import learn2learn as l2l

    labels = torch.arange(data.num_classes).repeat_interleave(data.counts)
    dataset = torch.utils.data.TensorDataset(data.images.float().div(255), labels)
    labels_to_indices = {
        c: list(range(int(data.offsets[c]), int(data.offsets[c + 1]))) for c in range(data.num_classes)
    }
    meta = l2l.data.MetaDataset(dataset, labels_to_indices=labels_to_indices)
    taskset = l2l.data.Taskset(
        meta,
        task_transforms=[
            l2l.data.transforms.NWays(meta, n=5),
            l2l.data.transforms.KShots(meta, k=16),
            l2l.data.transforms.LoadData(meta),
            l2l.data.transforms.RemapLabels(meta),
        ],
        num_tasks=-1,
    )
    x, y = taskset.sample()
    assert x.shape == (80, 1, 28, 28) and set(y.tolist()) == set(range(5)), (x.shape, y)
    theirs = rate(lambda i: taskset.sample(), args.episodes)

    print(f"5-way, K+Q=16, 28x28, {data.num_classes} classes in memory, {torch.get_num_threads()} threads")
    print(f"learn2learn Taskset          {theirs:10.0f} episodes/s")
    print(f"fewshot episode(i), one each {ours:10.0f} episodes/s   ratio {ours / theirs:6.1f}x")
    print(f"fewshot episodes(n), in turn {sequential:10.0f} episodes/s   ratio {sequential / theirs:6.1f}x")
    label = f"fewshot batches of {args.batch}"
    print(f"{label:<28} {batched:10.0f} episodes/s   ratio {batched / theirs:6.1f}x")


if __name__ == "__main__":
    main()
