"""The evaluator: identical episodes, statistics, the report, method specs and their errors."""

import csv
import importlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fewshot import MAML, EpisodeSampler, FineTune, Learner, ProtoNet, Setting, SimpleShot, compare
from fewshot.config import FineTuneConfig
from fewshot.data import make_split
from fewshot.data.augment import affine_matrices, warp
from fewshot.evaluate import main
from fewshot.evaluation import (
    BuildContext,
    MethodError,
    Scores,
    build_method,
    parse_method,
    partial,
    query_metrics,
    save_report,
    unscored,
)
from fewshot.evaluation.partial import PartialScores
from fewshot.evaluation.report import FILES
from fewshot.learners.features import embed_dataset
from fewshot.learners.functional import batch_statistics
from fewshot.models import (
    BlockFeatures,
    FeatureEnsemble,
    SupportWhitening,
    ViewAveraged,
    Whitened,
    build_backbone,
    build_model,
    within_class_covariance,
    within_class_whitening,
)
from fewshot.train import load_splits
from fewshot.train import main as train_main

compare_module = importlib.import_module("fewshot.evaluation.compare")  # not the function of that name


class Spy(Learner):
    """Predicts from pixel means and records every support and query set it is given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def adapt_batch(self, support_x, support_y):
        self.seen.append(support_x.clone())

        def predict(query_x):
            self.seen.append(query_x.clone())
            return query_x.flatten(2)[..., : int(support_y.max()) + 1]

        return predict


def test_every_method_sees_the_same_episodes(small_synthetic):
    a, b = Spy(), Spy()
    compare({"a": a, "b": b}, small_synthetic, ["5w1s", "3w2s"], q_query=2, episodes=7, batch_episodes=3)
    assert len(a.seen) == len(b.seen) == 2 * 3 * 2  # settings x chunks x (support, query)
    for x, y in zip(a.seen, b.seen, strict=True):
        assert torch.equal(x, y)
    expected = EpisodeSampler(small_synthetic, 5, 1, 2, seed=0).batch(range(3))
    assert torch.equal(a.seen[0], expected.support_x) and torch.equal(a.seen[1], expected.query_x)


def test_embedding_each_image_once_changes_no_prediction(small_synthetic):
    # SimpleShot, ProtoNet and the linear probe see images only through fixed features; the
    # evaluator embeds the dataset once and hands them the episodes' features instead.
    torch.manual_seed(0)
    backbone = build_backbone("conv4")
    methods = {
        "simpleshot": SimpleShot(backbone),
        "protonet": ProtoNet(backbone),
        "probe": FineTune(backbone, epochs=3),
    }
    assert all(m.feature_extractor() is not None for m in methods.values())
    assert FineTune(backbone, mode="full").feature_extractor() is None
    assert MAML(build_model("conv4", 5)).feature_extractor() is None
    settings = ["5w1s", "3w2s"]
    per_episode, once = (
        compare(methods, small_synthetic, settings, q_query=3, episodes=8, progress=False, embed_once=e)
        for e in (False, True)
    )
    for setting in settings:
        for label in methods:
            a, b = (r.scores[setting][label].metrics for r in (per_episode, once))
            assert torch.equal(a["accuracy"], b["accuracy"]) and torch.allclose(a["f1"], b["f1"]), label
    sampler = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0)
    row_of_image = torch.arange(len(small_synthetic.images), dtype=torch.float32).unsqueeze(1)
    images, rows = sampler.batch(range(2)), sampler.batch(range(2), row_of_image)
    gathered = small_synthetic.pixels(rows.support_x.long().flatten())
    assert torch.equal(gathered, images.support_x.flatten(0, 1))
    with pytest.raises(ValueError, match="rows"):
        sampler.batch(range(2), row_of_image[:-1])
    drawn = torch.cat((rows.support_x, rows.query_x), dim=1).long().flatten().unique()
    assert torch.equal(sampler.rows(range(2)), drawn)


class Counted(ProtoNet):
    """ProtoNet that counts the images its feature extractor embeds."""

    def __init__(self, backbone):
        super().__init__(backbone)
        self.embedded = 0

    def feature_extractor(self):
        extract = super().feature_extractor()

        def counting(images):
            self.embedded += len(images)
            return extract(images)

        return counting


def test_only_the_images_the_episodes_draw_are_embedded(small_synthetic):
    torch.manual_seed(0)
    settings, args = ["5w1s", "3w2s"], dict(q_query=2, episodes=3, progress=False)
    counted = Counted(build_backbone("conv4"))
    result = compare({"p": counted}, small_synthetic, settings, **args)
    samplers = [Setting.parse(s).sampler(small_synthetic, 2, seed=0) for s in settings]
    drawn = torch.cat([s.rows(range(3)) for s in samplers]).unique()
    assert counted.embedded == len(drawn) < len(small_synthetic.images)
    per_episode = compare({"p": counted}, small_synthetic, settings, **args, embed_once=False)
    for key in settings:
        assert torch.equal(
            result.scores[key]["p"].metrics["accuracy"], per_episode.scores[key]["p"].metrics["accuracy"]
        )
    some = embed_dataset(counted.feature_extractor(), small_synthetic, rows=drawn[:5])
    whole = embed_dataset(counted.feature_extractor(), small_synthetic)
    assert torch.allclose(some[drawn[:5]], whole[drawn[:5]], atol=1e-6)
    assert some.isnan().all(dim=1).sum() == len(small_synthetic.images) - 5  # every other row
    with pytest.raises(ValueError, match="no image to embed"):
        embed_dataset(counted.feature_extractor(), small_synthetic, rows=drawn[:0])


def test_query_metrics_by_hand():
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])
    predicted = torch.tensor([[0, 1, 1, 1, 0, 0]])  # class 2 is never predicted
    m = {k: float(v) for k, v in query_metrics(F.one_hot(predicted, 3).float(), labels).items()}
    # per class: precision 1/3, 2/3, 0; recall 1/2, 1, 0; F1 2/5, 4/5, 0
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["precision"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["f1"] == pytest.approx((2 / 5 + 4 / 5 + 0) / 3)


def test_confidence_interval_and_paired_test_by_hand(small_synthetic):
    scipy_stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(0)
    backbone = build_backbone("conv4")
    methods = {"one": FineTune(backbone, epochs=2), "two": SimpleShot(backbone)}
    result = compare(
        methods, small_synthetic, ["5w1s"], q_query=3, episodes=30, baseline="one", progress=False
    )
    setting = Setting(5, 1)
    acc = result.scores["5w1s"]["two"].metrics["accuracy"].tolist()
    n = len(acc)
    mean = sum(acc) / n
    sd = math.sqrt(sum((a - mean) ** 2 for a in acc) / (n - 1))
    ci = result.summary("two", setting)["accuracy"]
    assert ci.mean == pytest.approx(mean)
    assert ci.half_width == pytest.approx(2.045229642132703 * sd / math.sqrt(n), rel=1e-9)  # t_{0.975, 29}
    base = result.scores["5w1s"]["one"].metrics["accuracy"].numpy()
    diff = result.paired("two", setting)
    expected = scipy_stats.ttest_rel(result.scores["5w1s"]["two"].metrics["accuracy"].numpy(), base)
    assert diff.t == pytest.approx(expected.statistic, rel=1e-9)
    assert diff.p_value == pytest.approx(expected.pvalue, rel=1e-6)


def _pretrained_backbone(dataset, steps=80):
    """A Conv-4 briefly trained to classify the classes of ``dataset``."""
    torch.manual_seed(0)
    backbone = build_backbone("conv4")
    head = torch.nn.Linear(backbone.feature_dim, dataset.num_classes)
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=3e-3)
    labels = torch.repeat_interleave(torch.arange(dataset.num_classes), dataset.counts)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = torch.randint(0, len(labels), (64,), generator=g)
        loss = F.cross_entropy(head(backbone(dataset.images[rows].float() / 255)), labels[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return backbone.eval()


def test_a_trained_model_wins_and_identical_methods_do_not(small_synthetic):
    split = make_split(small_synthetic, {"base": 3, "novel": 2}, by="group", seed=0)
    base, novel = (small_synthetic.subset(split["splits"][k]) for k in ("base", "novel"))
    torch.manual_seed(1)
    untrained = build_backbone("conv4").eval()
    methods = {
        "untrained": SimpleShot(untrained),
        "trained": SimpleShot(_pretrained_backbone(base)),
        "untrained-again": SimpleShot(untrained),
    }
    result = compare(methods, novel, ["5w1s"], q_query=5, episodes=100, baseline="untrained", progress=False)
    setting = Setting(5, 1)
    won = result.paired("trained", setting)
    assert won.mean > 0 and won.p_value < 0.05 and result.verdict("trained", setting) == "better"
    same = result.paired("untrained-again", setting)
    assert same.mean == 0 and same.p_value == 1.0
    assert result.verdict("untrained-again", setting) == "no significant difference"
    # two linear probes that differ only in their seed: no significant difference either
    probes = {
        "seed 1": FineTune(untrained, epochs=5, seed=1),
        "seed 2": FineTune(untrained, epochs=5, seed=2),
    }
    result = compare(probes, novel, ["5w1s"], q_query=5, episodes=100, baseline="seed 1", progress=False)
    assert result.paired("seed 2", setting).p_value > 0.05


def test_out_of_memory_halves_the_batch(small_synthetic):
    class Tight(Spy):
        def adapt_batch(self, support_x, support_y):
            if len(support_x) > 2:
                raise torch.OutOfMemoryError("pretend")
            return super().adapt_batch(support_x, support_y)

    a = compare(
        {"a": Spy()}, small_synthetic, ["5w1s"], q_query=2, episodes=9, batch_episodes=9, progress=False
    )
    b = compare(
        {"a": Tight()}, small_synthetic, ["5w1s"], q_query=2, episodes=9, batch_episodes=9, progress=False
    )
    assert torch.equal(a.scores["5w1s"]["a"].metrics["f1"], b.scores["5w1s"]["a"].metrics["f1"])


class Killed(Exception):
    """Stands for the process being killed part-way through an evaluation."""


class Dies(Spy):
    """A Spy whose ``at``-th adaptation (1-based) is the moment its process is killed."""

    def __init__(self, at=None):
        super().__init__()
        self.calls, self.at = 0, at

    def adapt_batch(self, support_x, support_y):
        self.calls += 1
        if self.calls == self.at:
            raise Killed
        return super().adapt_batch(support_x, support_y)


def test_a_killed_comparison_resumes_from_the_chunks_it_saved(small_synthetic, tmp_path, monkeypatch):
    monkeypatch.setattr(partial, "SAVE_EVERY_S", 0.0)  # save after every chunk
    args = dict(settings=["5w1s", "3w2s"], q_query=2, episodes=7, batch_episodes=3, progress=False)
    whole = compare({"a": Spy()}, small_synthetic, **args)
    with pytest.raises(Killed):  # 3 chunks per setting: killed at the second chunk of 3w2s
        compare({"a": Dies(at=5)}, small_synthetic, **args, partial=PartialScores(tmp_path))
    saved = PartialScores(tmp_path)
    assert sorted(saved.chunks("5w1s", "a")) == [0, 1, 2] and sorted(saved.chunks("3w2s", "a")) == [0]
    rerun = Dies()  # resumed as another process: its own file, the first one's chunks
    resumed = compare({"a": rerun}, small_synthetic, **args, partial=PartialScores(tmp_path, rank=1))
    assert rerun.calls == 2  # only the chunks not saved
    for key in args["settings"]:
        for m in ("accuracy", "f1"):
            assert torch.equal(resumed.scores[key]["a"].metrics[m], whole.scores[key]["a"].metrics[m])
        assert resumed.scores[key]["a"].seconds >= saved.seconds(key, "a")
    union = PartialScores(tmp_path)  # both files: nothing lost by either process
    assert sorted(union.chunks("3w2s", "a")) == [0, 1, 2]
    counted = Counted(build_backbone("conv4"))  # a frozen-feature method whose chunks are all saved
    first = compare({"a": Spy(), "p": counted}, small_synthetic, **args, partial=PartialScores(tmp_path))
    assert counted.embedded > 0
    counted.embedded = 0
    again = compare({"a": Spy(), "p": counted}, small_synthetic, **args, partial=PartialScores(tmp_path))
    assert counted.embedded == 0  # not embedded again: nothing of it is left to score
    assert torch.equal(
        again.scores["3w2s"]["p"].metrics["accuracy"], first.scores["3w2s"]["p"].metrics["accuracy"]
    )
    union.remove()
    assert not (tmp_path / "partial").exists()


def test_report_files_are_complete_and_parseable(small_synthetic, tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone("conv4")
    methods = {"probe": FineTune(backbone, epochs=2), "centroid": SimpleShot(backbone)}
    settings = ["5w1s", "5w2s", "3w1s", "3w1s-within"]
    result = compare(
        methods, small_synthetic, settings, q_query=2, episodes=6, baseline="probe", progress=False
    )
    paths = save_report(result, tmp_path)
    assert sorted(paths) == sorted(FILES) and all(p.stat().st_size > 0 for p in paths.values())
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind
    report = json.loads((tmp_path / "report.json").read_text())
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == len(methods) * len(settings) * 6
    for key in settings:
        for m in methods:
            entry = report["results"][key][m]
            accs = [float(r["accuracy"]) for r in rows if r["method"] == m and r["setting"] == key]
            assert entry["accuracy"]["mean"] == pytest.approx(100 * sum(accs) / len(accs), abs=1e-3)
            assert set(entry) >= {"accuracy", "precision", "recall", "f1", "episodes_per_s", "vs_baseline"}
        assert report["results"][key]["probe"]["vs_baseline"] is None
        assert report["results"][key]["centroid"]["vs_baseline"]["verdict"]
    episodes = json.loads((tmp_path / "episodes.json").read_text())["settings"]["5w2s"]["episodes"]
    sampler = EpisodeSampler(small_synthetic, 5, 2, 2, seed=0)
    first = sampler.indices(0)
    names = [small_synthetic.class_names[c] for c in first.classes.tolist()]
    assert episodes[0]["classes"] == names and len(episodes) == 6
    rows0 = (first.support.view(5, 2) - small_synthetic.offsets[first.classes][:, None]).tolist()
    assert episodes[0]["support"] == rows0
    within = json.loads((tmp_path / "episodes.json").read_text())["settings"]["3w1s-within"]["episodes"]
    assert all(len({c.split("/")[0] for c in ep["classes"]}) == 1 for ep in within), "one group each"
    markdown = (tmp_path / "report.md").read_text()
    assert all(m in markdown for m in methods) and "5-way 2-shot" in markdown
    image = pytest.importorskip("matplotlib.pyplot").imread(tmp_path / "accuracy.png")
    assert image.shape[0] > 100 and image.shape[1] > 200


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mamll:runs/x", "did you mean 'maml'"),
        ("maml", "maml needs a run directory"),
        ("scratch:runs/x", "takes no checkpoint"),
        ("finetune-freeze0:runs/x", "at least one block"),
        ("protonet:runs/x@inner.test_steps=3", "only runs that adapt by gradient steps"),
        (
            "finetune:runs/x@inner.test_lr=0.1",
            "key one of finetune.lr, finetune.backbone_lr, finetune.epochs",
        ),
        ("simpleshot:runs/x@finetune.lr=0.1", "only runs that adapt by gradient steps"),
        ("scratch@finetune.lr=0.1", "scratch takes finetune.<key>=... for the evaluation"),
        ("finetune-full:runs/x@finetune.epochs=0", "finetune.epochs must be a positive int"),
        ("maml:runs/x@inner.steps=3", "key one of inner.test_steps, inner.test_lr"),
        ("maml:runs/x@inner.test_steps=2.5", "inner.test_steps must be a positive int, not '2.5'"),
        ("reptile:runs/x@inner.test_lr=-1", "inner.test_lr must be a positive float"),
        ("reptile:runs/x@inner.test_norm=running", "for maml, fomaml, metasgd and anil runs"),
        ("maml:runs/x@inner.test_norm=eval", "inner.test_norm is batch, running, support"),
        ("anil:runs/x@views=4", "applies to protonet, simpleshot, finetune, maml, fomaml, reptile only"),
        (
            "finetune-freeze2:runs/x@views=4",
            "applies to protonet, simpleshot, finetune, maml, fomaml, reptile only",
        ),
        ("protonet:runs/x@views=0", "n a positive integer, not '0'"),
        ("protonet:runs/x@views=2@views=3", "give @views=<n> once"),
        ("simpleshot:runs/x@refine=1", "refines ProtoNet's class means, so it applies to protonet only"),
        ("protonet:runs/x@refine=-1", "n a positive integer, not '-1'"),
        ("simpleshot:runs/x@whiten=1", "whitens ProtoNet's features, so it applies to protonet only"),
        ("protonet:runs/x@whiten=0", "s a positive number \\(e.g. 1\\), not '0'"),
        ("protonet:runs/x@whiten=nan", "s a positive number \\(e.g. 1\\), not 'nan'"),
        ("protonet:runs/x@whiten=1@whiten=2", "give @whiten=<s> once"),
        (
            "simpleshot:runs/x@prior=30",
            "@prior=<n> whitens ProtoNet's features, so it applies to protonet only",
        ),
        ("protonet:runs/x@prior=30", "so give @whiten=<s> too \\(e.g. @whiten=5@prior=30\\)"),
        ("protonet:runs/x@whiten=5@prior=-1", "n a positive number \\(e.g. 30\\), not '-1'"),
        ("protonet:runs/x@whiten=5@prior=3@prior=4", "give @prior=<n> once"),
        ("protonet:runs/x@whiten=5@rewhiten=2", "so it needs @whiten=<s>@prior=<n> and takes the place of"),
        ("protonet:runs/x@whiten=5@prior=30@refine=2@rewhiten=2", "takes the place of @refine=<R>"),
        ("simpleshot:runs/x@rewhiten=2", "so it applies to protonet only"),
        ("protonet:runs/x@whiten=3@block3=0.5", "so it needs @whiten=<s>@prior=<n>, one run"),
        ("protonet:runs/a+runs/b@whiten=3@prior=30@block3=0.5", "one run \\(not an ensemble\\)"),
        ("protonet:runs/x@whiten=3@prior=30@block3=1@block3=2", "and each block once"),
        ("protonet:runs/x@whiten=3@prior=30@block3=0", "w a positive number \\(e.g. 0.5\\), not '0'"),
        ("simpleshot:runs/x@block3=0.5", "so it applies to protonet only"),
        ("maml:runs/a+runs/b", "an ensemble of ProtoNets' features, so only protonet takes them"),
        ("protonet:runs/a+", "an empty checkpoint around \\+"),
    ],
)
def test_bad_method_specs_are_explained(spec, message):
    with pytest.raises(MethodError, match=message):
        parse_method(spec)


def test_method_specs_parse():
    assert parse_method("scratch").label == "scratch"
    spec = parse_method("probe=finetune-freeze2:runs/p/best.pt")
    assert (spec.label, spec.kind, spec.freeze_blocks, str(spec.checkpoint)) == (
        "probe",
        "finetune-freeze2",
        2,
        "runs/p/best.pt",
    )
    assert parse_method("finetune-linear:x").kind == "finetune"
    spec = parse_method("maml:runs/m@inner.test_steps=10@inner.test_lr=0.1")
    assert (spec.label, str(spec.checkpoint)) == (
        "maml:runs/m@inner.test_steps=10@inner.test_lr=0.1",
        "runs/m",
    )
    assert spec.adapt == (("inner.test_steps", 10), ("inner.test_lr", 0.1))
    assert parse_method("m10=maml:runs/m@inner.test_steps=10").label == "m10"
    spec = parse_method("probe8=finetune:runs/p@finetune.epochs=5@views=8")
    assert (spec.label, spec.views, spec.adapt) == ("probe8", 8, (("finetune.epochs", 5),))
    assert parse_method("protonet:runs/p").views == 1
    spec = parse_method("protonet:runs/p@views=4@refine=2")
    assert (spec.views, spec.refine, spec.adapt, spec.whiten) == (4, 2, (), 0.0)
    spec = parse_method("protonet:runs/p@views=4@whiten=0.5")
    assert (spec.views, spec.refine, spec.adapt, spec.whiten, spec.prior) == (4, 0, (), 0.5, 0.0)
    spec = parse_method("protonet:runs/p@whiten=5@prior=30@views=4")
    assert (spec.views, spec.adapt, spec.whiten, spec.prior) == (4, (), 5.0, 30.0)
    spec = parse_method("protonet:runs/a+runs/b+runs/c@views=4")
    assert (str(spec.checkpoint), spec.members, spec.views) == ("runs/a", (Path("runs/b"), Path("runs/c")), 4)
    assert parse_method("protonet:runs/a").members == ()
    assert Setting.parse("20w5s") == Setting(20, 5)
    assert Setting.parse("20w1s-within") == Setting(20, 1, within_group=True)
    assert str(Setting(20, 1, True)) == "20-way 1-shot within a group"
    with pytest.raises(ValueError, match="<N>w<K>s"):
        Setting.parse("5way1shot")


TINY_DATA = ["data.num_classes=200"]
TINY_TRAIN = [
    *TINY_DATA,
    "task.meta_batch=2",
    "task.q_query=2",
    "train.steps=2",
    "train.val_every=2",
    "train.val_episodes=3",
    "train.batch_size=8",
    "summary.episodes=0",
    "train.quiet=true",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny pretrain, MAML and ProtoNet runs on the 200-class synthetic set."""
    out = tmp_path_factory.mktemp("runs")
    for learner in ("pretrain", "maml", "protonet"):
        train_main([learner, *TINY_TRAIN, f"train.out_dir={out}"])
    return out


