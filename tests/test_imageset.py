import pytest
import torch

from fewshot.data import ImageSet, apply_split, load_manifest, make_split, save_manifest
from fewshot.data.augment import augment


def test_rotations_make_distinct_classes(small_synthetic):
    base = small_synthetic.subset(range(10))
    rot = base.with_rotations()
    assert rot.num_classes == 40 and len(rot.images) == 4 * len(base.images)
    assert len(set(rot.class_names)) == 40
    assert rot.class_names[10] == base.class_names[0] + "@rot90"
    assert rot.groups[10] == base.groups[0]
    assert torch.equal(rot.class_images(0), base.class_images(0))
    assert torch.equal(rot.class_images(10), torch.rot90(base.class_images(0), 1, (2, 3)))
    for c in range(10):  # a rotated character is not its original
        assert not torch.equal(rot.class_images(c), rot.class_images(c + 20))
    with pytest.raises(ValueError, match="multiples of 90"):
        base.with_rotations((0, 45))


def test_reflections_make_distinct_classes(small_synthetic):
    base = small_synthetic.subset(range(10))
    both = base.with_rotations().with_reflections()  # the eight symmetries of the square
    assert both.num_classes == 80 and len(both.images) == 8 * len(base.images)
    assert len(set(both.class_names)) == 80
    assert both.class_names[40] == base.class_names[0] + "@flip"
    assert both.class_names[50] == base.class_names[0] + "@rot90@flip"
    assert both.groups[50] == base.groups[0]
    assert torch.equal(both.class_images(40), torch.flip(base.class_images(0), (3,)))
    for c in range(10):  # a mirrored character is neither its original nor any rotation of it
        mirrored = both.class_images(c + 40)
        assert not any(torch.equal(mirrored, both.class_images(c + 10 * r)) for r in range(4))


def test_subset_by_name_and_index(small_synthetic):
    sub = small_synthetic.subset([small_synthetic.class_names[5], 2])
    assert sub.class_names == (small_synthetic.class_names[5], small_synthetic.class_names[2])
    assert torch.equal(sub.class_images(1), small_synthetic.class_images(2))
    with pytest.raises(KeyError, match="not in this image set"):
        small_synthetic.subset(["no-such-class"])


def test_invalid_construction():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 2]), ("a",), ("",))
    with pytest.raises(ValueError, match="unique"):
        ImageSet.from_classes([torch.zeros(1, 1, 2, 2, dtype=torch.uint8)] * 2, ["a", "a"])


@pytest.mark.parametrize("by", ["class", "group"])
def test_split_is_seeded_disjoint_and_complete(small_synthetic, by):
    sizes = {"base": 0.6, "val": 0.2, "novel": 0.2}
    m1 = make_split(small_synthetic, sizes, by=by, seed=4)
    assert m1 == make_split(small_synthetic, sizes, by=by, seed=4)
    assert m1 != make_split(small_synthetic, sizes, by=by, seed=5)
    names = [c for split in m1["splits"].values() for c in split]
    assert sorted(names) == sorted(small_synthetic.class_names)
    if by == "group":
        groups = {n: {n.split("/")[0] for n in split} for n, split in m1["splits"].items()}
        assert not groups["base"] & groups["novel"] and not groups["val"] & groups["novel"]
        assert [len(g) for g in groups.values()] == [3, 1, 1]


def test_split_counts_and_errors(small_synthetic):
    m = make_split(small_synthetic, {"train": 70, "test": 20}, by="class", seed=0)
    assert [len(v) for v in m["splits"].values()] == [70, 20]
    with pytest.raises(ValueError, match="sum to 1"):
        make_split(small_synthetic, {"a": 0.5, "b": 0.2})
    with pytest.raises(ValueError, match="more than the 100 units"):
        make_split(small_synthetic, {"a": 90, "b": 20})
    with pytest.raises(ValueError, match="by must be"):
        make_split(small_synthetic, {"a": 1.0}, by="alphabet")


