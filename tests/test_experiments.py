"""The Omniglot study's quick mode runs end to end on the real data (skipped without it)."""

import csv
import gzip
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fewshot.evaluation.report import p_text
from fewshot.stats import mean_ci, paired_difference

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "experiments" / "omniglot"


def test_omniglot_study_quick_mode_runs_end_to_end(omniglot_zip, tmp_path):
    data = omniglot_zip("images_background_small1.zip").parent
    omniglot_zip("images_background_small2.zip")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        ["bash", str(STUDY / "run.sh"), "--quick", "--out", str(tmp_path), "--data", str(data)],
        check=True,
        cwd=ROOT,
        env=env,
    )
    # (the quick mode averages 2 test-time views where the study averages 16, and takes 2 test steps where it
    # takes 10 to 30; its labels say so)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["settings"] == ["5w1s", "5w5s", "20w1s", "20w5s", "20w1s-within"]
    assert report["baseline"] == "linear-probe" and len(report["methods"]) == 247
    assert {
        "maml-2steps",
        "maml-pretrained-2steps",
        "reptile-2steps",
        "protomaml-pretrained",
        "protomaml-protonet",
        "maml20-pretrained-2steps",
        "full-finetune-lr0.0001",
        "protonet-flip",
        "protomaml-protonet-flip",
        "simpleshot-flip",
        "maml-pretrained-flip-2steps",
        "protonet-flip-elastic",
        "protonet5-flip",
        "protonet-flip-2views",
        "protonet-flip-w128-2views",
        "linear-probe-flip-2views",
        "protomaml2-protonet-flip",
        "protonet-flip-5k-2views",
        "protonet-flip-trainval-2views",
        "protonet-flip-5k-trainval-2views",
        "protomaml-protonet-flip-5k-trainval",
        "maml-protonet-flip-2steps",
        "protoreptile-protonet-flip",
        "protonet-flip-refine2",
        "protonet-flip-5k-trainval-2views-refine2",
        "protonet-flip-nopool-2views",
        "protonet-flip-5k-trainval-nopool-2views-refine2",
        "protonet-flip-5k-trainval-s1-2views",
        "protonet-flip-5k-trainval-x2-2views-refine2",
        "protonet-flip-5k-trainval-x3-2views",
        "maml-zero-protonet-flip-5k-trainval-2steps",
        "maml-zero-pretrained-flip-2steps",
        "maml-zero-protonet-flip-5k-trainval-init-2steps",
        "fomaml-zero-protonet-flip-5k-trainval-2steps",
        "fomaml-zero-protonet-flip-5k-trainval-4500-2steps",
        "maml-zero-pretrained-flip-init-2steps",
        "metasgd-zero-protonet-flip-5k-trainval-2steps",
        "metasgd-fo-zero-protonet-flip-5k-trainval-4500-2steps",
        "reptile-zero-protonet-flip-5k-trainval",
        "reptile-zero-mb-protonet-flip-5k-trainval",
        "reptile-zero-1shot-protonet-flip-5k-trainval",
        "reptile-zero-10shot-mb-protonet-flip-5k-trainval",
        "reptile-zero-10shot-mb1-protonet-flip-5k-trainval",
        "reptile-zero-20way-mb-protonet-flip-5k-trainval",
        "simpleshot-flip-cos",
        "simpleshot-flip-12k-bf16-globalmax-up36-2views",
        "reptile-zero-10shot-mb-3k-pretrained-flip-12k-bf16-globalmax-up36",
        "reptile-zero-10shot-mb-3k-pretrained-flip-12k-bf16-globalmax-up36-2views",
        "reptile-zero-10shot-mb-3k-lr0.02-pretrained-flip-12k-bf16-globalmax-up36",
        "reptile-zero-10shot-mb-3k-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-2steps",
        "reptile-zero-10shot-mb-3k-lr0.02-sgd1-pretrained-flip-12k-bf16-globalmax-up36",
        "reptile-zero-10shot-mb-3k-lr0.02-sgd1-pretrained-flip-12k-bf16-globalmax-up36-2steps",
        "reptile-zero-5shot-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36",
        "reptile-zero-10shot-mb-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36",
        "reptile-zero-10shot-mb-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-init",
        "reptile-zero-10shot-mb-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-init-2steps",
        "fomaml-zero-5shot-lr0.02-pretrained-flip-12k-bf16-globalmax-up36",
        "fomaml-zero-5shot-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-2steps",
        "fomaml-zero-5shot-30steps-lr0.02-pretrained-flip-12k-bf16-globalmax-up36",
        "linear-probe-flip-cos",
        "reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval",
        "reptile-zero-10shot-mb-protonet-flip-5k-trainval-s1",
        "reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s1",
        "protomaml-protonet-flip-5k-trainval-init",
        "reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s2",
        "reptile-zero-10shot-mb-4500-pretrained-flip",
        "metasgd-zero-rates1e-3-protonet-flip-5k-trainval-2steps",
        "metasgd-zero-pretrained-flip-2steps",
        "reptile-zero-10shot-mb-4500-pretrained-flip-s2",
        "metasgd-zero-pretrained-flip-s1-2steps",
        "metasgd-zero-rates1e-3-pretrained-flip-2steps",
        "maml-zero-pretrained-flip-s1-2steps",
        "metasgd-zero-rates1e-3-pretrained-flip-s1-2steps",
        "reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05",
        "reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2",
        "reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05-s1",
        "maml-zero-pretrained-flip-s2-2steps",
        "metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1-2steps",
        "metasgd-zero-min0-pretrained-flip-2steps",
        "metasgd-zero-10steps-pretrained-flip-2steps",
        "metasgd-zero-min0-pretrained-flip-s1-2steps",
        "protonet-flip-5k-trainval-distill-2views",
        "protonet-flip-5k-trainval-distill-s1-2views",
        "protonet-flip-5k-trainval-distill-x2-2views",
        "protonet-flip-10k-trainval-2views",
        "protonet-flip-10k-trainval-s1-2views",
        "protonet-flip-16k-trainval-2views",
        "protonet-flip-10k-trainval-x2-2views",
        "protonet-flip-5k-trainval-bf16-2views",
        "protonet-flip-28k-trainval-bf16-2views",
        "protonet-flip-28k-trainval-bf16-s1-2views",
        "protonet-flip-28k-trainval-bf16-x2-2views",
        "protonet-flip-16k-trainval-bf16-120way-2views",
        "protonet-flip-16k-trainval-bf16-120way-s1-2views",
        "protonet-flip-16k-trainval-bf16-120way-x2-2views",
        "protonet-flip-16k-trainval-bf16-11query-2views",
        "protonet-flip-16k-trainval-bf16-2views",
        "protonet-flip-16k-trainval-bf16-s1-2views",
        "protonet-flip-16k-trainval-bf16-x2-2views",
        "protonet-flip-bf16-2views",
        "protonet-flip-bf16-2views-whiten0.3",
        "protonet-flip-16k-trainval-bf16-2views-whiten0.3",
        "protonet-flip-16k-trainval-bf16-s1-2views-whiten0.3",
        "protonet-flip-bf16-2views-whiten5-prior30",
        "protonet-flip-16k-trainval-bf16-2views-whiten5-prior30",
        "protonet-flip-16k-trainval-bf16-s1-2views-whiten5-prior30",
        "protonet-flip-16k-trainval-bf16-120way-2views-whiten5-prior30",
        "protonet-flip-16k-trainval-bf16-120way-s1-2views-whiten5-prior30",
        "protonet-flip-16k-trainval-bf16-x2-2views-whiten5-prior30",
        "protonet-flip-16k-trainval-bf16-120way-x2-2views-whiten5-prior30",
        "protonet-flip-bf16-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-s1-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-120way-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-120way-s1-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-x2-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-120way-x2-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-globalmax-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-globalmax-s1-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-globalmax-x2-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-globalmax-within-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-globalmax-within-s1-2views-whiten3-prior30",
        "protonet-flip-16k-trainval-bf16-globalmax-within-x2-2views-whiten3-prior30",
        "protomaml-protonet-flip-16k-trainval-bf16-globalmax-init",
        "protomaml-protonet-flip-16k-trainval-bf16-globalmax-within-s1-init-2views",
    } <= set(report["methods"])
    # the -flip runs train on 8 classes per character (rotations and mirror images), the others on 4
    for run in ("pretrain", "protonet", "protomaml-protonet", "maml-pretrained"):
        assert OmegaConf.load(tmp_path / f"{run}-flip" / "config.yaml").data.reflections is True
    for run in ("pretrain", "protonet", "maml-pretrained"):
        assert OmegaConf.load(tmp_path / run / "config.yaml").data.reflections is False
    elastic = OmegaConf.load(tmp_path / "protonet-flip-elastic" / "config.yaml").data
    assert elastic.reflections is True and elastic.augment == "affine-elastic"
    assert OmegaConf.load(tmp_path / "protonet-flip-w128" / "config.yaml").model.backbone == "conv4-128"
    # the session-25 meta-learners start from protonet-flip's backbone; Reptile with the class-mean head
    for run in ("maml-protonet-flip", "protoreptile-protonet-flip"):
        cfg = OmegaConf.load(tmp_path / run / "config.yaml")
        assert cfg.model.pretrained == str(tmp_path / "protonet-flip" / "best.pt")
        assert cfg.inner.proto_head is (run == "protoreptile-protonet-flip")
    # the session-28 to 30 MAML and Meta-SGD runs start every task's head from zero, from ProtoNet's or the
    # supervised backbone
    for run, start, first_order in (
        ("maml-zero-protonet-flip-5k-trainval", "protonet-flip-5k-trainval/last.pt", False),
        ("maml-zero-pretrained-flip", "pretrain-flip/best.pt", False),
        ("maml-zero-protonet-flip-5k-trainval-init", "protonet-flip-5k-trainval/last.pt", False),
        ("fomaml-zero-protonet-flip-5k-trainval", "protonet-flip-5k-trainval/last.pt", True),
        ("fomaml-zero-protonet-flip-5k-trainval-4500", "protonet-flip-5k-trainval/last.pt", True),
        ("maml-zero-pretrained-flip-init", "pretrain-flip/best.pt", False),
        ("metasgd-zero-protonet-flip-5k-trainval", "protonet-flip-5k-trainval/last.pt", False),
        ("metasgd-fo-zero-protonet-flip-5k-trainval-4500", "protonet-flip-5k-trainval/last.pt", True),
        ("metasgd-zero-rates1e-3-protonet-flip-5k-trainval", "protonet-flip-5k-trainval/last.pt", False),
        ("metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1", "protonet-flip-5k-trainval/last.pt", False),
        ("maml-zero-pretrained-flip-s2", "pretrain-flip/best.pt", False),
        ("metasgd-zero-min0-pretrained-flip", "pretrain-flip/best.pt", False),
        ("metasgd-zero-min0-pretrained-flip-s1", "pretrain-flip/best.pt", False),
    ):
        cfg = OmegaConf.load(tmp_path / run / "config.yaml")
        learner = "metasgd" if run.startswith("metasgd") else "fomaml" if first_order else "maml"
        assert cfg.learner == learner
        assert cfg.model.pretrained == str(tmp_path / start) and cfg.inner.zero_head is True
        assert (cfg.inner.steps, cfg.inner.first_order, cfg.data.reflections) == (2, first_order, True)
        assert cfg.optim.rates_lr == (0.001 if "-rates1e-3-" in run else None)
        assert cfg.inner.min_lr == (0.0 if "-min0-" in run else None)
    # session 36's Meta-SGD meta-trained with the 10 inner steps the others are scored with
    ten = OmegaConf.load(tmp_path / "metasgd-zero-10steps-pretrained-flip" / "config.yaml")
    assert (ten.learner, ten.inner.steps, ten.inner.zero_head) == ("metasgd", 10, True)
    assert ten.model.pretrained == str(tmp_path / "pretrain-flip/best.pt")
    # session 31's to 33's Reptile runs: the same head, SGD steps of 0.2 from ProtoNet's backbone (0.1 from
    # the supervised one), on 5-way 5-shot tasks (each step on all the support set or one image of every
    # class), 5-way 1-shot tasks, 5-way 10-shot tasks with two or one images of every class per step, or
    # 20-way 5-shot tasks with one
    protonet = "protonet-flip-5k-trainval/last.pt"
    for run, step_shots, steps, n_way, k_shot, start, lr in (
        ("reptile-zero-protonet-flip-5k-trainval", None, 5, 5, 5, protonet, 0.2),
        ("reptile-zero-mb-protonet-flip-5k-trainval", 1, 5, 5, 5, protonet, 0.2),
        ("reptile-zero-1shot-protonet-flip-5k-trainval", None, 5, 5, 1, protonet, 0.2),
        ("reptile-zero-10shot-mb-protonet-flip-5k-trainval", 2, 5, 5, 10, protonet, 0.2),
        ("reptile-zero-10shot-mb1-protonet-flip-5k-trainval", 1, 10, 5, 10, protonet, 0.2),
        ("reptile-zero-20way-mb-protonet-flip-5k-trainval", 1, 5, 20, 5, protonet, 0.2),
        ("reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval", 2, 5, 5, 10, protonet, 0.2),
        ("reptile-zero-10shot-mb-protonet-flip-5k-trainval-s1", 2, 5, 5, 10, protonet, 0.2),
        ("reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s1", 2, 5, 5, 10, protonet, 0.2),
        ("reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s2", 2, 5, 5, 10, protonet, 0.2),
        ("reptile-zero-10shot-mb-4500-pretrained-flip", 2, 5, 5, 10, "pretrain-flip/best.pt", 0.1),
        ("reptile-zero-10shot-mb-4500-pretrained-flip-s1", 2, 5, 5, 10, "pretrain-flip/best.pt", 0.1),
        ("reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05", 2, 5, 5, 10, "pretrain-flip/best.pt", 0.05),
        ("reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2", 2, 5, 5, 10, "pretrain-flip/best.pt", 0.2),
        ("reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05-s1", 2, 5, 5, 10, "pretrain-flip/best.pt", 0.05),
        ("reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2-s1", 2, 5, 5, 10, "pretrain-flip/best.pt", 0.2),
    ):
        cfg = OmegaConf.load(tmp_path / run / "config.yaml")
        assert (cfg.learner, cfg.inner.zero_head, cfg.inner.step_shots) == ("reptile", True, step_shots)
        assert cfg.model.pretrained == str(tmp_path / start)
        assert (cfg.inner.lr, cfg.inner.steps, cfg.inner.optimizer) == (lr, steps, "sgd")
        assert (cfg.task.n_way, cfg.task.k_shot) == (n_way, k_shot)
    for run, seed in (
        ("reptile-zero-10shot-mb-protonet-flip-5k-trainval-s1", 1),
        ("reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s1", 1),
        ("reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s2", 2),
        ("reptile-zero-10shot-mb-4500-pretrained-flip-s1", 1),
        ("maml-zero-pretrained-flip-s1", 1),
        ("metasgd-zero-rates1e-3-pretrained-flip-s1", 1),
        ("reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05-s1", 1),
        ("maml-zero-pretrained-flip-s2", 2),
        ("metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1", 1),
        ("metasgd-zero-min0-pretrained-flip-s1", 1),
        ("reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2-s1", 1),
    ):
        assert OmegaConf.load(tmp_path / run / "config.yaml").train.seed == seed
    # session 37's ProtoNets distilled from protonet-flip-5k-trainval, with seeds 0 and 1
    for run, seed in (("protonet-flip-5k-trainval-distill", 0), ("protonet-flip-5k-trainval-distill-s1", 1)):
        cfg = OmegaConf.load(tmp_path / run / "config.yaml")
        assert (cfg.learner, cfg.train.seed, cfg.data.reflections) == ("protonet", seed, True)
        assert cfg.distill.teacher == str(tmp_path / "protonet-flip-5k-trainval" / "last.pt")
        assert (cfg.distill.weight, cfg.distill.temperature) == (0.5, 4.0)
        assert cfg.data.split.manifest == str(tmp_path / "small1_trainval.json")
    # and from the first two seeds as one teacher, at temperature 8 on their summed logits
    x2 = OmegaConf.load(tmp_path / "protonet-flip-5k-trainval-distill-x2" / "config.yaml")
    teachers = [str(tmp_path / f"protonet-flip-5k-trainval{s}" / "last.pt") for s in ("", "-s1")]
    assert (x2.distill.teacher, x2.distill.temperature, x2.train.seed) == (",".join(teachers), 8.0, 0)
    # session 38's longer ProtoNets (10,000 steps, seeds 0 and 1, and 16,000; train.steps is 2 in quick mode)
    # and session 39's in bf16 autocast on the CPU (5,000 steps, and 28,000 with seeds 0 and 1), and session
    # 40's 120-way ones (16,000 steps in bf16, seeds 0 and 1), and session 41's 60-way ones in bf16 for
    # 16,000 steps, with 11 queries per class (not checked here: the quick mode gives every run
    # task.q_query=2) and with the usual 5 (seeds 0 and 1)
    for run, seed, bf16, n_way in (
        ("protonet-flip-10k-trainval", 0, False, 60),
        ("protonet-flip-10k-trainval-s1", 1, False, 60),
        ("protonet-flip-16k-trainval", 0, False, 60),
        ("protonet-flip-5k-trainval-bf16", 0, True, 60),
        ("protonet-flip-28k-trainval-bf16", 0, True, 60),
        ("protonet-flip-28k-trainval-bf16-s1", 1, True, 60),
        ("protonet-flip-16k-trainval-bf16-120way", 0, True, 120),
        ("protonet-flip-16k-trainval-bf16-120way-s1", 1, True, 120),
        ("protonet-flip-16k-trainval-bf16-11query", 0, True, 60),
        ("protonet-flip-16k-trainval-bf16", 0, True, 60),
        ("protonet-flip-16k-trainval-bf16-s1", 1, True, 60),
    ):
        cfg = OmegaConf.load(tmp_path / run / "config.yaml")
        assert (cfg.learner, cfg.train.seed, cfg.data.reflections) == ("protonet", seed, True)
        assert (cfg.train.bf16, cfg.task.n_way) == (bf16, n_way)
        assert cfg.data.split.manifest == str(tmp_path / "small1_trainval.json")
    # session 51's network on characters decoded at 36x36 (its own evaluation, not the study's, scores it)
    big = OmegaConf.load(tmp_path / "protonet-flip-14k-trainval-bf16-globalmax-36px" / "config.yaml")
    assert (big.data.image_size, big.model.backbone, big.train.bf16) == (36, "conv4-globalmax", True)
    assert big.data.split.manifest == str(tmp_path / "small1_trainval.json")
    # session 52's: the same network on the task's 28x28 images, resized to 36x36 inside it (seeds 0 and 1),
    # and sessions 53's and 54's third and fourth seeds, for 12,500 steps
    for seed, run in (
        (0, "protonet-flip-13k-trainval-bf16-globalmax-up36"),
        (1, "protonet-flip-13k-trainval-bf16-globalmax-up36-s1"),
        (2, "protonet-flip-12.5k-trainval-bf16-globalmax-up36-s2"),
        (3, "protonet-flip-12.5k-trainval-bf16-globalmax-up36-s3"),
    ):
        up = OmegaConf.load(tmp_path / run / "config.yaml")
        assert (up.data.image_size, up.model.backbone, up.train.seed) == (28, "conv4-globalmax-up36", seed)
        assert up.train.bf16 and up.data.split.manifest == str(tmp_path / "small1_trainval.json")
    # session 55's supervised backbone with those changes, validated on the held-out characters, and
    # zero-head Reptile from its best checkpoint in fp32 at inner lr 0.1 (session 55) and 0.02 (session 56,
    # also its start not meta-trained: below); all scored, session 55's Reptile also with views through its
    # steps
    pre = OmegaConf.load(tmp_path / "pretrain-flip-12k-bf16-globalmax-up36" / "config.yaml")
    assert (pre.learner, pre.model.backbone, pre.train.bf16, pre.data.reflections) == (
        "pretrain",
        "conv4-globalmax-up36",
        True,
        True,
    )
    assert pre.data.split.manifest == str(tmp_path / "small1_split.json")
    for run, inner_lr in (
        ("reptile-zero-10shot-mb-3k-pretrained-flip-12k-bf16-globalmax-up36", 0.1),
        ("reptile-zero-10shot-mb-3k-lr0.02-pretrained-flip-12k-bf16-globalmax-up36", 0.02),
        ("reptile-zero-10shot-mb-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-init", 0.02),
        ("reptile-zero-10shot-mb-3k-lr0.02-sgd1-pretrained-flip-12k-bf16-globalmax-up36", 0.02),
    ):
        reptile = OmegaConf.load(tmp_path / run / "config.yaml")
        assert reptile.model.pretrained == str(tmp_path / "pretrain-flip-12k-bf16-globalmax-up36" / "best.pt")
        assert (reptile.learner, reptile.model.backbone, reptile.train.bf16) == (
            "reptile",
            "conv4-globalmax-up36",
            False,
        )
        assert (reptile.inner.lr, reptile.inner.zero_head, reptile.task.k_shot, reptile.inner.step_shots) == (
            inner_lr,
            True,
            10,
            2,
        )
    # session 59: session 56's Reptile at 0.02 with a plain SGD outer step (epsilon 1 on a cosine to 0, no
    # momentum)
    sgd = OmegaConf.load(
        tmp_path
        / "reptile-zero-10shot-mb-3k-lr0.02-sgd1-pretrained-flip-12k-bf16-globalmax-up36"
        / "config.yaml"
    )
    assert (sgd.optim.name, sgd.optim.lr, sgd.optim.momentum, sgd.optim.schedule) == (
        "sgd",
        1.0,
        0.0,
        "cosine",
    )
    # session 60: Reptile from the same checkpoint whose inner loop is the rule it is scored with (30 steps of
    # 0.02 on the whole 5-shot support set), with that outer step
    r30 = OmegaConf.load(
        tmp_path / "reptile-zero-5shot-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36" / "config.yaml"
    )
    assert r30.model.pretrained == sgd.model.pretrained
    assert (r30.learner, r30.inner.zero_head, r30.inner.lr, r30.inner.steps, r30.task.k_shot) == (
        "reptile",
        True,
        0.02,
        30,
        5,
    )
    assert r30.inner.step_shots is None
    assert (r30.optim.name, r30.optim.lr, r30.optim.schedule) == ("sgd", 1.0, "cosine")
    # session 61: the same 30-step inner loop on changing 2-image minibatches of 10-shot tasks
    r30mb = OmegaConf.load(
        tmp_path
        / "reptile-zero-10shot-mb-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36"
        / "config.yaml"
    )
    assert r30mb.model.pretrained == sgd.model.pretrained
    assert (r30mb.inner.lr, r30mb.inner.steps, r30mb.task.k_shot, r30mb.inner.step_shots) == (0.02, 30, 10, 2)
    assert r30mb.inner.zero_head is True
    assert (r30mb.optim.name, r30mb.optim.lr, r30mb.optim.momentum) == ("sgd", 1.0, 0.0)
    # session 57: first-order MAML with a zero head from the same checkpoint, meta-trained with the rule it is
    # scored with (10 steps of 0.02; the quick mode takes 1 test step) on 5-way 5-shot tasks, validated on
    # 20-way 5-shot episodes
    fo_run = "fomaml-zero-5shot-lr0.02-pretrained-flip-12k-bf16-globalmax-up36"
    fo = OmegaConf.load(tmp_path / fo_run / "config.yaml")
    assert fo.model.pretrained == str(tmp_path / "pretrain-flip-12k-bf16-globalmax-up36" / "best.pt")
    assert (fo.learner, fo.model.backbone, fo.inner.first_order, fo.inner.zero_head) == (
        "fomaml",
        "conv4-globalmax-up36",
        True,
        True,
    )
    assert (fo.inner.lr, fo.inner.steps, fo.task.k_shot, fo.train.val_setting) == (0.02, 10, 5, "20w5s")
    # session 58: the same with the 30 steps validation picks, in training as at test (the quick mode's 1 test
    # step aside)
    fo30 = OmegaConf.load(tmp_path / fo_run.replace("5shot", "5shot-30steps") / "config.yaml")
    assert fo30.model.pretrained == fo.model.pretrained
    assert (fo30.learner, fo30.inner.first_order, fo30.inner.zero_head, fo30.inner.lr, fo30.inner.steps) == (
        "fomaml",
        True,
        True,
        0.02,
        30,
    )
    assert (fo30.task.k_shot, fo30.train.val_setting) == (5, "20w5s")
    # session 32's pretraining with a cosine classifier, whose scale is learned
    cos = OmegaConf.load(tmp_path / "pretrain-flip-cos" / "config.yaml")
    assert (cos.model.head, cos.data.reflections) == ("cosine", True)
    cos_state = torch.load(tmp_path / "pretrain-flip-cos" / "last.pt", weights_only=True)["model"]
    assert "head.log_scale" in cos_state

    # the -init runs are not meta-trained: their backbone is their start's, bit for bit (the head is unused)
    for run, start in (
        ("maml-zero-protonet-flip-5k-trainval-init", "protonet-flip-5k-trainval/last.pt"),
        ("maml-zero-pretrained-flip-init", "pretrain-flip/best.pt"),
        ("protomaml-protonet-flip-5k-trainval-init", "protonet-flip-5k-trainval/last.pt"),
        (
            "protomaml-protonet-flip-bf16-alphabets-globalmax-init",
            "protonet-flip-bf16-alphabets-globalmax/best.pt",
        ),
        (
            "protomaml-protonet-flip-16k-trainval-bf16-globalmax-s1-init",
            "protonet-flip-16k-trainval-bf16-globalmax-s1/last.pt",
        ),
        (
            "reptile-zero-10shot-mb-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-init",
            "pretrain-flip-12k-bf16-globalmax-up36/best.pt",
        ),
    ):
        init = torch.load(tmp_path / run / "last.pt", weights_only=True)["model"]
        begun = torch.load(tmp_path / start, weights_only=True)["model"]
        backbone = {k.removeprefix("model."): v for k, v in init.items() if k.startswith("model.backbone.")}
        assert backbone and all(torch.equal(v, begun[k]) for k, v in backbone.items())
    # Meta-SGD's checkpoints hold an inner lr per backbone entry, meta-trained away from the 0.2 it starts at
    for run in (
        "metasgd-zero-protonet-flip-5k-trainval",
        "metasgd-fo-zero-protonet-flip-5k-trainval-4500",
        "metasgd-zero-rates1e-3-protonet-flip-5k-trainval",
    ):
        state = torch.load(tmp_path / run / "last.pt", weights_only=True)["model"]
        rates = [v for k, v in state.items() if k.startswith("lrs.backbone")]
        assert rates and not all(torch.equal(r, torch.full_like(r, 0.2)) for r in rates)
    methods = json.loads((tmp_path / "eval" / "methods.json").read_text())
    assert methods["protonet-flip-2views"]["views"] == 2 and "views" not in methods["protonet-flip"]
    viewed = methods[
        "protomaml-protonet-flip-16k-trainval-bf16-globalmax-within-s1-init-2views"
    ]  # Proto-MAML's views
    assert (viewed["kind"], viewed["views"]) == ("fomaml", 2)
    running = methods["protomaml-protonet-flip-16k-trainval-bf16-globalmax-within-s1-init-2views-running"]
    assert (running["views"], running["adapt"]) == (2, {"inner.test_norm": "running"})
    support = methods["protomaml-protonet-flip-16k-trainval-bf16-globalmax-within-s1-init-2views-support"]
    assert support["adapt"] == {"inner.test_norm": "support"}
    whitened = methods["protonet-flip-16k-trainval-bf16-globalmax-s1-2views-whiten3-prior30-refine5"]
    assert (whitened["views"], whitened["whiten"], whitened["prior"], whitened["refine"]) == (2, 3.0, 30, 5)
    levels = methods["protonet-flip-16k-trainval-bf16-globalmax-within-2views-whiten3-prior30-blocks"]
    assert (levels["whiten"], levels["prior"]) == (3.0, 30)
    assert levels["blocks"] == {"1": 0.25, "2": 0.25, "3": 0.5}
    pair = methods["protonet-flip-16k-trainval-bf16-globalmax-x2-2views-whiten3-prior30-refine5"]
    assert len(pair["members"]) == 1 and (pair["whiten"], pair["refine"]) == (3.0, 5)
    refined = methods["protonet-flip-2views-refine2"]
    assert (refined["views"], refined["refine"]) == (2, 2) and "refine" not in methods["protonet-flip-2views"]
    for run in ("protonet-flip-nopool", "protonet-flip-5k-trainval-nopool"):
        assert OmegaConf.load(tmp_path / run / "config.yaml").model.backbone == "conv4-nopool"
    for run in ("protonet-flip-16k-trainval-bf16-globalmax", "protonet-flip-16k-trainval-bf16-globalmax-s1"):
        cfg = OmegaConf.load(tmp_path / run / "config.yaml")
        assert (cfg.model.backbone, cfg.train.seed) == ("conv4-globalmax", run.endswith("-s1"))
        within = OmegaConf.load(tmp_path / run.replace("globalmax", "globalmax-within") / "config.yaml")
        assert within.task.within_group is True and cfg.task.within_group is False
        assert (within.model.backbone, within.train.seed) == (cfg.model.backbone, cfg.train.seed)
    # the -trainval runs train on every small1 character and are scored from their last checkpoint
    for run in (
        "protonet-flip-trainval",
        "protonet-flip-5k-trainval",
        "protonet-flip-5k-trainval-s1",
        "protonet-flip-5k-trainval-s2",
        "protomaml-protonet-flip-5k-trainval",
        "protonet-flip-5k-trainval-nopool",
        "maml-zero-protonet-flip-5k-trainval",
        "maml-zero-protonet-flip-5k-trainval-init",
        "fomaml-zero-protonet-flip-5k-trainval",
        "fomaml-zero-protonet-flip-5k-trainval-4500",
        "metasgd-zero-protonet-flip-5k-trainval",
        "metasgd-fo-zero-protonet-flip-5k-trainval-4500",
        "metasgd-zero-rates1e-3-protonet-flip-5k-trainval",
        "metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1",
        "reptile-zero-protonet-flip-5k-trainval",
        "reptile-zero-mb-protonet-flip-5k-trainval",
        "reptile-zero-1shot-protonet-flip-5k-trainval",
        "reptile-zero-10shot-mb-protonet-flip-5k-trainval",
        "reptile-zero-10shot-mb1-protonet-flip-5k-trainval",
        "reptile-zero-20way-mb-protonet-flip-5k-trainval",
        "reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval",
        "reptile-zero-10shot-mb-protonet-flip-5k-trainval-s1",
        "reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s1",
        "reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s2",
        "protomaml-protonet-flip-5k-trainval-init",
    ):
        split = OmegaConf.load(tmp_path / run / "config.yaml").data.split
        assert split.manifest == str(tmp_path / "small1_trainval.json")
        assert len(json.loads((tmp_path / run / "split.json").read_text())["splits"]["base"]) == 136
        assert methods[run]["checkpoint"] == str(tmp_path / run / "last.pt")
    for seed in (1, 2):
        assert (
            OmegaConf.load(tmp_path / f"protonet-flip-5k-trainval-s{seed}" / "config.yaml").train.seed == seed
        )
    for n, seeds in ((2, ["-s1"]), (3, ["-s1", "-s2"])):  # the seeds' features side by side
        ensemble = methods[f"protonet-flip-5k-trainval-x{n}-2views-refine2"]
        assert ensemble["checkpoint"] == methods["protonet-flip-5k-trainval"]["checkpoint"]
        expected = [methods[f"protonet-flip-5k-trainval{s}"]["checkpoint"] for s in seeds]
        assert [m["checkpoint"] for m in ensemble["members"]] == expected
    # session 42's whitened features: views first, the shrinkage chosen on protonet-flip-bf16's held-out
    # characters (that run trains in bf16 on 116 characters, and validates on the other 20)
    for run, checkpoint in (
        ("protonet-flip-bf16", "best.pt"),
        ("protonet-flip-16k-trainval-bf16", "last.pt"),
        ("protonet-flip-16k-trainval-bf16-s1", "last.pt"),
    ):
        whitened = methods[f"{run}-2views-whiten0.3"]
        assert (whitened["views"], whitened["whiten"], whitened["checkpoint"]) == (
            2,
            0.3,
            str(tmp_path / run / checkpoint),
        )
        assert "whiten" not in methods[f"{run}-2views"]
    valnet = OmegaConf.load(tmp_path / "protonet-flip-bf16" / "config.yaml")
    assert (valnet.train.bf16, valnet.data.reflections, valnet.task.n_way) == (True, True, 60)
    assert valnet.data.split.manifest == str(tmp_path / "small1_split.json")
    # whitening pooled with each support set, chosen on networks with two alphabets held out: session 43's
    # s = 5 on one split, session 44's s = 3 over three
    for (run, checkpoint), shrink in itertools.product(
        (
            ("protonet-flip-bf16", "best.pt"),
            ("protonet-flip-16k-trainval-bf16", "last.pt"),
            ("protonet-flip-16k-trainval-bf16-120way-s1", "last.pt"),
        ),
        (5, 3),
    ):
        pooled = methods[f"{run}-2views-whiten{shrink}-prior30"]
        expected = (2, float(shrink), 30.0, str(tmp_path / run / checkpoint))
        assert (pooled["views"], pooled["whiten"], pooled["prior"], pooled["checkpoint"]) == expected
    for shrink in (5, 3):
        pair = methods[f"protonet-flip-16k-trainval-bf16-x2-2views-whiten{shrink}-prior30"]
        assert [m["checkpoint"] for m in pair["members"]] == [
            str(tmp_path / "protonet-flip-16k-trainval-bf16-s1" / "last.pt")
        ]
        assert (pair["views"], pair["whiten"], pair["prior"]) == (2, float(shrink), 30.0)
    for suffix, held_out, sizes in (
        ("", {"Greek", "Korean"}, (72, 64)),
        ("2", {"Balinese", "Latin"}, (86, 50)),
        ("3", {"Early_Aramaic", "Korean"}, (74, 62)),
    ):
        by_alphabet = tmp_path / f"protonet-flip-bf16-alphabets{suffix}"
        cfg = OmegaConf.load(by_alphabet / "config.yaml")
        assert (cfg.train.bf16, cfg.data.reflections, cfg.data.split.manifest) == (
            True,
            True,
            str(tmp_path / f"small1_alphabets{suffix}.json"),
        )
        splits = json.loads((by_alphabet / "split.json").read_text())["splits"]
        assert {c.split("/")[0] for c in splits["val"]} == held_out
        assert not {c.split("/")[0] for c in splits["base"]} & held_out
        assert (len(splits["base"]), len(splits["val"])) == sizes
    # runs that validate on held-out characters are scored at their best checkpoint
    for run in (
        "protonet-flip-5k",
        "reptile-zero-10shot-mb-4500-pretrained-flip",
        "reptile-zero-10shot-mb-4500-pretrained-flip-s1",
    ):
        assert methods[run]["checkpoint"] == str(tmp_path / run / "best.pt")
    for key in report["settings"]:
        assert set(report["results"][key]) == set(report["methods"])
    # the committed manifests are reproduced
    for manifest in (
        "small1_split.json",
        "small1_trainval.json",
        "small1_alphabets.json",
        "small1_alphabets2.json",
        "small1_alphabets3.json",
        "small2_novel.json",
    ):
        assert json.loads((tmp_path / manifest).read_text()) == json.loads((STUDY / manifest).read_text())
    timings = (tmp_path / "timings.tsv").read_text().split()
    assert "evaluate" in timings and "maml-pretrained" in timings
    # the test-step sweep on the validation characters runs on a finished run
    sweep = [sys.executable, str(STUDY / "test_steps_on_val.py"), "--run", str(tmp_path / "reptile")]
    sweep += ["--ways", "5", "--shots", "1", "--steps", "1", "2", "--lrs", "0.01", "0.1", "--episodes", "2"]
    lines = subprocess.run(sweep, check=True, cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"5-way 1-shot, {steps} test steps of lr {lr}" for lr in (0.01, 0.1) for steps in (1, 2)
    ]
    sweep = [sys.executable, str(STUDY / "test_steps_on_val.py"), "--checkpoint", "last.pt", "--run"]
    sweep += [str(tmp_path / "metasgd-zero-protonet-flip-5k-trainval"), "--ways", "5", "--shots", "1"]
    sweep += ["--steps", "1", "--episodes", "2"]  # Meta-SGD adapts with its learned rate per entry
    lines = subprocess.run(sweep, check=True, cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["5-way 1-shot, 1 test steps of the learned lrs"]
    # the collapse diagnosis re-runs evaluation episodes of full-finetune and gets their scores again
    diagnose = [sys.executable, str(STUDY / "finetune_collapse.py"), "--run", str(tmp_path / "pretrain")]
    diagnose += ["--setting", "5w1s", "--episodes", "0", "1", "--epochs", "1"]
    diagnose += ["--data-root", str(data / "images_background_small2.zip"), "--manifest"]
    diagnose += [str(tmp_path / "small2_novel.json"), "q_query=2"]
    out = subprocess.run(diagnose, check=True, cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    with open(tmp_path / "eval" / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if (r["method"], r["setting"]) == ("full-finetune", "5w1s")]
    scores = [round(100 * float(r["accuracy"]), 2) for r in sorted(rows, key=lambda r: int(r["episode"]))]
    assert out[0] == "5w1s, episodes [0, 1]" and out[1].startswith(f"   1 epochs  accuracy % {scores}")
    # an unfinished evaluation (every chunk saved but scratch's): started again, run.sh resumes it
    finished = torch.load(tmp_path / "eval" / "scores.pt", weights_only=True)
    saved = {
        key: {
            label: {"chunks": {0: {m: v for m, v in entry.items() if m != "seconds"}}, "seconds": 1.0}
            for label, entry in by_label.items()
            if label != "scratch"
        }
        for key, by_label in finished.items()
    }
    saved["5w1s"]["linear-probe"]["chunks"][0]["accuracy"] = torch.full((2,), 0.125)  # proves it is read
    (tmp_path / "eval" / "partial").mkdir()
    torch.save(saved, tmp_path / "eval" / "partial" / "rank0.pt")
    (tmp_path / "eval" / "scores.pt").unlink()
    # (--only pretrain: one finished run is resumed, a no-op, and the others are not started again)
    quick = ["bash", str(STUDY / "run.sh"), "--quick", "--out", str(tmp_path), "--data", str(data)]
    quick += ["--only", "pretrain"]
    subprocess.run(quick, check=True, cwd=ROOT, env=env)
    resumed = torch.load(tmp_path / "eval" / "scores.pt", weights_only=True)
    assert resumed["5w1s"]["linear-probe"]["accuracy"].tolist() == [0.125, 0.125]
    for key in report["settings"]:
        assert torch.equal(resumed[key]["scratch"]["accuracy"], finished[key]["scratch"]["accuracy"])
    assert "evaluate (resumed)" in (tmp_path / "timings.tsv").read_text()
    # again, for two methods: the runs are finished, and the last evaluation's scores are reused
    subprocess.run(
        quick + ["--methods", "linear-probe", "--methods", "scratch", "--reuse", str(tmp_path / "eval.prev")],
        check=True,
        cwd=ROOT,
        env=env,
    )
    again = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert again["methods"] == ["linear-probe", "scratch"]
    for key in report["settings"]:
        assert again["reused"][key] == {m: str(tmp_path / "eval.prev") for m in again["methods"]}
        assert again["results"][key]["scratch"]["accuracy"] == report["results"][key]["scratch"]["accuracy"]


def _evaluation(
    folder: Path, method: str, accuracies: dict[int, float], seed: int = 0, gz: bool = False
) -> None:
    """An evaluation folder as the study commits it: per-episode rows and report.json."""
    folder.mkdir()
    rows = "method,setting,n_way,k_shot,episode,accuracy\n"
    rows += "".join(f"{method},5w1s,5,1,{i},{acc}\n" for i, acc in accuracies.items())
    if gz:
        with gzip.open(folder / "results.csv.gz", "wt") as f:
            f.write(rows)
    else:
        (folder / "results.csv").write_text(rows)
    (folder / "report.json").write_text(
        json.dumps({"seed": seed, "q_query": 15, "episodes": len(accuracies)})
    )


def test_pair_results_pairs_the_same_episodes_of_two_evaluations(tmp_path):
    _evaluation(tmp_path / "a", "remade", {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8})
    _evaluation(tmp_path / "b", "committed", {3: 0.8, 1: 0.6, 0: 0.4, 2: 0.5}, gz=True)  # rows in any order
    pair = [sys.executable, str(STUDY / "pair_results.py"), "--a", str(tmp_path / "a"), "remade"]
    out = subprocess.run(
        pair + ["--b", str(tmp_path / "b"), "committed"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    d = paired_difference([0.5, 0.6, 0.7, 0.8], [0.4, 0.6, 0.5, 0.8])
    assert out[-1].startswith(
        f"| 5w1s | 65.00 +- {100 * mean_ci([0.5, 0.6, 0.7, 0.8]).half_width:.2f} | 57.50 +- "
    )
    assert out[-1].endswith(f"| +7.50 +- {100 * d.half_width:.2f} | {p_text(d.p_value)} |")
    _evaluation(tmp_path / "a2", "remade-s1", {0: 0.7, 1: 0.6, 2: 0.9, 3: 0.8})  # a second seed
    seeds = pair + ["--a", str(tmp_path / "a2"), "remade-s1", "--b", str(tmp_path / "b"), "committed"]
    out = subprocess.run(seeds, check=True, capture_output=True, text=True).stdout.splitlines()
    d = paired_difference([0.6, 0.6, 0.8, 0.8], [0.4, 0.6, 0.5, 0.8])  # each episode's seed mean
    assert out[0].startswith("mean of remade (") and " + remade-s1 (" in out[0]
    assert out[-1].startswith("| 5w1s | 70.00 +- ")
    assert out[-1].endswith(f"| +12.50 +- {100 * d.half_width:.2f} | {p_text(d.p_value)} |")
    _evaluation(tmp_path / "c", "committed", {0: 0.4, 1: 0.6, 2: 0.5, 3: 0.8}, seed=1)
    other = subprocess.run(pair + ["--b", str(tmp_path / "c"), "committed"], capture_output=True, text=True)
    assert other.returncode != 0 and "scored different episodes" in other.stderr
    missing = subprocess.run(pair + ["--b", str(tmp_path / "b"), "nope"], capture_output=True, text=True)
    assert missing.returncode != 0 and "no rows of method 'nope'" in missing.stderr
    (tmp_path / "c" / "report.json").write_text("{}")  # not a report
    broken = subprocess.run(pair + ["--b", str(tmp_path / "c"), "committed"], capture_output=True, text=True)
    assert broken.returncode != 0 and "is not an evaluation's report.json" in broken.stderr
    (tmp_path / "a" / "results.csv").write_text("method,episode\nremade,0\n")  # no setting column
    bad = subprocess.run(pair + ["--b", str(tmp_path / "b"), "committed"], capture_output=True, text=True)
    assert bad.returncode != 0 and "cannot read" in bad.stderr and "columns method, setting" in bad.stderr


def test_choose_whitening_ranks_methods_by_their_mean_gain_over_grids(tmp_path):
    def grid(name: str, accuracies: dict[str, dict[str, float]]) -> Path:
        results = {
            setting: {method: {"accuracy": {"mean": value}} for method, value in by_method.items()}
            for setting, by_method in accuracies.items()
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({"results": results}))
        return tmp_path / name

    # a gains 1.0 and 0.0 (mean 0.5); b gains 0.2 and 0.6 (0.4); c is scored in one grid only
    first = grid(
        "g1", {"5w1s": {"v": 90, "a": 91.5, "b": 90, "c": 99}, "5w5s": {"v": 95, "a": 95.5, "b": 95.4}}
    )
    second = grid("g2", {"5w1s": {"v": 80, "a": 80, "b": 80.6}})
    chooser = [sys.executable, str(STUDY / "choose_whitening.py"), "--baseline", "v"]
    out = subprocess.run(
        chooser + [str(first), str(second / "report.json")], check=True, capture_output=True, text=True
    )
    assert out.stdout.splitlines()[2:] == [
        "| a | +1.000 | +0.000 | +0.500 |",
        "| b | +0.200 | +0.600 | +0.400 |",
    ]
    wrong = subprocess.run(chooser[:-1] + ["c", str(first), str(second)], capture_output=True, text=True)
    assert wrong.returncode != 0 and "the baseline 'c' is not scored in every setting" in wrong.stderr
    missing = subprocess.run(chooser + [str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode != 0 and "not found" in missing.stderr
    (second / "report.json").write_text("{}")
    broken = subprocess.run(chooser + [str(second)], capture_output=True, text=True)
    assert broken.returncode != 0 and "is not an evaluation's report.json" in broken.stderr


def test_train_runs_stops_at_a_failing_run_and_names_it(tmp_path):
    queue, timings = tmp_path / "queue", tmp_path / "timings.tsv"
    runner = [sys.executable, str(STUDY / "train_runs.py"), str(queue), str(timings)]
    queue.write_bytes(b"bad\0pretrain\0optim.nope=1\0\0never\0pretrain\0\0")
    failed = subprocess.run(runner, capture_output=True, text=True)
    assert failed.returncode == 2 and "training run bad failed" in failed.stderr
    assert "optim.nope" in failed.stderr and not timings.exists()  # and the next run was not started
    queue.write_bytes(b"cut\0pretrain\0")  # a queue whose last run lost its end
    cut = subprocess.run(runner, capture_output=True, text=True)
    assert cut.returncode == 2 and "cannot read the queue of runs" in cut.stderr and "cut off" in cut.stderr
