"""The training CLI: every learner, config resolution and errors, resume, atomic checkpoints, NaN."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewshot.config import ConfigError, load_config
from fewshot.data import EpisodeSampler
from fewshot.models import CosineHead, FeatureEnsemble, build_backbone
from fewshot.train import (
    TrainingError,
    WeightAverage,
    build_learner,
    load_checkpoint,
    load_splits,
    main,
    save_checkpoint,
    train,
)

TINY = [
    "data.num_classes=200",
    "task.meta_batch=2",
    "task.q_query=2",
    "train.steps=2",
    "train.val_every=2",
    "train.val_episodes=3",
    "train.batch_size=8",
    "summary.episodes=3",
    "summary.finetune_epochs=1",
    "inner.steps=1",
    "train.quiet=true",
]


@pytest.mark.parametrize("learner", ["maml", "fomaml", "metasgd", "anil", "reptile", "protonet", "pretrain"])
def test_every_learner_trains_from_the_cli(tmp_path, capsys, learner):
    main([learner, *TINY, f"train.out_dir={tmp_path}"])
    run = tmp_path / learner
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    assert (run / "config.yaml").is_file() and (run / "split.json").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert any('"val_accuracy"' in line for line in lines)
    out = capsys.readouterr().out
    if learner != "pretrain":
        assert "fine-tuning conv4 from scratch" in out and (run / "summary.txt").is_file()


def test_pretrained_backbone_feeds_meta_training(tmp_path):
    main(["pretrain", *TINY, f"train.out_dir={tmp_path}"])
    main(["maml", *TINY, f"train.out_dir={tmp_path}", f"model.pretrained={tmp_path}/pretrain/best.pt"])
    pre = load_checkpoint(tmp_path / "pretrain" / "best.pt")["model"]
    cfg = load_checkpoint(tmp_path / "maml" / "last.pt")["config"]
    assert cfg["model"]["pretrained"].endswith("pretrain/best.pt")
    assert "backbone.blocks.0.0.weight" in pre


def test_pretraining_with_a_cosine_head(tmp_path):
    head = CosineHead(6, 4)
    x = torch.randn(3, 6)
    expected = 10 * F.cosine_similarity(x[:, None], head.weight[None], dim=-1)
    torch.testing.assert_close(head(x), expected)
    torch.testing.assert_close(head(2.5 * x), head(x))  # the direction alone scores a class
    main(["pretrain", *TINY, "model.head=cosine", f"train.out_dir={tmp_path}"])
    run = tmp_path / "pretrain"
    state = load_checkpoint(run / "last.pt")["model"]
    assert "head.weight" in state and "head.bias" not in state
    assert state["head.weight"].shape[1] == 64
    assert state["head.log_scale"].shape == () and state["head.log_scale"] != math.log(10)  # learned
    assert not hasattr(CosineHead(6, 4), "log_scale")  # fine-tuning's head keeps its scale of 10
    main(["pretrain", f"train.resume={run}", "train.steps=3", "train.val_every=3", "train.quiet=true"])
    assert load_checkpoint(run / "last.pt")["step"] == 3
    main(["maml", *TINY, f"train.out_dir={tmp_path}", f"model.pretrained={run}/best.pt"])
    for learner in ("maml", "protonet"):
        with pytest.raises(ConfigError, match=f"classifier over the base classes, which {learner} does not"):
            load_config(learner, ["model.head=cosine"])
    with pytest.raises(ConfigError, match="model.head='cos' is not one of: linear, cosine"):
        load_config("pretrain", ["model.head=cos"])


def test_metasgd_rates_get_their_own_outer_lr(tmp_path):
    """With optim.lr=0 only the rates move, by Adam's first step of rates_lr; and only Meta-SGD has rates."""
    args = ["metasgd", *TINY, "train.steps=1", "train.val_every=1", "optim.lr=0", f"train.out_dir={tmp_path}"]
    main([*args, "optim.rates_lr=0.01", "train.name=own"])
    main([*args, "train.name=shared"])
    own, shared = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("own", "shared"))
    weights = [k for k in own if k.startswith("model.") and own[k].is_floating_point()]
    assert weights and all(torch.equal(own[k], shared[k]) for k in weights)  # the weights stayed put
    rates = [k for k in own if k.startswith("lrs.")]
    assert rates and all(torch.equal(shared[k], torch.full_like(shared[k], 0.4)) for k in rates)
    moved = torch.cat([(own[k] - 0.4).abs().flatten() for k in rates])
    assert moved.max() == pytest.approx(0.01, rel=1e-3)  # Adam's first step is lr times a unit sign
    with pytest.raises(ConfigError, match="optim.rates_lr=0.01 sets the outer lr of Meta-SGD's learned"):
        load_config("maml", ["optim.rates_lr=0.01"])
    for key in ("optim.lr", "optim.rates_lr"):
        with pytest.raises(ConfigError, match=f"{key}=-1.0 is negative"):
            load_config("metasgd", [f"{key}=-1"])


