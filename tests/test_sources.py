import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot.data import EpisodeSampler, ImageReadError, load_image_folder, load_omniglot, make_synthetic


def _png(size=(30, 20), mode="RGB", color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def _write_folder(root, grouped=False):
    """Two or three classes of mixed PNG/JPEG, sizes and colour modes."""
    layout = {"cat": 3, "dog": 2, "owl": 4}
    for i, (name, n) in enumerate(layout.items()):
        folder = root / ("birds" if grouped and name == "owl" else "mammals" if grouped else "") / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(n):
            img = Image.new(
                "RGB" if j % 2 else "L", (20 + 7 * j, 31 - 3 * j), (40 * i, 10 * j, 5) if j % 2 else 60 * i
            )
            img.save(folder / f"{j}.{'png' if j % 2 else 'jpg'}")


def test_image_folder_mixed_sizes_modes_and_formats(tmp_path):
    _write_folder(tmp_path)
    ds = load_image_folder(tmp_path, image_size=16, channels=3)
    assert ds.class_names == ("cat", "dog", "owl") and ds.counts.tolist() == [3, 2, 4]
    assert ds.images.shape == (9, 3, 16, 16) and ds.images.dtype == torch.uint8
    gray = load_image_folder(tmp_path, image_size=12, channels=1)
    assert gray.images.shape == (9, 1, 12, 12)
    EpisodeSampler(ds, n_way=3, k_shot=1, q_query=1).episode(0)


def test_image_folder_with_groups(tmp_path):
    _write_folder(tmp_path, grouped=True)
    ds = load_image_folder(tmp_path, image_size=8)
    assert ds.class_names == ("birds/owl", "mammals/cat", "mammals/dog")
    assert ds.groups == ("birds", "mammals", "mammals")


def test_corrupt_image_is_named_or_skipped(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match=r"dog/broken\.png"):
        load_image_folder(tmp_path, image_size=8)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*broken\.png"):
        ds = load_image_folder(tmp_path, image_size=8, on_error="skip")
    assert ds.counts.tolist() == [3, 2, 4]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no class folders"):
        load_image_folder(tmp_path)
    _write_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class"):
        load_image_folder(tmp_path)


def _fake_omniglot_zip(path, alphabets=("Alpha", "Beta"), chars=3, drawings=4):
    """A zip in Omniglot's layout: 1-bit-like black ink on white paper, 105x105."""
    with zipfile.ZipFile(path, "w") as z:
        for a in alphabets:
            for c in range(1, chars + 1):
                for d in range(1, drawings + 1):
                    img = np.full((105, 105), 255, np.uint8)
                    img[20 + 5 * c : 40 + 5 * c, 30 : 35 + 10 * d] = 0  # an ink bar
                    buf = io.BytesIO()
                    Image.fromarray(img).convert("1").save(buf, format="PNG")
                    z.writestr(f"images_background/{a}/character{c:02d}/{c:04d}_{d:02d}.png", buf.getvalue())


def test_omniglot_from_zip_and_folder_agree(tmp_path):
    _fake_omniglot_zip(tmp_path / "omni.zip")
    ds = load_omniglot(tmp_path / "omni.zip")
    assert ds.num_classes == 6 and ds.group_names == ["Alpha", "Beta"]
    assert ds.class_names[0] == "Alpha/character01" and ds.images.shape == (24, 1, 28, 28)
    img = ds.images[0, 0]
    assert img[0, 0] == 0 and img.max() == 255  # background 0, strokes bright
    zipfile.ZipFile(tmp_path / "omni.zip").extractall(tmp_path / "extracted")
    assert torch.equal(load_omniglot(tmp_path / "extracted").images, ds.images)


def test_omniglot_zip_is_decoded_once_per_process_until_it_changes(tmp_path):
    _fake_omniglot_zip(tmp_path / "omni.zip")
    first = load_omniglot(tmp_path / "omni.zip")
    assert load_omniglot(str(tmp_path / "omni.zip")) is first  # the same zip: not decoded again
    assert load_omniglot(tmp_path / "omni.zip", image_size=14).images.shape[-1] == 14
    _fake_omniglot_zip(tmp_path / "omni.zip", alphabets=("Alpha", "Beta", "Gamma"))  # replaced
    assert load_omniglot(tmp_path / "omni.zip").num_classes == 9
    zipfile.ZipFile(tmp_path / "omni.zip").extractall(tmp_path / "extracted")
    folder = load_omniglot(tmp_path / "extracted")  # a folder is read each time
    assert load_omniglot(tmp_path / "extracted") is not folder


def test_omniglot_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="images_background"):
        load_omniglot(tmp_path / "missing.zip")
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        load_omniglot(tmp_path / "x.zip")
    _fake_omniglot_zip(tmp_path / "a.zip")
    with pytest.raises(ValueError, match="more than one source"):
        load_omniglot(tmp_path / "a.zip", tmp_path / "a.zip")