def _evaluate(tmp_path, *overrides):
    main(
        [
            *TINY_DATA,
            "settings=[5w1s,10w2s]",
            "q_query=2",
            "episodes=4",
            "finetune.epochs=2",
            "quiet=true",
            f"out_dir={tmp_path}",
            *overrides,
        ]
    )


def test_cli_evaluates_every_kind_and_repeats_itself(runs, tmp_path, capsys):
    methods = (
        f"methods=[maml:{runs}/maml,protonet:{runs}/protonet,probe=finetune:{runs}/pretrain,"
        f"finetune-freeze2:{runs}/pretrain/best.pt,finetune-full:{runs}/pretrain,"
        f"simpleshot:{runs}/pretrain,scratch]"
    )
    _evaluate(tmp_path, methods, "name=a")
    out = capsys.readouterr().out
    assert "Paired difference from probe" in out and "| scratch |" in out
    _evaluate(tmp_path, methods, "name=b")
    first, second = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("a", "b"))
    assert first["baseline"] == "probe" and len(first["methods"]) == 7
    for key in ("5w1s", "10w2s"):
        for m in first["methods"]:
            assert first["results"][key][m]["accuracy"] == second["results"][key][m]["accuracy"]
    assert (tmp_path / "a" / "split.json").is_file() and (tmp_path / "a" / "config.yaml").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["methods=[maml:{runs}/nowhere.pt]"], "not found"),
        (["methods=[maml:{tmp}]"], "has no best.pt or last.pt"),
        (["methods=[maml:{runs}/pretrain]"], "is a pretrain checkpoint; write it as finetune:"),
        (["methods=[protonet:{runs}/maml]"], "is a maml checkpoint; write it as maml:"),
        (["methods=[finetune-freeze9:{runs}/pretrain]"], "freeze 1 to 4"),
        (["methods=[scratch,scratch]"], "appear twice"),
        (["methods=[scratch]", "baseline=probe"], "not a method label"),
        (["methods=[scratch]", "settings=[5way]"], "<N>w<K>s"),
        (["methods=[scratch]", "settings=[50w1s]"], "n_way=50 but the dataset has only 40 classes"),
        (["methods=[maml:{runs}/maml]", "split=base"], "base classes that"),
        (["methodz=[scratch]"], "did you mean 'methods'"),
        (["methods=[scratch]", "reuse=[{tmp}]"], "not found; give the output directory of an evaluation"),
        (["methods=[scratch]", "data.root={tmp}/photos.zip"], "data.source=synthetic reads no files"),
        ([], "no methods to evaluate"),
    ],
)
def test_cli_errors_name_the_problem_and_write_nothing(runs, tmp_path, capsys, overrides, message):
    overrides = [o.format(runs=runs, tmp=tmp_path) for o in overrides]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        _evaluate(out, *overrides)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_reuse_takes_earlier_scores_of_the_same_methods_only(runs, tmp_path, capsys):
    pair = f"proto=protonet:{runs}/protonet,probe=finetune:{runs}/pretrain"
    two = f"methods=[{pair}]"
    _evaluate(tmp_path, two, "name=a")
    earlier = torch.load(tmp_path / "a" / "scores.pt", weights_only=True)
    marked = earlier["5w1s"]["proto"]["accuracy"].clone().fill_(0.125)  # proves what is read
    earlier["5w1s"]["proto"]["accuracy"] = marked
    torch.save(earlier, tmp_path / "a" / "scores.pt")
    three = f"methods=[{pair},ss=simpleshot:{runs}/pretrain]"
    _evaluate(tmp_path, three, "name=b", "episodes=3", f"reuse=[{tmp_path}/a]")
    later = torch.load(tmp_path / "b" / "scores.pt", weights_only=True)
    assert torch.equal(later["5w1s"]["proto"]["accuracy"], marked[:3])
    for key in ("5w1s", "10w2s"):
        assert torch.equal(later[key]["probe"]["f1"], earlier[key]["probe"]["f1"][:3])
    _evaluate(tmp_path, three, "name=c", "episodes=3")  # measured afresh: the same numbers
    fresh = torch.load(tmp_path / "c" / "scores.pt", weights_only=True)
    for key in ("5w1s", "10w2s"):
        assert torch.equal(later[key]["ss"]["accuracy"], fresh[key]["ss"]["accuracy"])
        assert torch.equal(later[key]["probe"]["accuracy"], fresh[key]["probe"]["accuracy"])
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["reused"]["10w2s"] == {"proto": f"{tmp_path}/a", "probe": f"{tmp_path}/a"}
    assert "Scores reused from earlier evaluations" in (tmp_path / "b" / "report.md").read_text()
    shutil.copytree(runs / "protonet", tmp_path / "moved")  # the same checkpoint elsewhere: reused
    _evaluate(tmp_path, f"methods=[proto=protonet:{tmp_path}/moved]", "name=f", f"reuse=[{tmp_path}/a]")
    moved = torch.load(tmp_path / "f" / "scores.pt", weights_only=True)
    assert torch.equal(moved["5w1s"]["proto"]["accuracy"], marked)
    saved = OmegaConf.load(tmp_path / "a" / "config.yaml")  # as saved before model.head existed
    del saved.model["head"]
    OmegaConf.save(saved, tmp_path / "a" / "config.yaml")
    _evaluate(tmp_path, f"methods=[proto=protonet:{tmp_path}/moved]", "name=g", f"reuse=[{tmp_path}/a]")
    reused = json.loads((tmp_path / "g" / "report.json").read_text())["reused"]
    assert reused["5w1s"] == {"proto": f"{tmp_path}/a"}
    # longer than what was scored, or another protocol: measured again, or refused
    _evaluate(tmp_path, three, "name=d", "episodes=5", f"reuse=[{tmp_path}/a]")
    assert json.loads((tmp_path / "d" / "report.json").read_text())["reused"] == {}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _evaluate(tmp_path, three, "name=e", "finetune.lr=0.5", f"reuse=[{tmp_path}/a]")
    assert "its finetune differs from this evaluation's" in capsys.readouterr().err