def test_metasgd_rates_are_kept_at_or_above_min_lr(tmp_path):
    """inner.min_lr projects the rates after each outer step: Adam's first step of rates_lr moves
    every rate by 0.01, those stepping down stop at the floor, those stepping up are free."""
    args = ["metasgd", *TINY, "train.steps=1", "train.val_every=1", "optim.lr=0", "optim.rates_lr=0.01"]
    main([*args, f"train.out_dir={tmp_path}", "train.name=floor", "inner.min_lr=0.4"])
    main([*args, f"train.out_dir={tmp_path}", "train.name=free"])
    floor, free = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("floor", "free"))
    rates = [k for k in floor if k.startswith("lrs.")]
    down = torch.cat([(free[k] < 0.4).flatten() for k in rates])
    assert down.any() and not down.all()  # the unconstrained run stepped rates both ways
    for k in rates:
        assert torch.equal(floor[k], free[k].clamp(min=0.4))
    with pytest.raises(ConfigError, match="inner.min_lr=0.1 is a floor for Meta-SGD's learned inner rates"):
        load_config("maml", ["inner.min_lr=0.1"])
    with pytest.raises(ConfigError, match="inner.lr=0.05 is below inner.min_lr=0.1"):
        load_config("metasgd", ["inner.lr=0.05", "inner.min_lr=0.1"])


def test_protonet_distils_a_teacher_run_and_is_evaluated_without_it(tmp_path, capsys):
    """distill.teacher trains a ProtoNet on labels and a teacher run's episode predictions; the
    run's checkpoints hold the student alone, resume, and are scored once the teacher is gone."""
    from fewshot.evaluate import main as evaluate

    main(["protonet", *TINY, f"train.out_dir={tmp_path}", "train.name=teacher"])
    teacher = tmp_path / "teacher" / "last.pt"
    args = ["protonet", *TINY, f"train.out_dir={tmp_path}", f"distill.teacher={teacher}"]
    main([*args, "train.name=student"])
    main([*args, "train.name=student0", "distill.weight=0"])
    main(["protonet", *TINY, f"train.out_dir={tmp_path}", "train.name=plain"])
    student, plain, student0 = (
        load_checkpoint(tmp_path / n / "last.pt")["model"] for n in ("student", "plain", "student0")
    )
    assert set(student) == set(plain)  # no teacher weights in the checkpoint
    assert any(not torch.equal(student[k], plain[k]) for k in plain)  # the teacher changed training
    for k in plain:  # with weight 0 the teacher changes nothing
        assert torch.equal(student0[k], plain[k]), k
    assert load_checkpoint(tmp_path / "student" / "last.pt")["config"]["distill"]["weight"] == 0.5
    # several teachers are one ensemble: its logits are the sum of theirs (FeatureEnsemble)
    cfg = load_config("protonet", [*TINY, f"distill.teacher={teacher},{tmp_path / 'plain' / 'last.pt'}"])
    ensemble = build_learner(cfg, 1, 28, 5)._teacher[0]
    assert isinstance(ensemble, FeatureEnsemble) and len(ensemble.members) == 2
    for member, run in zip(ensemble.members, ("teacher", "plain"), strict=True):
        saved = load_checkpoint(tmp_path / run / "last.pt")["model"]
        assert all(torch.equal(v, saved[f"backbone.{k}"]) for k, v in member.state_dict().items())
    main(
        [
            "protonet",
            f"train.resume={tmp_path / 'student'}",
            "train.steps=3",
            "train.val_every=3",
            "train.quiet=true",
        ]
    )
    assert load_checkpoint(tmp_path / "student" / "last.pt")["step"] == 3
    teacher.unlink()
    capsys.readouterr()
    evaluate(
        [
            "data.num_classes=200",
            f"data.split.manifest={tmp_path / 'student' / 'split.json'}",
            f"methods=[protonet:{tmp_path / 'student'}]",
            "settings=[5w1s]",
            "episodes=3",
            f"out_dir={tmp_path}",
            "quiet=true",
        ]
    )
    assert "protonet" in capsys.readouterr().out


