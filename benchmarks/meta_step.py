"""One MAML meta-step at the Omniglot shape: fewshot against learn2learn and higher.

Conv-4 (64 filters), 1x28x28 images, 5-way 1-shot with 15 queries, meta-batch 32, second
order. All three libraries compute the same meta-gradient (tests/test_learners.py checks it
to 1e-4 in float64), here in float32 on the same tasks and initialization, in one process.
Prints tasks/s and the ratios; the achieved GFLOP/s (FLOPs counted by torch's
FlopCounterMode) against a conv2d forward+backward ceiling measured in the same run; and
peak memory of a 5-inner-step meta-step for each library (CUDA: max allocated; CPU: growth
of the resident set's high-water mark, each library in a fresh subprocess).

    python benchmarks/meta_step.py [--device cuda] [--meta-batch 32] [--inner-steps 1] [--repeats 5]
    python benchmarks/meta_step.py --rounds 8 --repeats 3   # interleaved: loop, threads, learn2learn
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fewshot import MAML, build_model
from fewshot.data import EpisodeSampler, make_synthetic

LIBRARIES = ("fewshot", "fewshot-threads", "fewshot-vmap", "learn2learn", "higher")


def make_step(library: str, model: torch.nn.Module, inner_steps: int, inner_lr: float = 0.4):
    """A function ``step(batch)`` running one second-order meta-step (forward and backward)."""
    if library.startswith("fewshot"):
        strategy = library.partition("-")[2] or "loop"
        maml = MAML(model, inner_lr=inner_lr, inner_steps=inner_steps, strategy=strategy)
        return maml.meta_backward  # what the training loop calls
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import higher
        import learn2learn as l2l
    if library == "learn2learn":
        maml = l2l.algorithms.MAML(model, lr=inner_lr)

        def step(b):
            total = 0.0
            for i in range(len(b.support_x)):
                learner = maml.clone()
                for _ in range(inner_steps):
                    learner.adapt(F.cross_entropy(learner(b.support_x[i]), b.support_y[i]))
                total = total + F.cross_entropy(learner(b.query_x[i]), b.query_y[i])
            (total / len(b.support_x)).backward()

        return step
    inner = torch.optim.SGD(model.parameters(), lr=inner_lr)

    def step(b):
        for i in range(len(b.support_x)):
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(inner_steps):
                    diffopt.step(F.cross_entropy(fmodel(b.support_x[i]), b.support_y[i]))
                (F.cross_entropy(fmodel(b.query_x[i]), b.query_y[i]) / len(b.support_x)).backward()

    return step


def setup(device: str, meta_batch: int):
    torch.manual_seed(0)
    model = build_model("conv4", 5).to(device)
    batch = (
        EpisodeSampler(make_synthetic(num_classes=200), 5, 1, 15, seed=0).batch(range(meta_batch)).to(device)
    )
    return model, batch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def tasks_per_second(library: str, device: str, meta_batch: int, inner_steps: int, repeats: int) -> float:
    model, batch = setup(device, meta_batch)
    step = make_step(library, model, inner_steps)
    step(batch)  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step(batch)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return meta_batch / best


def step_flops(device: str, meta_batch: int, inner_steps: int) -> int:
    model, batch = setup(device, meta_batch)
    with FlopCounterMode(display=False) as counter:
        make_step("fewshot", model, inner_steps)(batch)
    return counter.get_total_flops()


def conv_ceiling(device: str, repeats: int) -> float:
    """GFLOP/s of conv2d forward+backward at Conv-4's heaviest layer shape (64->64, 14x14)."""
    x = torch.randn(32 * 80, 64, 14, 14, device=device, requires_grad=True)
    w = torch.randn(64, 64, 3, 3, device=device, requires_grad=True)

    def run():
        torch.nn.functional.conv2d(x, w, padding=1).sum().backward()

    with FlopCounterMode(display=False) as counter:
        run()
    flops = counter.get_total_flops()
    run()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory_child(library: str, device: str, meta_batch: int, inner_steps: int) -> None:
    """Run in a fresh process: print the peak memory one meta-step adds, in MiB."""
    model, batch = setup(device, meta_batch)
    step = make_step(library, model, inner_steps)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(batch)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        # ru_maxrss would carry the parent's peak across fork and exec: reset this
        # process's high-water mark instead (Linux), then read it after the step.
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        step(batch)
        peak = (_status_kib("VmHWM") - base) * 1024
    print(json.dumps({"peak_mib": peak / 2**20}))


