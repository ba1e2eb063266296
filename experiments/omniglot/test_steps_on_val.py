"""How many inner steps (and of what lr) should a meta-trained run take at test time?

Finn et al. adapt with 3 steps at test on Omniglot; a run meta-trained for 5-way 1-shot may
want another number for 5 shots or 20 ways. This scores a run that adapts by gradient steps
(MAML, first-order MAML, Reptile) on the held-out *validation* characters (N ways, K shots,
5 queries) for several numbers of test steps and, with ``--lrs``, test learning rates, so
the choice is made without touching the novel classes. The evaluation then uses it as
``<run>@inner.test_steps=<steps>@inner.test_lr=<lr>``.

    python experiments/omniglot/test_steps_on_val.py --run runs/omniglot/maml-pretrained --ways 5 20
    python experiments/omniglot/test_steps_on_val.py --run runs/omniglot/reptile --ways 20 --lrs 0.05 0.2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fewshot.evaluation import Setting
from fewshot.train import build_learner, load_splits, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/omniglot/maml-pretrained", help="a maml/fomaml/reptile run")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--ways", type=int, nargs="+", default=[5])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--lrs", type=float, nargs="+", default=None, help="test lrs (default: the run's)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--checkpoint", default="best.pt", help="last.pt for a run scored from its last step")
    args = parser.parse_args()
    checkpoint = Path(args.run) / args.checkpoint
    if not checkpoint.is_file():
        parser.error(
            f"--run {args.run}: no {args.checkpoint} there; give a finished maml/fomaml/reptile run directory"
        )
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(state["config"])
    cfg.model.pretrained = None  # the run's own weights follow
    splits, _ = load_splits(cfg.data, required=("base", "val"))
    channels, size = splits["val"].image_shape[0], splits["val"].image_shape[1]
    learner = build_learner(cfg, channels, size, n_base=1)
    learner.load_state_dict(state["model"])
    learner.eval()
    for ways in args.ways:
        for shots in args.shots:
            sampler = Setting(ways, shots).sampler(splits["val"], 5, seed=cfg.train.seed + 1)
            for lr in args.lrs or [learner.test_lr]:
                for steps in args.steps:
                    learner.test_steps, learner.test_lr = steps, lr
                    accuracy = validate(learner, sampler, args.episodes, "cpu", pretrain=False)
                    rate = "the learned lrs" if callable(lr) else f"lr {lr}"  # Meta-SGD: one per entry
                    print(
                        f"{ways}-way {shots}-shot, {steps} test steps of {rate}: validation {accuracy} "
                        f"on {args.episodes} episodes",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