def test_protonet_with_a_base_head_saves_it_resumes_and_is_evaluated_without_it(tmp_path, capsys):
    """base_head.weight trains a head over every base class beside ProtoNet's loss: the run's
    checkpoints hold it (so a resumed run goes on with it), and evaluation uses the backbone alone."""
    from fewshot.evaluate import main as evaluate

    args = ["protonet", *TINY, f"train.out_dir={tmp_path}"]
    main([*args, "train.name=headed", "base_head.weight=0.5"])
    main([*args, "train.name=plain"])
    headed, plain = (load_checkpoint(tmp_path / n / "last.pt")["model"] for n in ("headed", "plain"))
    n_base = load_splits(load_config("protonet", TINY).data)[0]["base"].num_classes
    assert headed["base_head.weight"].shape == (n_base, plain["backbone.blocks.3.0.weight"].shape[0])
    assert set(headed) - set(plain) == {"base_head.weight", "base_head.bias"}
    assert any(not torch.equal(headed[k], plain[k]) for k in plain)  # the head changed training
    main(
        [
            "protonet",
            f"train.resume={tmp_path / 'headed'}",
            "train.steps=3",
            "train.val_every=3",
            "train.quiet=true",
        ]
    )
    resumed = load_checkpoint(tmp_path / "headed" / "last.pt")
    assert resumed["step"] == 3 and not torch.equal(
        resumed["model"]["base_head.weight"], headed["base_head.weight"]
    )
    capsys.readouterr()
    evaluate(
        [
            "data.num_classes=200",
            f"data.split.manifest={tmp_path / 'headed' / 'split.json'}",
            f"methods=[protonet:{tmp_path / 'headed'}]",
            "settings=[5w1s]",
            "episodes=3",
            f"out_dir={tmp_path}",
            "quiet=true",
        ]
    )
    assert "protonet" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="base_head.weight=0.5 adds a head over the base classes"):
        load_config("maml", ["base_head.weight=0.5"])
    with pytest.raises(ConfigError, match="base_head.weight=-1.0 must be >= 0"):
        load_config("protonet", ["base_head.weight=-1"])
    with pytest.raises(ConfigError, match="train_whiten.shrink=3.0 whitens ProtoNet's episode features"):
        load_config("reptile", ["train_whiten.shrink=3"])
    with pytest.raises(ConfigError, match="train_whiten.shrink=0.0 must be > 0"):
        load_config("protonet", ["train_whiten.shrink=0"])
    with pytest.raises(ConfigError, match=r"train_blocks.weights=\[0.5\] puts earlier blocks"):
        load_config("maml", ["train_blocks.weights=[0.5]"])
    with pytest.raises(ConfigError, match="needs one weight >= 0 per block before the last"):
        load_config("protonet", ["train_blocks.weights=[0,0,0]"])
    with pytest.raises(ConfigError, match="set the weights too"):
        load_config("protonet", ["train_blocks.apart=true"])
    with pytest.raises(ConfigError, match="two metrics for training's distances"):
        load_config("protonet", ["train_blocks.weights=[0.5]", "train_whiten.shrink=3"])
    # a run trained with earlier blocks in its distances saves the backbone alone, as a plain run
    main([*args, "train.name=blocks", "train_blocks.weights=[0.25,0.25,0.5]"])
    saved = load_checkpoint(tmp_path / "blocks" / "last.pt")
    assert set(saved["model"]) == set(load_checkpoint(tmp_path / "headed" / "last.pt")["model"]) - {
        "base_head.weight",
        "base_head.bias",
    }
    assert list(saved["config"]["train_blocks"]["weights"]) == [0.25, 0.25, 0.5]
    # a run trained whitened saves its running covariance, which its evaluation whitens with
    main([*args, "train.name=whitened", "train_whiten.shrink=3"])
    saved = load_checkpoint(tmp_path / "whitened" / "last.pt")["model"]
    assert int(saved["covariance_updates"]) == 2 * 2  # two steps of two episodes
    assert not torch.equal(
        saved["running_covariance"], torch.eye(len(saved["running_covariance"]), dtype=torch.float64)
    )
    capsys.readouterr()
    evaluate(
        [
            "data.num_classes=200",
            f"data.split.manifest={tmp_path / 'whitened' / 'split.json'}",
            f"methods=[protonet:{tmp_path / 'whitened'}]",
            "settings=[5w1s]",
            "episodes=3",
            f"out_dir={tmp_path}",
            "quiet=true",
        ]
    )
    assert "protonet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("learner", "override", "message"),
    [
        ("maml", "distill.teacher={t}", "trains a ProtoNet to match the teacher's episode predictions; maml"),
        ("protonet", "distill.teacher={t}.missing", "is not a file; give a trained run's checkpoint"),
        ("protonet", "distill.teacher={t},{t}.missing", "teacher.pt.missing is not a file"),
        ("protonet", "distill.weight=1.5", "distill.weight=1.5 must be between 0"),
        ("protonet", "distill.temperature=0", "distill.temperature=0.0 must be > 0"),
    ],
)
def test_distill_config_errors(tmp_path, learner, override, message):
    teacher = tmp_path / "teacher.pt"
    torch.save({}, teacher)
    overrides = [override.format(t=teacher)]
    if not override.startswith("distill.teacher"):
        overrides.append(f"distill.teacher={teacher}")
    with pytest.raises(ConfigError, match=message):
        load_config(learner, overrides)