def test_a_spec_changes_one_fine_tuning_baseline_and_leaves_the_rest_to_the_evaluation(runs, tmp_path):
    ctx = BuildContext(1, 28, "conv4", OmegaConf.structured(FineTuneConfig), seed=0)
    plain = build_method(parse_method(f"finetune-full:{runs}/pretrain"), ctx)
    spec = parse_method(f"finetune-freeze2:{runs}/pretrain@finetune.backbone_lr=0.0001@finetune.epochs=3")
    assert spec.adapt == (("finetune.backbone_lr", 0.0001), ("finetune.epochs", 3))
    changed = build_method(spec, ctx)
    assert (plain.backbone_lr, plain.epochs, plain.lr) == (0.001, 100, 0.01)
    assert (changed.backbone_lr, changed.epochs, changed.lr, changed.freeze_blocks) == (0.0001, 3, 0.01, 2)
    _evaluate(tmp_path, f"methods=[ft=finetune-full:{runs}/pretrain@finetune.epochs=2]", "name=a")
    assert json.loads((tmp_path / "a" / "methods.json").read_text())["ft"]["adapt"] == {"finetune.epochs": 2}


def test_a_spec_changes_how_a_run_adapts_and_is_not_reused_for_the_run_as_trained(runs, tmp_path):
    ctx = BuildContext(1, 28, "conv4", OmegaConf.create({}), seed=0)
    as_trained = build_method(parse_method(f"maml:{runs}/maml"), ctx)
    changed = build_method(parse_method(f"maml:{runs}/maml@inner.test_steps=7@inner.test_lr=0.05"), ctx)
    assert (as_trained.test_steps, as_trained.test_lr) == (3, 0.4)
    assert (changed.test_steps, changed.test_lr) == (7, 0.05)
    assert as_trained.test_norm == "batch"
    for norm in ("running", "support"):
        assert build_method(parse_method(f"maml:{runs}/maml@inner.test_norm={norm}"), ctx).test_norm == norm
    _evaluate(tmp_path, f"methods=[m=maml:{runs}/maml@inner.test_steps=1]", "name=a")
    records = json.loads((tmp_path / "a" / "methods.json").read_text())
    assert records["m"]["adapt"] == {"inner.test_steps": 1}
    for spec, reused in (
        (f"m=maml:{runs}/maml", {}),
        (f"m=maml:{runs}/maml@inner.test_steps=1", {"m": f"{tmp_path}/a"}),
    ):
        _evaluate(tmp_path, f"methods=[{spec}]", "name=b", f"reuse=[{tmp_path}/a]")
        assert json.loads((tmp_path / "b" / "report.json").read_text())["reused"].get("5w1s", {}) == reused
        shutil.rmtree(tmp_path / "b")


