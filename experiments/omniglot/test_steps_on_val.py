"""How many inner steps should a meta-trained MAML run take at test time?

Finn et al. adapt with 3 steps at test on Omniglot; a run meta-trained for 5-way 1-shot may
want another number for 5 shots. This scores a MAML-family run on the held-out *validation*
characters (5-way, K shots, 5 queries) for several numbers of test steps, so the choice is
made without touching the novel classes.

    python experiments/omniglot/test_steps_on_val.py --run runs/omniglot/maml-pretrained
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf

from fewshot.evaluation import Setting
from fewshot.train import build_learner, load_splits, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/omniglot/maml-pretrained", help="a maml/fomaml run directory")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    state = torch.load(f"{args.run}/best.pt", map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(state["config"])
    cfg.model.pretrained = None  # the run's own weights follow
    splits, _ = load_splits(cfg.data, required=("base", "val"))
    channels, size = splits["val"].image_shape[0], splits["val"].image_shape[1]
    learner = build_learner(cfg, channels, size, n_base=1)
    learner.load_state_dict(state["model"])
    learner.eval()
    for shots in args.shots:
        sampler = Setting(5, shots).sampler(splits["val"], 5, seed=cfg.train.seed + 1)
        for steps in args.steps:
            learner.test_steps = steps
            accuracy = validate(learner, sampler, args.episodes, "cpu", pretrain=False)
            print(
                f"5-way {shots}-shot, {steps} test steps: validation {accuracy} on {args.episodes} episodes"
            )


if __name__ == "__main__":
    main()