@pytest.mark.parametrize(
    ("learner", "override"),
    [
        ("maml", "model.pretrained={c}"),
        ("protonet", "model.pretrained={c}"),
        ("protonet", "distill.teacher={c}"),
    ],
)
def test_a_checkpoint_of_another_backbone_is_refused_before_anything_is_written(
    tmp_path, capsys, learner, override
):
    """A start or teacher whose weights do not fit (here: 3 input channels for 1-channel data) stops
    the run with the shapes that differ, and no run directory is left behind."""
    other = tmp_path / "rgb.pt"
    torch.save(
        {"model": {f"backbone.{k}": v for k, v in build_backbone("conv4", 3).state_dict().items()}}, other
    )
    out = tmp_path / "runs"
    with pytest.raises(SystemExit):
        main([learner, *TINY, f"train.out_dir={out}", override.format(c=other)])
    err = capsys.readouterr().err
    assert "does not fit this Conv4 backbone" in err and "(64, 3, 3, 3) vs model (64, 1, 3, 3)" in err
    assert not out.exists()


def test_overrides_and_groups_resolve():
    cfg = load_config("maml", ["data=omniglot", "task.n_way=20", "task.k_shot=1", "inner.steps=5"])
    assert cfg.data.source == "omniglot" and cfg.data.rotations is True
    assert cfg.task.n_way == 20 and cfg.inner.steps == 5 and cfg.model.backbone == "conv4"
    assert load_config("maml", ["model=resnet12"]).model.backbone == "resnet12"
    assert load_config("reptile").optim.name == "sgd"