def test_views_average_frozen_features_and_are_part_of_a_method(runs, tmp_path):
    ctx = BuildContext(1, 28, "conv4", OmegaConf.structured(FineTuneConfig), seed=0)
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for spec in (f"protonet:{runs}/protonet", f"simpleshot:{runs}/pretrain", f"finetune:{runs}/pretrain"):
        plain = build_method(parse_method(spec), ctx)
        four = build_method(parse_method(f"{spec}@views=4"), ctx)
        theta = affine_matrices(3, torch.Generator().manual_seed(0))
        copies = [images, *(warp(images, t.expand(6, 2, 3)) for t in theta)]
        expected = torch.stack([plain.feature_extractor()(c) for c in copies]).mean(0)
        torch.testing.assert_close(four.feature_extractor()(images), expected)
        assert not torch.allclose(four.feature_extractor()(images), plain.feature_extractor()(images))
    assert build_method(parse_method(f"protonet:{runs}/protonet@refine=2"), ctx).refine_steps == 2
    proto4 = f"p=protonet:{runs}/protonet@views=4"
    _evaluate(tmp_path, f"methods=[{proto4}]", "name=a")
    assert json.loads((tmp_path / "a" / "methods.json").read_text())["p"]["views"] == 4
    for spec, reused in (
        (f"p=protonet:{runs}/protonet", {}),
        (f"{proto4}@refine=1", {}),  # refined class means: other predictions
        (proto4, {"p": f"{tmp_path}/a"}),
    ):
        _evaluate(tmp_path, f"methods=[{spec}]", "name=b", f"reuse=[{tmp_path}/a]")
        assert json.loads((tmp_path / "b" / "report.json").read_text())["reused"].get("5w1s", {}) == reused
        shutil.rmtree(tmp_path / "b")


