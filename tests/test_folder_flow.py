"""A user's own image folder end to end: pretrain, meta-train, evaluate and predict through the CLIs.

The folders are made here: PNG and JPEG, mixed sizes, RGB and grayscale, one corrupt file.
"""

import csv
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

import fewshot
from fewshot.evaluate import main as evaluate_main
from fewshot.predict import main as predict_main
from fewshot.train import main as train_main

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 200, 40), (200, 40, 200), (40, 200, 200)]


def draw(cls: int, seed: int, size: tuple[int, int], grey: bool) -> Image.Image:
    """Class ``cls``: a coloured shape at a class-specific place, jittered per image."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, (250, 250, 245))
    pen = ImageDraw.Draw(img)
    w, h = size
    cx = (0.25 + 0.5 * ((cls // 3) % 2)) * w + rng.uniform(-2, 2)
    cy = (0.25 + 0.25 * (cls % 3)) * h + rng.uniform(-2, 2)
    r = 0.18 * min(w, h)
    box = (cx - r, cy - r, cx + r, cy + r)
    colour = COLOURS[cls % len(COLOURS)]
    (pen.ellipse if cls % 2 else pen.rectangle)(box, fill=colour)
    return img.convert("L") if grey else img


def make_folder(root: Path, classes: range, per_class: int, corrupt: bool = False) -> Path:
    for c in classes:
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            size = (40, 40) if i % 2 else (56, 44)
            img = draw(c, 1000 * c + i, size, grey=(i == 3))
            if i % 3 == 0:
                img.save(folder / f"img{i}.jpg", quality=95)
            else:
                img.save(folder / f"img{i}.png")
    if corrupt:
        (root / f"class{classes[0]:02d}" / "broken.png").write_bytes(b"this is not a png")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("photos"), range(15), 8, corrupt=True)


DATA = ["data=folder", "data.image_size=32", "data.on_error=skip"]
FAST = ["task.n_way=3", "task.q_query=2", "train.val_episodes=4", "train.quiet=true"]


@pytest.fixture(scope="module")
def runs(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    common = [*DATA, f"data.root={photos}", f"train.out_dir={out}", *FAST]
    with pytest.warns(UserWarning, match="broken.png"):
        train_main(["pretrain", *common, "train.steps=30", "train.val_every=30", "train.batch_size=16"])
    train_main(
        ["maml", *common, f"model.pretrained={out}/pretrain/best.pt", "train.steps=4", "train.val_every=4"]
        + [
            "task.meta_batch=2",
            "summary.episodes=4",
            "summary.n_way=3",
            "summary.q_query=2",
            "summary.finetune_epochs=1",
        ]
    )
    return out


def test_a_corrupt_file_is_named_unless_skipped(photos, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_main(["pretrain", "data=folder", f"data.root={photos}", f"train.out_dir={tmp_path}"])
    assert "broken.png" in capsys.readouterr().err


def test_episodes_within_a_group_are_refused_for_a_folder_without_groups(photos, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_main(
            ["protonet", *DATA, f"data.root={photos}", *FAST, "task.within_group=true"]
            + [f"train.out_dir={tmp_path}"]
        )
    assert "are in no group, so it would change nothing" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before the run directory is made


def test_pretrain_meta_train_and_evaluate_on_a_folder(runs, photos, tmp_path, capsys):
    assert (runs / "pretrain" / "best.pt").is_file() and (runs / "maml" / "best.pt").is_file()
    evaluate_main(
        [*DATA, f"data.root={photos}", f"data.split.manifest={runs}/maml/split.json", "settings=[3w1s]"]
        + [f"methods=[maml:{runs}/maml,finetune:{runs}/pretrain]", "episodes=6", "q_query=2"]
        + ["finetune.epochs=2", f"out_dir={tmp_path}", "quiet=true"]
    )
    out = capsys.readouterr().out
    assert "3-way 1-shot" in out and (tmp_path / "evaluate" / "report.md").is_file()


@pytest.fixture()
def episode(photos, runs, tmp_path) -> tuple[Path, Path, Path]:
    """Support (2 images per novel class), labelled queries and unlabelled queries."""
    novel = fewshot.data.load_manifest(runs / "maml" / "split.json")["splits"]["novel"]
    support, labelled, loose = tmp_path / "support", tmp_path / "labelled", tmp_path / "loose"
    loose.mkdir()
    for name in novel:
        files = sorted(p for p in (photos / name).iterdir() if p.name != "broken.png")
        for target, chosen in ((support, files[:2]), (labelled, files[2:])):
            (target / name).mkdir(parents=True)
            for f in chosen:
                (target / name / f.name).write_bytes(f.read_bytes())
        for f in files[2:]:
            (loose / f"{name}-{f.name}").write_bytes(f.read_bytes())
    return support, labelled, loose


def predict(run: Path, support: Path, query: Path, out: Path, *extra: str) -> None:
    predict_main(
        [
            "--checkpoint",
            str(run),
            "--support",
            str(support),
            "--query",
            str(query),
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.mark.parametrize("method", [None, "simpleshot", "finetune-freeze3"])
def test_predict_writes_scores_and_reports_labelled_queries(runs, episode, tmp_path, capsys, method):
    support, labelled, _ = episode
    run = runs / ("maml" if method is None else "pretrain")
    out = tmp_path / "pred.csv"
    extra = [] if method is None else ["--method", method, "epochs=5"]
    predict(run, support, labelled, out, *extra)
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    classes = sorted(p.name for p in support.iterdir())
    assert len(rows) == 3 * 6
    assert list(rows[0]) == ["image", "predicted", "score", "true", *(f"p({c})" for c in classes)]
    for row in rows:
        probs = [float(row[f"p({c})"]) for c in classes]
        assert abs(sum(probs) - 1) < 1e-4 and float(row["score"]) == pytest.approx(max(probs), abs=1e-6)
        assert row["predicted"] == classes[probs.index(max(probs))]
    correct = sum(r["predicted"] == r["true"] for r in rows)
    assert f"accuracy {100 * correct / len(rows):.2f}%" in printed
    for c in classes:
        assert c in printed.split("precision")[1]


def test_predict_unlabelled_queries_and_the_python_api(runs, episode, tmp_path, capsys):
    support, _, loose = episode
    out = tmp_path / "pred.csv"
    predict(runs / "maml", support, loose, out)
    rows = list(csv.DictReader(out.open()))
    assert "true" not in rows[0] and len(rows) == 18
    assert "accuracy" not in capsys.readouterr().out

    files = sorted(support.rglob("*.*"))
    model = fewshot.load(runs / "maml")
    adapted = model.adapt(files, [f.parent.name for f in files])
    result = adapted.predict(sorted(loose.iterdir()))
    assert result.labels == [r["predicted"] for r in rows]
    torch.testing.assert_close(
        result.scores,
        torch.tensor([[float(r[f"p({c})"]) for c in adapted.classes] for r in rows]),
        atol=1e-6,
        rtol=0,
    )


def test_predict_errors_name_the_problem(runs, episode, tmp_path, capsys):
    support, labelled, loose = episode
    run = str(runs / "maml")

    def error(*args: str) -> str:
        with pytest.raises(SystemExit):
            predict_main(["--checkpoint", run, "--out", str(tmp_path / "x.csv"), *args])
        return capsys.readouterr().err

    empty = tmp_path / "empty-class"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    (empty / "a" / "x.png").write_bytes((support.rglob("*.png").__next__()).read_bytes())
    assert "no images" in error("--support", str(empty), "--query", str(loose))
    assert "does not exist" in error("--support", str(tmp_path / "nowhere"), "--query", str(loose))

    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(b"junk")
    (unreadable / "b.jpg").write_bytes(b"junk")
    assert "none of the 2 query images" in error("--support", str(support), "--query", str(unreadable))
    assert not (tmp_path / "x.csv").exists()

    one = tmp_path / "one-class"
    (one / "only").mkdir(parents=True)
    (one / "only" / "x.png").write_bytes((support.rglob("*.png").__next__()).read_bytes())
    assert "at least two classes" in error("--support", str(one), "--query", str(loose))

    stranger = tmp_path / "stranger"
    (stranger / "unknown-class").mkdir(parents=True)
    (stranger / "unknown-class" / "x.png").write_bytes((support.rglob("*.png").__next__()).read_bytes())
    assert "not among the support classes" in error("--support", str(support), "--query", str(stranger))

    assert "is a pretrain checkpoint" in error(
        "--support",
        str(support),
        "--query",
        str(loose),
        "--checkpoint",
        str(runs / "pretrain"),
        "--method",
        "maml",
    )
    bare = tmp_path / "bare.pt"
    torch.save(fewshot.build_backbone("conv4", 3, 32).state_dict(), bare)
    assert "unknown_setting" in error("--support", str(support), "--query", str(loose), "unknown_setting=3")
    assert "bare state_dict" in error(
        "--support", str(support), "--query", str(loose), "--checkpoint", str(bare)
    )
    assert "does not fit this ResNet12" in error(
        "--support",
        str(support),
        "--query",
        str(loose),
        "--checkpoint",
        str(bare),
        "--backbone",
        "resnet12",
        "--image-size",
        "32",
    )


def test_some_unreadable_queries_are_skipped_with_a_warning(runs, episode, tmp_path):
    support, _, loose = episode
    (loose / "zzz-broken.png").write_bytes(b"junk")
    out = tmp_path / "pred.csv"
    with pytest.warns(UserWarning, match="zzz-broken.png"):
        predict(runs / "maml", support, loose, out)
    assert len(list(csv.DictReader(out.open()))) == 18