def test_rotations_and_reflections_multiply_only_the_base_classes():
    plain, _ = load_splits(load_config("protonet", ["data.num_classes=200"]).data)
    cfg = load_config("protonet", ["data.num_classes=200", "data.rotations=true", "data.reflections=true"])
    both, _ = load_splits(cfg.data)
    assert both["base"].num_classes == 8 * plain["base"].num_classes
    assert both["base"].class_names[-1] == plain["base"].class_names[-1] + "@rot270@flip"
    assert both["val"].class_names == plain["val"].class_names


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.n_wya=3"], "unknown config key 'task.n_wya'.*did you mean 'task.n_way'"),
        (["inner.stepz=3"], "did you mean 'inner.steps'"),
        (["task.n_way=five"], "bad value for 'task.n_way'"),
        (["data=omniglt"], "no config data='omniglt'; data can be: folder, folder224, omniglot, synthetic"),
        (["data=folder"], "data.root is required"),
        (["data.root=photos.zip"], "data.root=photos.zip is given, but data.source=synthetic reads no files"),
        (["optim.name=adamw"], "optim.name='adamw' is not one of: adam, sgd"),
        (
            ["data.augment=rotate"],
            "data.augment='rotate' is not one of: none, crop, crop-flip, affine, affine-elastic",
        ),
        (["task.n_way"], "not of the form key=value"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("maml", overrides)


@pytest.mark.parametrize("learner", ["protonet", "pretrain"])
def test_proto_head_only_for_head_adapting_learners(learner):
    assert load_config("anil", ["inner.proto_head=true"]).inner.proto_head is True
    with pytest.raises(ConfigError, match=f"inner.proto_head=true has no effect on {learner}"):
        load_config(learner, ["inner.proto_head=true"])


@pytest.mark.parametrize("learner", ["reptile", "protonet", "pretrain"])
def test_test_norm_only_for_the_maml_family(learner):
    cfg = load_config("metasgd", ["inner.test_norm=running"])
    assert build_learner(cfg, 1, 28, 5).test_norm == "running"
    with pytest.raises(ConfigError, match=f"inner.test_norm=running has no effect on {learner}"):
        load_config(learner, ["inner.test_norm=running"])
    with pytest.raises(ConfigError, match="inner.test_norm=eval is not one of batch, running, support"):
        load_config("maml", ["inner.test_norm=eval"])


@pytest.mark.parametrize("learner", ["protonet", "pretrain"])
def test_zero_head_only_for_head_adapting_learners(learner):
    for adapting in ("fomaml", "reptile"):
        cfg = load_config(adapting, ["inner.zero_head=true"])
        assert build_learner(cfg, 1, 28, 5).zero_head is True
    with pytest.raises(ConfigError, match=f"inner.zero_head=true has no effect on {learner}"):
        load_config(learner, ["inner.zero_head=true"])
    with pytest.raises(ConfigError, match="two starts for the head"):
        load_config("maml", ["inner.zero_head=true", "inner.proto_head=true"])


def test_step_shots_only_for_reptile_and_within_the_shots():
    cfg = load_config("reptile", ["task.k_shot=5", "inner.step_shots=2"])
    assert build_learner(cfg, 1, 28, 5).step_shots == 2
    assert build_learner(load_config("reptile"), 1, 28, 5).step_shots is None
    with pytest.raises(ConfigError, match="inner.step_shots=2 has no effect on maml"):
        load_config("maml", ["inner.step_shots=2"])
    with pytest.raises(ConfigError, match="inner.step_shots=6 must be between 1 and task.k_shot=5"):
        load_config("reptile", ["task.k_shot=5", "inner.step_shots=6"])


def test_unknown_learner_suggests():
    with pytest.raises(ConfigError, match="did you mean 'maml'"):
        load_config("mamll")


def test_print_config(capsys):
    main(["anil", "task.n_way=7", "--print-config"])
    assert "n_way: 7" in capsys.readouterr().out


def test_cli_error_exit_code(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["maml", "task.n_wya=3"])
    assert exit_info.value.code == 2
    assert "did you mean 'task.n_way'" in capsys.readouterr().err


def _params(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


@pytest.mark.parametrize("learner", ["protonet", "maml", "pretrain"])
def test_bf16_autocast_runs_on_the_cpu_with_float32_weights(tmp_path, learner):
    """train.bf16=true computes in bf16 on the CPU too (so its weights differ from float32
    training's), keeps float32 weights, and repeats exactly with the same seed."""
    args = [*TINY, "train.steps=3", "summary.episodes=0", "train.device=cpu"]
    for name, extra in (("fp32", []), ("bf16", ["train.bf16=true"]), ("bf16-again", ["train.bf16=true"])):
        main([learner, *args, *extra, f"train.out_dir={tmp_path}", f"train.name={name}"])
    fp32, bf16, again = (_params(tmp_path / name) for name in ("fp32", "bf16", "bf16-again"))
    assert all(bf16[k].dtype == fp32[k].dtype for k in fp32)
    assert all(torch.equal(bf16[k], again[k]) for k in bf16)
    moved = [k for k in fp32 if fp32[k].is_floating_point() and not torch.equal(fp32[k], bf16[k])]
    assert moved, "bf16 training gave float32 training's weights: autocast was off"
    assert all(torch.isfinite(bf16[k]).all() for k in moved)


def test_bf16_on_a_device_autocast_does_not_cover_is_refused_before_anything_is_written(tmp_path):
    cfg = load_config(
        "protonet", [*TINY, "train.device=meta", "train.bf16=true", f"train.out_dir={tmp_path}"]
    )
    with pytest.raises(
        ConfigError, match="train.bf16=true autocasts on cpu or cuda, not meta; use train.bf16=false"
    ):
        train(cfg)
    assert not any(tmp_path.iterdir())


def test_sigkill_and_resume_equals_uninterrupted_run(tmp_path):
    args = [*TINY, "train.steps=8", "train.val_every=4", "train.checkpoint_every=1", "summary.episodes=0"]
    main(["maml", *args, f"train.out_dir={tmp_path}/a"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "fewshot.train", "maml", *args, f"train.out_dir={tmp_path}/b"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = tmp_path / "b" / "maml" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.exists() and 2 <= load_checkpoint(last)["step"] < 8:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last)["step"]
    assert killed_at < 8, "the run finished before it could be killed"
    main(["maml", f"train.resume={tmp_path}/b/maml"])  # the run's saved config: 8 steps
    a, b = _params(tmp_path / "a" / "maml"), _params(tmp_path / "b" / "maml")
    assert load_checkpoint(last)["step"] == 8
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_partial_write_never_replaces_a_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from fewshot.learners import MAML

    real = MAML.meta_backward
    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        metrics = real(self, batch)
        if calls["n"] == 3:
            metrics["loss"] = torch.tensor(float("nan"))
        return metrics

    monkeypatch.setattr(MAML, "meta_backward", flaky)
    cfg = load_config(
        "maml", [*TINY, "train.steps=5", "train.checkpoint_every=1", f"train.out_dir={tmp_path}"]
    )
    with pytest.raises(
        TrainingError, match=r"loss became nan at step 3.*last good checkpoint .*last\.pt is intact"
    ):
        train(cfg)
    assert load_checkpoint(tmp_path / "maml" / "last.pt")["step"] == 2


def test_checkpoints_never_unpickle_code(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": {}, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "evil.pt")


def test_runs_are_never_overwritten(tmp_path):
    for _ in range(2):
        main(["protonet", *TINY, "summary.episodes=0", f"train.out_dir={tmp_path}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["protonet", "protonet-2"]


def test_weight_average_is_an_exponential_moving_average_of_weights_and_statistics():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    average = WeightAverage(net, decay=0.2)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(0)
    for step in range(3):  # the decay warms up: 0.1, 0.18, then 0.2 (as given) from step 2 on
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net.train()(torch.randn(4, 2))  # new running statistics and one more batch counted
        average.update(net, step)
        keep = min(0.2, (1 + step) / (10 + step))
        for k, v in net.state_dict().items():
            expected[k] = keep * expected[k] + (1 - keep) * v if v.is_floating_point() else v.clone()
    got = average.learner.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-6)
    assert int(got["1.num_batches_tracked"]) == 3
    assert not torch.equal(got["0.weight"], net.state_dict()["0.weight"])


def test_a_run_with_a_weight_average_validates_saves_and_resumes_it(tmp_path):
    """optim.ema: the optimizer's trajectory is unchanged, the checkpoints' model is the average
    (so evaluation scores it) beside the weights it averages, and a resumed run continues both."""
    args = [*TINY, "train.steps=4", "train.val_every=2", "summary.episodes=0", f"train.out_dir={tmp_path}"]
    main(["protonet", *args, "train.name=plain"])
    main(["protonet", *args, "train.name=ema", "optim.ema=0.5"])
    plain, ema = (load_checkpoint(tmp_path / n / "last.pt") for n in ("plain", "ema"))
    assert "trained" not in plain
    for k, v in plain["model"].items():
        torch.testing.assert_close(ema["trained"][k], v)
    assert any(not torch.equal(ema["model"][k], v) for k, v in plain["model"].items())
    # MAML adapts the average at validation, with gradients through its copy's parameters
    main(["maml", *args, "train.name=whole", "optim.ema=0.9"])
    main(["maml", *args, "train.name=halves", "optim.ema=0.9", "train.steps=2"])
    main(["maml", f"train.resume={tmp_path / 'halves'}", "train.steps=4", "train.quiet=true"])
    whole, halves = (load_checkpoint(tmp_path / n / "last.pt") for n in ("whole", "halves"))
    assert halves["step"] == 4
    for key in ("model", "trained"):
        for k, v in whole[key].items():
            torch.testing.assert_close(halves[key][k], v)
    with pytest.raises(ConfigError, match="optim.ema=1.0 is not a decay between 0 and 1"):
        load_config("protonet", ["optim.ema=1"])


def test_missing_resume_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["maml", f"train.resume={tmp_path}/nope"])
    assert "not a fewshot run directory" in capsys.readouterr().err


def test_resume_can_extend_a_run_and_checks_the_learner(tmp_path, capsys):
    main(["protonet", *TINY, "summary.episodes=0", f"train.out_dir={tmp_path}"])
    main(["protonet", f"train.resume={tmp_path}/protonet", "train.steps=4"])
    assert load_checkpoint(tmp_path / "protonet" / "last.pt")["step"] == 4
    with pytest.raises(SystemExit):
        main(["maml", f"train.resume={tmp_path}/protonet"])
    assert "is a protonet run, not maml" in capsys.readouterr().err


def test_config_files_merge_between_the_learner_yaml_and_the_overrides(tmp_path):
    extra = tmp_path / "study.yaml"
    extra.write_text("defaults:\n  - model: resnet12\ntask: {n_way: 7, k_shot: 2}\n")
    cfg = load_config("maml", ["task.k_shot=3"], files=[extra])
    assert (cfg.model.backbone, cfg.task.n_way, cfg.task.k_shot) == ("resnet12", 7, 3)
    with pytest.raises(ConfigError, match="not found"):
        load_config("maml", files=[tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {n_wya: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*did you mean 'task.n_way'|did you mean 'task.n_way'"):
        load_config("maml", files=[bad])


def test_validation_can_use_another_setting_than_training(tmp_path, capsys):
    # ProtoNet trained on 30-way episodes; the 20 validation classes cannot hold 30-way ones.
    wide = ["protonet", *TINY, "task.n_way=30", f"train.out_dir={tmp_path}"]
    with pytest.raises(SystemExit):
        main([*wide, "train.name=same"])
    assert "30" in capsys.readouterr().err
    main([*wide, "train.val_setting=3w1s", "train.name=other"])
    lines = (tmp_path / "other" / "metrics.jsonl").read_text().splitlines()
    assert any('"val_accuracy"' in line for line in lines)
    with pytest.raises(SystemExit):
        main([*wide, "train.val_setting=3way", "train.name=bad"])
    assert "train.val_setting" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_training_episodes_can_come_from_one_group(tmp_path, monkeypatch, capsys):
    """``task.within_group=true``: every training episode's classes share a group (one alphabet),
    the harder episodes of the within-alphabet test; validation still draws across groups."""
    import fewshot.train

    drawn: list[tuple[EpisodeSampler, np.ndarray]] = []

    class Recorded(EpisodeSampler):
        def _choose(self, indices):
            classes, rows = super()._choose(indices)
            drawn.append((self, classes))
            return classes, rows

    monkeypatch.setattr(fewshot.train, "EpisodeSampler", Recorded)
    main(["protonet", *TINY, "task.n_way=5", "task.within_group=true", f"train.out_dir={tmp_path}"])
    assert drawn and all(sampler.within_group for sampler, _ in drawn)
    for sampler, classes in drawn:
        groups = np.asarray(sampler.dataset.groups)[classes]  # [B, N]
        assert (groups == groups[:, :1]).all()
    # 20 synthetic characters an alphabet: 21-way episodes within one cannot be drawn
    with pytest.raises(SystemExit):
        main(
            [
                "protonet",
                *TINY,
                "task.n_way=21",
                "task.within_group=true",
                f"train.out_dir={tmp_path}",
                "train.name=wide",
            ]
        )
    assert "within one group, but the largest group has 20" in capsys.readouterr().err
    assert not (tmp_path / "wide").exists()
    with pytest.raises(ConfigError, match="task.within_group=true shapes training episodes"):
        load_config("pretrain", ["task.within_group=true"])