@pytest.mark.parametrize("learner", ["maml", "reptile"])
def test_views_go_through_a_stepped_runs_backbone_as_it_adapts(learner, runs, tmp_path):
    """With a negligible test lr the adapted network is the trained one, so the predictions are
    its head on each query's features averaged over the views, BatchNorm on the batch of all of them."""
    if learner == "reptile":  # the shared runs hold no Reptile run
        train_main(["reptile", *TINY_TRAIN, f"train.out_dir={tmp_path}"])
    run = (runs if learner == "maml" else tmp_path) / learner
    ctx = BuildContext(1, 28, "conv4", OmegaConf.create({}), seed=0)
    spec = f"{learner}:{run}@inner.test_lr=1e-12"
    plain, four = (build_method(parse_method(s), ctx) for s in (spec, f"{spec}@views=4"))
    episode = EpisodeSampler(
        load_splits(OmegaConf.load(run / "config.yaml").data)[0]["val"], 5, 1, 3
    ).episode(0)
    theta = affine_matrices(3, torch.Generator().manual_seed(0))
    x = episode.query_x
    copies = torch.cat([x, *(warp(x, t.expand(len(x), 2, 3)) for t in theta)])
    net = plain.model
    with torch.no_grad(), batch_statistics(net):
        expected = net.head(net.backbone(copies).unflatten(0, (4, len(x))).mean(0))
    logits = four.adapt(episode.support_x, episode.support_y)(x)
    torch.testing.assert_close(logits, expected, atol=1e-3, rtol=1e-3)  # channels-last rounding
    unviewed = plain.adapt(episode.support_x, episode.support_y)(x)
    assert (logits - unviewed).abs().max() > 0.05
    assert four.test_steps == plain.test_steps  # the same adaptation, on the views


