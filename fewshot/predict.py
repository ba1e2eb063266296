"""``python -m fewshot.predict``: adapt a trained run to a few labelled images, classify others.

    python -m fewshot.predict --checkpoint runs/maml --support support/ --query query/
    python -m fewshot.predict --checkpoint runs/pretrain --method finetune-full ... backbone_lr=0.001

``--support`` holds one sub-folder per class with one or a few images each. ``--query`` is a
folder of images, a single image, or a folder of class sub-folders (labelled queries: then
accuracy and per-class precision, recall and F1 are printed too). Writes a CSV with one row per
query image: the predicted class, its probability, and the probability of every class.
Read top to bottom: load the method, read the support set, adapt, read the queries, predict,
write.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from fewshot.data.decode import IMAGE_EXTENSIONS, ImageReadError
from fewshot.data.folder import find_classes
from fewshot.evaluation import MethodError
from fewshot.evaluation.metrics import class_metrics
from fewshot.inference import Predictions, Preprocessing, load
from fewshot.io import atomic_write_text


def read_images(
    prep: Preprocessing, paths: list[Path], on_error: str, desc: str
) -> tuple[torch.Tensor, list[Path]]:
    """Decode ``paths`` with a progress bar; the images and the paths that were read."""
    chunks, kept = [], []
    with tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
        for lo in range(0, len(paths), 64):
            part = paths[lo : lo + 64]
            images, skipped = prep.read(part, on_error)
            chunks.append(images)
            kept += [p for p in part if str(p) not in skipped]
            bar.update(len(part))
    return torch.cat(chunks), kept


def query_files(query: Path) -> tuple[list[Path], list[str] | None]:
    """The query images and, for a folder of class sub-folders, their classes (else ``None``)."""
    if query.is_file():
        return [query], None
    if not query.is_dir():
        raise FileNotFoundError(f"query {str(query)!r} does not exist; give an image or a folder of images")
    loose = sorted(p for p in query.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    folders = [p for p in query.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if loose and folders:
        raise ValueError(
            f"query folder {str(query)!r} holds both images and sub-folders; put unlabelled images "
            "directly in it, or labelled ones in one sub-folder per class, not both"
        )
    if loose:
        return loose, None
    if not folders:
        raise ValueError(f"query folder {str(query)!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return labelled_files(query)


def labelled_files(root: str | Path) -> tuple[list[Path], list[str]]:
    """Every image under ``root``'s class folders, and its class (:func:`find_classes`)."""
    classes = find_classes(root)
    return [p for _, _, ps in classes for p in ps], [name for name, _, ps in classes for _ in ps]


def csv_text(files: list[Path], result: Predictions, truth: list[str] | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["image", "predicted", "score", *(["true"] if truth else []), *(f"p({c})" for c in result.classes)]
    )
    for i, f in enumerate(files):
        best = result.scores[i].max().item()
        row = [str(f), result.labels[i], f"{best:.6f}", *([truth[i]] if truth else [])]
        writer.writerow(row + [f"{p:.6f}" for p in result.scores[i].tolist()])
    return out.getvalue()


def report(result: Predictions, truth: list[str]) -> str:
    """Accuracy, and precision, recall and F1 per class, of labelled queries."""
    labels = torch.tensor([result.classes.index(t) for t in truth])
    per_class = class_metrics(result.logits, labels)
    accuracy = (result.logits.argmax(-1) == labels).float().mean().item()
    width = max(len(c) for c in result.classes)
    lines = [
        f"accuracy {100 * accuracy:.2f}% on {len(truth)} labelled query images",
        f"{'class':<{width}}  precision  recall     f1  images",
    ]
    for i, c in enumerate(result.classes):
        p, r, f, n = (per_class[k][i].item() for k in ("precision", "recall", "f1", "support"))
        lines.append(f"{c:<{width}}  {100 * p:9.2f}  {100 * r:6.2f}  {100 * f:5.2f}  {int(n):6d}")
    return "\n".join(lines)


def predict(args: argparse.Namespace) -> Path:
    try:
        finetune = OmegaConf.to_container(OmegaConf.from_dotlist(args.finetune))
    except Exception as err:  # not key=value
        raise ValueError(f"fine-tuning settings {args.finetune}: write them as key=value ({err})") from None
    model = load(
        args.checkpoint,
        args.method,
        args.device,
        args.backbone,
        args.image_size,
        args.channels,
        args.seed,
        **finetune,
    )
    prep = model.preprocessing

    if not Path(args.support).is_dir():
        raise FileNotFoundError(
            f"support folder {args.support!r} does not exist; give --support <folder with one sub-folder "
            "of images per class>"
        )
    files, names = labelled_files(args.support)
    n_classes = len(set(names))
    support_x, _ = read_images(prep, files, "raise", "support")
    if model.trained_ways is not None and model.trained_ways != n_classes:
        print(
            f"note: {args.checkpoint} was meta-trained for {model.trained_ways}-way tasks; its head "
            f"starts from the mean of its rows for these {n_classes} classes"
        )
    print(f"adapting {model.method} to {n_classes} classes from {len(files)} support images")
    adapted = model.adapt(support_x, names)

    queries, truth = query_files(Path(args.query))
    unknown = sorted(set(truth or []) - set(adapted.classes))
    if unknown:
        raise ValueError(
            f"labelled query classes {unknown} are not among the support classes {adapted.classes}; "
            "add them to the support set or remove them from the query"
        )
    query_x, kept = read_images(prep, queries, "skip", "query")
    read = set(kept)
    skipped = [str(p) for p in queries if p not in read]
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable query image(s): {', '.join(skipped)}", stacklevel=1)
    if not kept:
        raise ImageReadError(f"none of the {len(queries)} query images in {args.query} could be read")
    if truth:
        truth = [t for p, t in zip(queries, truth, strict=True) if p in read]
    result = adapted.predict(query_x)

    out = atomic_write_text(args.out, csv_text(kept, result, truth))
    print(f"predicted {len(kept)} query images: {out}")
    if truth:
        print(report(result, truth))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fewshot.predict",
        description="Adapt a trained run to labelled support images and classify query images.",
    )
    parser.add_argument("--checkpoint", required=True, help="run directory or .pt file")
    parser.add_argument("--support", required=True, help="folder with one sub-folder of images per class")
    parser.add_argument("--query", required=True, help="image, folder of images, or folder of class folders")
    parser.add_argument(
        "--method",
        help="how to use the checkpoint, as in fewshot.evaluate (default: a meta-trained run's own learner, "
        "else finetune); e.g. simpleshot, finetune-full, finetune-freeze3",
    )
    parser.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", help="for a bare state_dict: resnet18, conv4, ...")
    parser.add_argument("--image-size", type=int, help="for a bare state_dict: the input size, e.g. 224")
    parser.add_argument("--channels", type=int, default=3, help="for a bare state_dict: 1 or 3 (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "finetune",
        nargs="*",
        metavar="key=value",
        help="fine-tuning settings: epochs, lr, backbone_lr, momentum, weight_decay, batch_size, head",
    )
    args = parser.parse_intermixed_args(argv)
    try:
        predict(args)
    except (MethodError, ImageReadError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
