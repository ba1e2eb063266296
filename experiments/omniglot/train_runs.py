"""Run the study's queued training runs one after another, in this one process.

``run.sh`` queues each run as the arguments of ``python -m fewshot.train`` (each argument ended
by a NUL byte, each run by one more), led by the run's name. Running them here rather than
one process each imports torch once: every run of the quick mode trains for two steps, and
a fresh process spent most of its four seconds importing (torch, and torch._dynamo when the
first optimizer is built). Each run's wall-clock seconds are appended to a timings file as
``name<TAB>seconds``, as ``run.sh`` writes the evaluation's.

    python experiments/omniglot/train_runs.py QUEUE TIMINGS
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fewshot.train import main as train_main


def read_queue(path: Path) -> list[list[str]]:
    """The queued runs, each as ``[name, learner, *overrides]`` (no argument is empty, so two
    NULs in a row end a run)."""
    *runs, rest = path.read_bytes().decode().split("\0\0")
    if rest:
        raise ValueError(f"{path}: its last run is not ended by two NUL bytes (cut off?)")
    return [run.split("\0") for run in runs]


def _failed(name: str) -> None:
    print(f"error: training run {name} failed; the runs before it are done", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("queue", type=Path, help="the runs, as run.sh writes them")
    parser.add_argument("timings", type=Path, help="name<TAB>seconds is appended here for each run")
    args = parser.parse_args(argv)
    try:
        runs = read_queue(args.queue)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        parser.exit(2, f"error: cannot read the queue of runs: {err}\n")
    for name, *command in runs:
        start = time.perf_counter()
        try:
            train_main(command)
        except SystemExit as stop:  # fewshot.train's own exit, after printing what went wrong
            if stop.code not in (None, 0):
                _failed(name)
                raise
        except BaseException:  # a crash (or Ctrl-C) inside the run: its traceback follows
            _failed(name)
            raise
        with args.timings.open("a") as out:
            out.write(f"{name}\t{round(time.perf_counter() - start)}\n")


if __name__ == "__main__":
    main()
