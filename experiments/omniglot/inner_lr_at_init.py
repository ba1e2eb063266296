"""Which inner learning rate suits a pretrained backbone, before any meta-training?

MAML's inner lr of 0.4 (Finn et al.) was chosen for a freshly initialised conv-4; a backbone
pretrained on the base classes has larger features, and one step of 0.4 on its new head
overshoots. This scores MAML adaptation from the pretrained weights (new head, 3 test
steps) on the held-out *validation* characters for several inner lrs, so the choice for the
``-pretrained`` runs is made without touching the novel classes. ``--proto-head`` starts
the head from the support set's class means (Proto-MAML), whose logits are larger still;
``--zero-head`` from zero (Kao et al. 2022), which one inner step turns into class means.

    python experiments/omniglot/inner_lr_at_init.py --run runs/omniglot/pretrain --lrs 0.4 0.1 0.05 0.03
    python experiments/omniglot/inner_lr_at_init.py --proto-head --setting 20w5s --lrs 0 0.01 0.03 0.1
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
    parser.add_argument("--setting", default="5w1s", help="N-way K-shot of the validation episodes")
    head = parser.add_mutually_exclusive_group()
    head.add_argument("--proto-head", action="store_true", help="head from class means (Proto-MAML)")
    head.add_argument("--zero-head", action="store_true", help="head from zero (Kao et al. 2022)")
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "config.yaml").is_file() or not (run / "best.pt").is_file():
        parser.error(f"--run {args.run}: no config.yaml and best.pt there; give a finished pretrain run")
    try:
        setting = Setting.parse(args.setting)
    except ValueError as err:
        parser.error(f"--setting: {err}")
    cfg = OmegaConf.load(run / "config.yaml")
    splits, _ = load_splits(cfg.data, required=("base", "val"))
    sampler = setting.sampler(splits["val"], 5, seed=cfg.train.seed + 1)  # as training validates
    image_size, channels = splits["val"].image_shape[1], splits["val"].image_shape[0]
    head = {"proto_head": args.proto_head, "zero_head": args.zero_head}
    for lr in args.lrs:
        torch.manual_seed(0)
        model = build_model(cfg.model.backbone, 5, channels, image_size, pretrained=run / "best.pt")
        learner = MAML(model, inner_lr=lr, test_steps=args.steps, **head).eval()
        accuracy = validate(learner, sampler, args.episodes, "cpu", pretrain=False)
        print(f"inner lr {lr}: {setting} validation {accuracy} on {args.episodes} episodes", flush=True)


if __name__ == "__main__":
    main()
