"""torchrun with 2 gloo processes takes the steps and scores the episodes one process would.

Both sides run one thread per process (torchrun's default), so that float rounding is the
same; the tolerance is then float noise. Each run is a real ``torchrun`` launch.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TINY = [
    "data.num_classes=200",
    "task.meta_batch=4",
    "task.q_query=2",
    "train.val_every=1",
    "train.val_episodes=3",
    "summary.episodes=0",
    "train.quiet=true",
]
# Reptile on 1 shot: on 5 shots its 5 inner steps of this tiny untrained network are chaotic:
# one meta-step turns the rounding of the 2-process sum (about 4e-9 in the weights) into 2.5e-4
# on an AVX-512 machine, and 1 against 2 threads in one process differ by 3e-4 after a single
# step, so no float tolerance would hold. On 1 shot the runs stay within 4e-7 after 3 steps.
LEARNERS = {"maml": ["optim.name=sgd", "optim.lr=0.1"], "reptile": ["task.k_shot=1"]}


def run(module: str, args: list[str], cwd: Path, processes: int) -> str:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd = [sys.executable, *(launcher if processes > 1 else []), "-m", module, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[tuple[str, int, int], dict[str, torch.Tensor]]]:
    """The runs' folder, and the weights after 1 step (the meta-gradient taken) and after
    resuming to 3 steps, by (learner, processes, steps)."""
    root = tmp_path_factory.mktemp("dist")
    out = {}
    for learner, extra in LEARNERS.items():
        for processes in (1, 2):
            where = f"train.out_dir=p{processes}"
            printed = run("fewshot.train", [learner, *TINY, *extra, "train.steps=1", where], root, processes)
            assert printed.count("run directory") == 1  # rank 0 alone reports
            run_dir = root / f"p{processes}" / learner
            out[learner, processes, 1] = weights(run_dir)
            run("fewshot.train", [learner, f"train.resume={run_dir}", "train.steps=3"], root, processes)
            out[learner, processes, 3] = weights(run_dir)
            log = (run_dir / "metrics.jsonl").read_text().splitlines()
            assert sum('"val_accuracy"' in line for line in log) == 3  # logged once per step, by rank 0
    return root, out


@pytest.mark.parametrize("learner", list(LEARNERS))
@pytest.mark.parametrize("steps", [1, 3])
def test_two_processes_take_the_steps_of_one(runs, learner, steps):
    _, weights_of = runs
    one, two = weights_of[learner, 1, steps], weights_of[learner, 2, steps]
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=2e-6, msg=name)
    if steps == 3:  # the resumed runs trained on
        assert any(not torch.equal(one[n], weights_of[learner, 1, 1][n]) for n in one)


def test_two_processes_score_the_episodes_of_one(runs):
    root, _ = runs
    results = []
    for processes in (1, 2):
        args = ["methods=[maml:p1/maml,scratch]", "settings=[5w1s,3w2s]", "episodes=7", "batch_episodes=2"]
        args += ["finetune.epochs=1", "data.num_classes=200", f"out_dir=e{processes}", "quiet=true"]
        printed = run("fewshot.evaluate", args, root, processes)
        assert printed.count("## Accuracy") == 1
        with open(root / f"e{processes}" / "evaluate" / "results.csv") as f:
            results.append(
                [(r["method"], r["setting"], r["episode"], r["accuracy"], r["f1"]) for r in csv.DictReader(f)]
            )
    assert len(results[0]) == 2 * 2 * 7
    assert results[0] == results[1]


def test_two_processes_resume_what_one_process_saved(runs):
    root, _ = runs
    args = ["methods=[maml:p1/maml,scratch]", "settings=[5w1s,3w2s]", "episodes=7", "batch_episodes=2"]
    args += ["finetune.epochs=1", "data.num_classes=200", "out_dir=r", "quiet=true"]
    run("fewshot.evaluate", args, root, 1)
    out = root / "r" / "evaluate"
    whole = torch.load(out / "scores.pt", weights_only=True)
    saved = {}  # chunks 0 and 3 of every method and setting, as a killed process leaves them
    for key, by_label in whole.items():
        for label, entry in by_label.items():
            chunks = {
                c: {m: v[2 * c : 2 * c + 2].clone() for m, v in entry.items() if m != "seconds"}
                for c in (0, 3)
            }
            chunks[0]["accuracy"].fill_(0.125)  # proves that the saved chunk is taken, not scored again
            saved.setdefault(key, {})[label] = {"chunks": chunks, "seconds": 1.0}
    (out / "partial").mkdir()
    torch.save(saved, out / "partial" / "rank0.pt")
    (out / "scores.pt").unlink()
    printed = run("fewshot.evaluate", [f"resume={out}", "quiet=true"], root, 2)
    assert printed.count("## Accuracy") == 1 and not (out / "partial").exists()
    resumed = torch.load(out / "scores.pt", weights_only=True)
    for key, by_label in whole.items():
        for label, entry in by_label.items():
            expected = entry["accuracy"].clone()
            expected[:2] = 0.125
            torch.testing.assert_close(resumed[key][label]["accuracy"], expected, rtol=0, atol=1e-6)
