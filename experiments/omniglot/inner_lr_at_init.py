"""Which inner learning rate suits a pretrained backbone, before any meta-training?

MAML's inner lr of 0.4 (Finn et al.) was chosen for a freshly initialised conv-4; a backbone
pretrained on the base classes has larger features, and one step of 0.4 on its new head
overshoots. This scores MAML adaptation from the pretrained weights (new 5-way head, 3 test
steps) on the held-out *validation* characters for several inner lrs, so the choice for the
``-pretrained`` runs is made without touching the novel classes.

    python experiments/omniglot/inner_lr_at_init.py --run runs/omniglot/pretrain --lrs 0.4 0.1 0.05 0.03
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf

from fewshot import MAML, build_model
from fewshot.evaluation import Setting
from fewshot.train import load_splits, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/omniglot/pretrain", help="a pretrain run directory")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.4, 0.1, 0.05, 0.03, 0.02, 0.01])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3, help="inner steps at test time")
    args = parser.parse_args()
    cfg = OmegaConf.load(f"{args.run}/config.yaml")
    splits, _ = load_splits(cfg.data, required=("base", "val"))
    sampler = Setting(5, 1).sampler(splits["val"], 5, seed=cfg.train.seed + 1)  # as training validates
    image_size, channels = splits["val"].image_shape[1], splits["val"].image_shape[0]
    for lr in args.lrs:
        torch.manual_seed(0)
        model = build_model(cfg.model.backbone, 5, channels, image_size, pretrained=f"{args.run}/best.pt")
        learner = MAML(model, inner_lr=lr, test_steps=args.steps).eval()
        accuracy = validate(learner, sampler, args.episodes, "cpu", pretrain=False)
        print(f"inner lr {lr}: 5-way 1-shot validation {accuracy} on {args.episodes} episodes", flush=True)


if __name__ == "__main__":
    main()