def test_whitening_is_fitted_on_the_runs_own_base_classes_and_is_part_of_a_method(runs, tmp_path):
    ctx = BuildContext(1, 28, "conv4", OmegaConf.create({}), seed=0)
    run = f"{runs}/protonet"
    viewed = build_method(parse_method(f"protonet:{run}@views=2"), ctx)
    whitened = build_method(parse_method(f"protonet:{run}@views=2@whiten=0.5"), ctx)
    assert isinstance(whitened.backbone, Whitened) and isinstance(whitened.backbone.backbone, ViewAveraged)
    # by hand: the run's base classes from its own split.json, the view-averaged features of their images
    data = OmegaConf.load(runs / "protonet" / "config.yaml").data
    data.split.manifest = str(runs / "protonet" / "split.json")
    base = load_splits(data, required=("base",))[0]["base"]
    features = embed_dataset(viewed.feature_extractor(), base)
    labels = torch.arange(base.num_classes).repeat_interleave(base.offsets.diff())
    torch.testing.assert_close(whitened.backbone.matrix, within_class_whitening(features, labels, 0.5))
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        whitened.feature_extractor()(images), viewed.feature_extractor()(images) @ whitened.backbone.matrix
    )
    # with a prior: the backbone as it was, and each episode's matrix from the same base covariance
    pooled = build_method(parse_method(f"protonet:{run}@views=2@whiten=0.5@prior=30"), ctx)
    assert isinstance(pooled.backbone, ViewAveraged) and isinstance(pooled.whitening, SupportWhitening)
    expected = SupportWhitening(within_class_covariance(features, labels), 0.5, 30)
    torch.testing.assert_close(pooled.whitening.covariance, expected.covariance)
    assert pooled.whitening.prior == 30
    assert len(ctx.base_features) == 1  # the base images embedded once for both, with the same views
    refined = build_method(parse_method(f"protonet:{run}@whiten=0.5@prior=30@rewhiten=3"), ctx)
    assert (refined.refine_steps, refined.refine_whitening) == (3, True)
    # the third block beside the features: fitted on the base classes' features of both, group by group
    levels = build_method(parse_method(f"protonet:{run}@views=2@whiten=0.5@prior=30@block3=0.25"), ctx)
    assert isinstance(levels.backbone, ViewAveraged) and isinstance(levels.backbone.backbone, BlockFeatures)
    both = embed_dataset(levels.feature_extractor(), base)
    torch.testing.assert_close(both[:, :64], features)
    groups = [(64, 1.0), (64, 0.25)]
    expected = SupportWhitening(within_class_covariance(both, labels), 0.5, 30, groups=groups)
    torch.testing.assert_close(levels.whitening.covariance, expected.covariance)
    assert levels.whitening.groups == expected.groups == [(0, 64, 1.0), (64, 128, 0.25)]
    with pytest.raises(MethodError, match="blocks must be distinct numbers from 1 to 3"):
        build_method(parse_method(f"protonet:{run}@whiten=0.5@prior=30@block4=1"), ctx)
    _evaluate(tmp_path, f"methods=[w=protonet:{run}@whiten=2,p=protonet:{run}@whiten=2@prior=30]", "name=a")
    records = json.loads((tmp_path / "a" / "methods.json").read_text())
    assert (records["w"]["whiten"], records["p"]["whiten"], records["p"]["prior"]) == (2.0, 2.0, 30.0)
    assert "prior" not in records["w"]
    for spec, reused in (
        (f"w=protonet:{run}", {}),
        (f"w=protonet:{run}@whiten=1", {}),  # another shrinkage: other predictions
        (f"w=protonet:{run}@whiten=2@prior=30", {}),  # pooled with each support set: others again
        (f"w=protonet:{run}@whiten=2@prior=30@rewhiten=2", {}),  # and refined with the queries
        (f"p=protonet:{run}@whiten=2@prior=30@block2=1", {}),  # with the second block's features too
        (f"p=protonet:{run}@whiten=2@prior=30", {"p": f"{tmp_path}/a"}),
        (f"w=protonet:{run}@whiten=2", {"w": f"{tmp_path}/a"}),
    ):
        _evaluate(tmp_path, f"methods=[{spec}]", "name=b", f"reuse=[{tmp_path}/a]")
        assert json.loads((tmp_path / "b" / "report.json").read_text())["reused"].get("5w1s", {}) == reused
        shutil.rmtree(tmp_path / "b")
    # a run whose images are no longer where it read them says so, and where it looked
    state = torch.load(runs / "protonet" / "best.pt", weights_only=True)
    state["config"]["data"].update(source="omniglot", root=str(tmp_path / "gone.zip"))
    torch.save(state, tmp_path / "moved.pt")
    with pytest.raises(
        MethodError, match="@whiten reads the base classes of .*moved.pt.* from its data.root"
    ):
        build_method(parse_method(f"protonet:{tmp_path}/moved.pt@whiten=1"), ctx)