def peak_memory(library: str, device: str, meta_batch: int, inner_steps: int) -> float:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        library,
        "--device",
        device,
        "--meta-batch",
        str(meta_batch),
        "--inner-steps",
        str(inner_steps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def interleaved(device: str, meta_batch: int, inner_steps: int, repeats: int, rounds: int) -> None:
    """Rounds of loop, threads and learn2learn, one after another, with each round's ratios.

    On a shared machine whose speed drifts, ratios within a round are fairer than ratios of
    rates measured minutes apart.
    """
    libs = ("fewshot", "fewshot-threads", "learn2learn")
    rates: dict[str, list[float]] = {lib: [] for lib in libs}
    for _ in range(rounds):
        for lib in libs:
            rates[lib].append(tasks_per_second(lib, device, meta_batch, inner_steps, repeats))
    for lib in libs:
        print(f"  {lib:<15} tasks/s per round: {', '.join(f'{r:.1f}' for r in rates[lib])}")
    for num, den in (
        ("fewshot-threads", "fewshot"),
        ("fewshot-threads", "learn2learn"),
        ("fewshot", "learn2learn"),
    ):
        ratios = [a / b for a, b in zip(rates[num], rates[den], strict=True)]
        print(
            f"  {num} / {den}: {', '.join(f'{r:.2f}' for r in ratios)} "
            f"(mean {sum(ratios) / len(ratios):.2f}x, min {min(ratios):.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--memory-steps", type=int, default=5, help="inner steps for the peak-memory run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="instead: this many interleaved rounds of loop, threads, learn2learn",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 0 or args.repeats < 1 or args.meta_batch < 1:
        parser.error("--rounds must be >= 0, --repeats and --meta-batch >= 1")
    if args.child:
        peak_memory_child(args.child, args.device, args.meta_batch, args.inner_steps)
        return

    name = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"MAML meta-step, conv-4 1x28x28, 5-way 1-shot 15-query, meta-batch {args.meta_batch}, "
        f"{args.inner_steps} inner step(s), second order; {name}, torch {torch.__version__}"
    )
    if args.rounds:
        interleaved(args.device, args.meta_batch, args.inner_steps, args.repeats, args.rounds)
        return
    rates = {
        lib: tasks_per_second(lib, args.device, args.meta_batch, args.inner_steps, args.repeats)
        for lib in LIBRARIES
    }
    for lib, rate in rates.items():
        print(
            f"  {lib:<15} {rate:9.1f} tasks/s   {rate / rates['learn2learn']:5.2f}x learn2learn   "
            f"{rate / rates['higher']:5.2f}x higher"
        )
    flops = step_flops(args.device, args.meta_batch, args.inner_steps)
    best = max(rate for lib, rate in rates.items() if lib.startswith("fewshot"))
    achieved = flops / (args.meta_batch / best) / 1e9
    ceiling = conv_ceiling(args.device, args.repeats)
    print(
        f"  {flops / 1e9:.2f} GFLOP per meta-step; fewshot achieves {achieved:.1f} GFLOP/s against a "
        f"conv2d ceiling of {ceiling:.1f} GFLOP/s ({100 * achieved / ceiling:.0f}%)"
    )
    print(f"Peak memory of one meta-step with {args.memory_steps} inner steps:")
    peaks = {lib: peak_memory(lib, args.device, args.meta_batch, args.memory_steps) for lib in LIBRARIES}
    for lib, peak in peaks.items():
        print(f"  {lib:<15} {peak:9.1f} MiB   {peak / peaks['learn2learn']:5.2f}x learn2learn")


if __name__ == "__main__":
    main()