def test_manifest_round_trip_gives_same_subsets(small_synthetic, tmp_path):
    m = make_split(small_synthetic, {"base": 0.8, "novel": 0.2}, by="group", seed=1)
    path = save_manifest(m, tmp_path / "split.json")
    assert load_manifest(path) == m
    a, b = apply_split(small_synthetic, m), apply_split(small_synthetic, load_manifest(path))
    assert torch.equal(a["novel"].images, b["novel"].images)
    assert a["base"].num_classes + a["novel"].num_classes == 100
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_manifest_for_other_data_is_rejected(small_synthetic, tmp_path):
    with pytest.raises(ValueError, match="not in the dataset"):
        apply_split(small_synthetic, {"splits": {"novel": ["Greek/character01"]}})
    with pytest.raises(FileNotFoundError, match="not found"):
        load_manifest(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a split manifest"):
        load_manifest(tmp_path / "bad.json")


@pytest.mark.parametrize("kind", ["crop", "crop-flip"])
def test_augment_shifts_and_flips_within_the_padding(kind):
    x = torch.arange(6 * 2 * 16 * 16, dtype=torch.float32).view(6, 2, 16, 16)
    out = augment(x, kind, torch.Generator().manual_seed(0))
    assert torch.equal(out, augment(x, kind, torch.Generator().manual_seed(0)))  # seeded
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    windows = [(dy, dx) for dy in range(5) for dx in range(5)]
    flips = 0
    for i in range(6):
        plain = [torch.equal(out[i], padded[i, :, dy : dy + 16, dx : dx + 16]) for dy, dx in windows]
        mirrored = [
            torch.equal(out[i], padded[i, :, dy : dy + 16, dx : dx + 16].flip(-1)) for dy, dx in windows
        ]
        assert any(plain) or (kind == "crop-flip" and any(mirrored))
        flips += not any(plain)
    assert (flips > 0) == (kind == "crop-flip")
    assert augment(x, "none", torch.Generator()) is x
    with pytest.raises(ValueError, match="crop-flip"):
        augment(x, "rotate", torch.Generator())


def test_affine_augment_moves_strokes_a_little_and_keeps_them():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 8:20, 13:15] = 1.0  # a vertical stroke in the middle
    g = torch.Generator().manual_seed(0)
    out = augment(x, "affine", g)
    assert out.shape == x.shape and torch.equal(out, augment(x, "affine", torch.Generator().manual_seed(0)))
    assert out.min() >= 0 and out.max() <= 1
    changed = (out - x).abs().flatten(1).sum(1)
    assert (changed > 1).all()  # every image is transformed ...
    assert len({round(float(c), 3) for c in changed}) == 8  # ... each its own way
    ink = out.flatten(1).sum(1) / x.flatten(1).sum(1)
    assert ((ink > 0.7) & (ink < 1.3)).all()  # scaled by at most 10% per side: the stroke stays
    assert out[:, :, :3].sum() == 0 and out[:, :, -3:].sum() == 0  # and stays near the centre


def test_elastic_augment_bends_the_affine_result_by_at_most_two_pixels():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 8:20, 13:15] = 1.0
    affine = augment(x, "affine", torch.Generator().manual_seed(0))
    bent = augment(x, "affine-elastic", torch.Generator().manual_seed(0))
    assert torch.equal(bent, augment(x, "affine-elastic", torch.Generator().manual_seed(0)))  # seeded
    assert ((bent - affine).abs().flatten(1).sum(1) > 0.5).all()  # every image bent ...
    ink = bent.flatten(1).sum(1) / affine.flatten(1).sum(1)
    assert ((ink > 0.7) & (ink < 1.3)).all()  # ... not erased or smeared

    def centre(images: torch.Tensor) -> torch.Tensor:  # ink-weighted mean position, pixels
        rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        mass = images[:, 0].flatten(1).sum(1)
        return torch.stack([(images[:, 0] * g).flatten(1).sum(1) / mass for g in (rows, cols)], 1)

    # on top of the same affine map: the ink moves by under 2 pixels on average
    assert (centre(bent) - centre(affine)).norm(dim=1).max() < 2.0