def test_a_run_trained_on_another_image_size_is_refused_with_the_size_to_evaluate_it_at(runs):
    ctx = BuildContext(1, 32, "conv4", OmegaConf.structured(FineTuneConfig), seed=0)
    for spec in (f"protonet:{runs}/protonet", f"simpleshot:{runs}/pretrain", f"finetune:{runs}/pretrain"):
        with pytest.raises(MethodError, match="trained on 28x28 images .* reads 32x32; .*data.image_size=28"):
            build_method(parse_method(spec), ctx)


def test_an_ensemble_of_protonets_adds_its_members_logits_and_is_a_method_of_its_own(
    runs, small_synthetic, tmp_path
):
    other = tmp_path / "runs"
    train_main(["protonet", *TINY_TRAIN, "train.seed=1", f"train.out_dir={other}"])
    a, b = f"{runs}/protonet", f"{other}/protonet"
    ctx = BuildContext(1, 28, "conv4", OmegaConf.create({}), seed=0)
    members = [build_method(parse_method(f"protonet:{run}"), ctx) for run in (a, b)]
    both = build_method(parse_method(f"protonet:{a}+{b}"), ctx)
    assert isinstance(both.backbone, FeatureEnsemble) and both.backbone.feature_dim == 2 * 64
    with pytest.raises(ValueError, match="at least two backbones, got 1"):
        FeatureEnsemble([members[0].backbone])
    episodes = EpisodeSampler(small_synthetic, 3, 1, 2, seed=0).batch(range(2))
    logits = [
        m.adapt_batch(episodes.support_x, episodes.support_y)(episodes.query_x) for m in (*members, both)
    ]
    torch.testing.assert_close(logits[2], logits[0] + logits[1])
    assert not torch.allclose(logits[0], logits[1])  # two different networks
    viewed = build_method(parse_method(f"protonet:{a}+{b}@views=2@refine=1"), ctx)
    assert isinstance(viewed.backbone.backbone, FeatureEnsemble) and viewed.refine_steps == 1
    with pytest.raises(MethodError, match="is a maml checkpoint; write it as maml:"):
        build_method(parse_method(f"protonet:{a}+{runs}/maml"), ctx)
    _evaluate(tmp_path, f"methods=[e=protonet:{a}+{b}]", "name=a")
    record = json.loads((tmp_path / "a" / "methods.json").read_text())["e"]
    assert [m["checkpoint"] for m in record["members"]] == [str(other / "protonet" / "best.pt")]
    for spec, reused in (
        (f"e=protonet:{a}", {}),  # the first member alone
        (f"e=protonet:{b}+{a}", {}),  # the same runs, the other way round: other float sums
        (f"e=protonet:{a}+{b}", {"e": f"{tmp_path}/a"}),
    ):
        _evaluate(tmp_path, f"methods=[{spec}]", "name=b", f"reuse=[{tmp_path}/a]")
        assert json.loads((tmp_path / "b" / "report.json").read_text())["reused"].get("5w1s", {}) == reused
        shutil.rmtree(tmp_path / "b")