def test_real_omniglot_small1(omniglot_zip):
    ds = load_omniglot(omniglot_zip("images_background_small1.zip"))
    assert len(ds.group_names) == 5 and ds.num_classes == 136
    assert (ds.counts == 20).all() and ds.images.shape[1:] == (1, 28, 28)
    assert float(ds.images.float().mean()) < 60  # mostly background (0), strokes bright


def test_real_omniglot_small2_shares_greek_and_latin_with_small1(omniglot_zip):
    """A fact of the data that any 'novel classes' protocol must respect."""
    s1 = load_omniglot(omniglot_zip("images_background_small1.zip"))
    s2 = load_omniglot(omniglot_zip("images_background_small2.zip"))
    assert s2.num_classes == 156 and len(s2.group_names) == 5
    shared = set(s1.group_names) & set(s2.group_names)
    assert shared == {"Greek", "Latin"}
    same = [n for n in s2.class_names if n.split("/")[0] in shared]
    assert len(same) == 50 and torch.equal(s1.subset(same).images, s2.subset(same).images)
    assert s2.num_classes - len(same) == 106  # characters truly unseen in small1


def test_synthetic_is_deterministic_and_sized():
    a = make_synthetic()
    assert a.num_classes >= 1000 and (a.counts == 20).all() and a.image_shape == (1, 28, 28)
    b = make_synthetic.__wrapped__()  # bypass the per-process cache
    assert torch.equal(a.images, b.images)
    assert not torch.equal(
        make_synthetic(num_classes=20, seed=1).images, make_synthetic(num_classes=20).images
    )


def test_synthetic_drawings_vary_within_a_class_and_classes_differ():
    ds = make_synthetic(num_classes=40)
    x = ds.images.float().flatten(1) / 255
    same = (x[0] - x[1]).abs().sum()
    assert same > 5  # two drawings of one character are not copies
    # nearest-neighbour on pixels: well above chance, well below perfect
    s = EpisodeSampler(ds, n_way=5, k_shot=1, q_query=5, seed=0)
    acc = []
    for ep in s.episodes(200):
        d = torch.cdist(ep.query_x.flatten(1), ep.support_x.flatten(1))
        acc.append((ep.support_y[d.argmin(1)] == ep.query_y).float().mean())
    assert 0.3 < float(torch.stack(acc).mean()) < 0.8  # measured 0.44; chance is 0.2


def test_one_shot_fine_tuning_from_scratch_is_far_from_perfect():
    """A randomly initialized conv net fine-tuned on one shot must not solve the data."""
    torch.manual_seed(0)
    s = EpisodeSampler(make_synthetic(), n_way=5, k_shot=1, q_query=10, seed=0)
    accs = []
    for ep in s.episodes(20):
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(32 * 49, 5),
        )
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(ep.support_x), ep.support_y).backward()
            opt.step()
        accs.append((net(ep.query_x).argmax(1) == ep.query_y).float().mean())
    acc = float(torch.stack(accs).mean())
    assert 0.3 < acc < 0.8, acc  # measured 0.63; chance is 0.2
