"""Session 48's check of why Proto-MAML's rule on running BatchNorm statistics fails in a few 5-way
5-shot episodes of the first alphabet split's validation network: the support loss and query accuracy
after 1, 2 and 3 inner steps, with running and with batch statistics, for given episodes of the
evaluation `runs/screen/val-protomaml-norms-5w5s` (the same sampler, seed and split).

    python experiments/omniglot/inner_steps_by_norm.py 62 270 0
"""

import sys

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fewshot.evaluation.compare import Setting
from fewshot.evaluation.methods import BuildContext, build_method, parse_method
from fewshot.train import load_splits

EVALUATION = "runs/screen/val-protomaml-norms-5w5s/config.yaml"
START = "runs/omniglot/protomaml-protonet-flip-bf16-alphabets-globalmax-init/last.pt"


def main(episodes: list[int]) -> None:
    cfg = OmegaConf.load(EVALUATION)
    splits, _ = load_splits(cfg.data, required=("val",))
    sampler = Setting.parse("5w5s").sampler(splits["val"], cfg.q_query, cfg.seed)
    ctx = BuildContext(
        1, 28, cfg.model.backbone, cfg.finetune, cfg.seed, splits["val"], None, torch.device("cpu")
    )
    for norm in ("running", "batch"):
        learner = build_method(parse_method(f"fomaml:{START}@views=16@inner.test_norm={norm}"), ctx)
        for i in episodes:
            ep, steps = sampler.episode(i), []
            for n in (1, 2, 3):
                learner.test_steps = n
                predict = learner.adapt(ep.support_x, ep.support_y)
                with torch.no_grad():
                    loss = F.cross_entropy(predict(ep.support_x), ep.support_y).item()
                    accuracy = (predict(ep.query_x).argmax(-1) == ep.query_y).float().mean().item()
                steps.append(f"{n}: support loss {loss:.3g}, queries {100 * accuracy:.1f}%")
            print(f"{norm} statistics, episode {i}:", "; ".join(steps))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
