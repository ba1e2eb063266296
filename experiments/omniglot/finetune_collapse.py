"""Why do a few `full-finetune` episodes score exactly chance?

Re-runs chosen evaluation episodes of `full-finetune` (every layer of the pretrained backbone
fine-tuned, the evaluation's ``finetune`` settings) one at a time, each stopped after several
numbers of epochs, and prints the query accuracy and the spread of the logits over the
queries. A spread of zero means the fine-tuned network gives every image the same output: its
features collapsed. It reads the same episodes as ``fewshot.evaluate`` (episode i is a pure
function of the seed and i), so the episodes to look at come from the evaluation's per-episode
``results.csv``; ``key=value`` evaluation overrides after the options (e.g. ``q_query=5``) must
match that evaluation's. It diagnoses only; it scores nothing.

    python experiments/omniglot/finetune_collapse.py --setting 5w5s --episodes 63 66 --epochs 1 10 100
"""

from __future__ import annotations

import argparse

import torch

from fewshot.config import ConfigError, load_eval_config
from fewshot.evaluation import Setting
from fewshot.evaluation.methods import BuildContext, MethodError, build_method, parse_method
from fewshot.train import load_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/omniglot/pretrain", help="the pretrain run directory")
    parser.add_argument("--setting", default="5w5s", help="N-way K-shot of the episodes")
    parser.add_argument("--episodes", type=int, nargs="+", required=True, help="episode indices")
    parser.add_argument("--epochs", type=int, nargs="+", default=[100], help="stop after these many epochs")
    parser.add_argument("--data-root", default="../shared/data/omniglot/images_background_small2.zip")
    parser.add_argument("--manifest", default="experiments/omniglot/small2_novel.json")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key=value evaluation overrides, as the evaluation had (before the options, or after --)",
    )
    args = parser.parse_args()
    if min(args.epochs) < 0:
        parser.error(f"--epochs must be >= 0, got {min(args.epochs)}")
    try:
        setting = Setting.parse(args.setting)
        cfg = load_eval_config(
            [
                f"data.root={args.data_root}",
                f"data.split.manifest={args.manifest}",
                f"methods=[full-finetune=finetune-full:{args.run}]",
                *args.overrides,
            ],
            files=["experiments/omniglot/evaluate.yaml"],
        )
    except (ValueError, ConfigError) as err:
        parser.error(str(err))
    try:
        evaluated = load_splits(cfg.data, required=(cfg.split,))[0][cfg.split]
        batch = setting.sampler(evaluated, cfg.q_query, cfg.seed).batch(args.episodes)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    channels, size = evaluated.image_shape[0], evaluated.image_shape[1]
    print(f"{setting.key}, episodes {args.episodes}")
    for epochs in args.epochs:
        finetune = cfg.finetune.copy()
        finetune.epochs = epochs
        ctx = BuildContext(channels, size, cfg.model.backbone, finetune, cfg.seed, evaluated)
        try:
            learner = build_method(parse_method(cfg.methods[0]), ctx)
        except MethodError as err:
            parser.error(str(err))
        with torch.no_grad():
            logits = learner.adapt_batch(batch.support_x, batch.support_y)(batch.query_x)
        accuracy = (logits.argmax(-1) == batch.query_y).float().mean(-1)
        spread = logits.std(dim=1).mean(-1)  # over queries, averaged over classes
        largest = logits.abs().flatten(1).amax(1)
        print(
            f"{epochs:4d} epochs  accuracy % {[round(100 * a, 2) for a in accuracy.tolist()]}  "
            f"logit spread over queries {[round(s, 4) for s in spread.tolist()]}  "
            f"largest |logit| {[round(m, 3) for m in largest.tolist()]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