def test_methods_with_nothing_left_to_score_are_not_built(runs, small_synthetic, tmp_path, monkeypatch):
    evaluate_module = importlib.import_module("fewshot.evaluate")
    built, build = [], evaluate_module.build_method

    def counted(spec, ctx):
        built.append(spec.label)
        return build(spec, ctx)

    monkeypatch.setattr(evaluate_module, "build_method", counted)
    probe = f"probe=finetune:{runs}/pretrain"
    _evaluate(tmp_path, f"methods=[scratch,{probe}]", "name=a")
    assert built == ["scratch", "probe"]
    _evaluate(
        tmp_path, f"methods=[scratch,{probe},p=protonet:{runs}/protonet]", "name=b", f"reuse=[{tmp_path}/a]"
    )
    assert built[2:] == ["p"]  # scratch and probe reused in every setting: not built again
    first, again = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("a", "b"))
    assert again["results"]["5w1s"]["probe"]["accuracy"] == first["results"]["5w1s"]["probe"]["accuracy"]
    # by hand: what compare still has to score, and a learner left out where it has some
    scored = {
        key: {m: v for m, v in by_label["probe"].items() if m != "seconds"}
        for key, by_label in torch.load(tmp_path / "a" / "scores.pt", weights_only=True).items()
    }
    known = {"5w1s": {"probe": Scores(scored["5w1s"], 1.0)}}
    assert unscored(["probe", "scratch"], ["5w1s"], 4, 2, known) == {"scratch"}
    assert unscored(["probe"], ["5w1s", "10w2s"], 4, 2, known) == {"probe"}
    saved = PartialScores(tmp_path / "c")
    saved.record("10w2s", "probe", 0, scored["10w2s"], 1.0)
    assert unscored(["probe"], ["5w1s", "10w2s"], 4, 4, known, saved) == set()  # one chunk of 4, saved
    assert unscored(["probe"], ["5w1s", "10w2s"], 4, 2, known, saved) == {"probe"}  # chunk 0 is 2 now
    with pytest.raises(ValueError, match="\\['probe'\\] have episodes left to score; give their learners"):
        compare({"probe": None}, small_synthetic, ["5w1s", "3w2s"], q_query=2, episodes=4, known=known)
    alone = compare({"probe": None}, small_synthetic, ["5w1s"], q_query=2, episodes=4, known=known)
    assert torch.equal(alone.scores["5w1s"]["probe"].metrics["accuracy"], scored["5w1s"]["accuracy"])


def test_a_killed_evaluation_resumes_in_its_own_directory(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(partial, "SAVE_EVERY_S", 0.0)
    score, calls = compare_module._score, []

    def dies_at_the_sixth_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise Killed
        return score(*args, **kwargs)

    monkeypatch.setattr(compare_module, "_score", dies_at_the_sixth_chunk)
    two = [f"methods=[scratch,probe=finetune:{runs}/pretrain]", "batch_episodes=2"]  # 2 x 2 x 2 chunks
    with pytest.raises(Killed):
        _evaluate(tmp_path, *two, "name=a")
    assert not (tmp_path / "a" / "scores.pt").exists() and (tmp_path / "a" / "partial").is_dir()
    capsys.readouterr()
    with pytest.raises(SystemExit):  # its scores are not there to take yet
        _evaluate(tmp_path, *two, "name=c", f"reuse=[{tmp_path}/a]")
    assert "unfinished evaluation; finish it first with" in capsys.readouterr().err
    records = tmp_path / "a" / "methods.json"
    kept, partial_file = records.read_text(), tmp_path / "a" / "partial" / "rank0.pt"
    saved_chunks = partial_file.read_bytes()
    other_checkpoint = kept.replace('"sha256": "', '"sha256": "0')
    for broken, text, args, message in (
        (None, None, ["--config", str(records)], "--config cannot be given with resume="),
        (records, other_checkpoint, [], "a method's checkpoint has changed since it started"),
        (partial_file, "not torch", [], "rank0.pt (UnpicklingError); remove it"),
    ):
        if broken is not None:
            broken.write_text(text)
        with pytest.raises(SystemExit):
            main([f"resume={tmp_path}/a", *args])
        assert message in capsys.readouterr().err, message
        records.write_text(kept)
        partial_file.write_bytes(saved_chunks)
    main([f"resume={tmp_path}/a", "quiet=true"])
    assert len(calls) == 6 + 3  # the three chunks not saved
    assert not (tmp_path / "a" / "partial").exists()
    _evaluate(tmp_path, *two, "name=b")  # the same evaluation, not killed
    resumed, whole = (torch.load(tmp_path / n / "scores.pt", weights_only=True) for n in ("a", "b"))
    for key in ("5w1s", "10w2s"):
        for label in ("scratch", "probe"):
            assert torch.equal(resumed[key][label]["accuracy"], whole[key][label]["accuracy"])
    capsys.readouterr()
    for args, message in (
        ([f"resume={tmp_path}/a"], "it is finished"),
        ([f"resume={tmp_path}/b", "episodes=5"], "episodes=5 cannot be given with it"),
        ([f"resume={tmp_path}"], "has no config.yaml"),
    ):
        with pytest.raises(SystemExit):
            main(args)
        assert message in capsys.readouterr().err, args
