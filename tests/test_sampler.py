import subprocess
import sys

import pytest
import torch

from fewshot.data import EpisodeSampler, ImageSet


def test_shapes_and_label_ranges(small_synthetic):
    s = EpisodeSampler(small_synthetic, n_way=5, k_shot=2, q_query=3, seed=0)
    ep = s.episode(7)
    assert ep.support_x.shape == (10, 1, 28, 28) and ep.query_x.shape == (15, 1, 28, 28)
    assert ep.support_x.dtype == torch.float32
    assert float(ep.support_x.min()) >= 0.0 and float(ep.support_x.max()) <= 1.0
    assert ep.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert sorted(ep.query_y.tolist()) == sorted([0, 1, 2, 3, 4] * 3)
    assert len(set(ep.classes.tolist())) == 5


def test_batch_is_stacked_episodes(small_synthetic):
    s = EpisodeSampler(small_synthetic, n_way=4, k_shot=1, q_query=5, seed=1)
    batch = s.batch(range(10, 18))
    assert batch.support_x.shape == (8, 4, 1, 28, 28) and batch.query_y.shape == (8, 20)
    for b, i in enumerate(range(10, 18)):
        single = s.episode(i)
        assert torch.equal(batch.support_x[b], single.support_x)
        assert torch.equal(batch.query_x[b], single.query_x)
        assert torch.equal(batch.classes[b], single.classes)


def test_episode_is_pure_function_of_seed_and_index(small_synthetic):
    a = EpisodeSampler(small_synthetic, 5, 1, 5, seed=11)
    b = EpisodeSampler(small_synthetic, 5, 1, 5, seed=11)
    later = [b.episode(i) for i in reversed(range(20))][::-1]  # other order, other object
    for i in range(20):
        assert torch.equal(a.episode(i).query_x, later[i].query_x)
    other_seed = EpisodeSampler(small_synthetic, 5, 1, 5, seed=12)
    assert not torch.equal(a.episode(0).classes, other_seed.episode(0).classes)
    assert not all(torch.equal(a.episode(0).classes, a.episode(i).classes) for i in range(1, 5))


def test_labels_are_remapped_in_random_order(small_synthetic):
    s = EpisodeSampler(small_synthetic, 5, 1, 1, seed=0)
    orders = {tuple(s.episode(i).classes.argsort().tolist()) for i in range(50)}
    assert len(orders) > 10  # label 0 is not always the smallest class id


def test_support_and_query_disjoint_and_from_their_class(small_synthetic):
    s = EpisodeSampler(small_synthetic, n_way=5, k_shot=5, q_query=15, seed=2)
    for i in range(100):
        idx = s.indices(i)
        assert not set(idx.support.tolist()) & set(idx.query.tolist())
        assert len(set(idx.support.tolist()) | set(idx.query.tolist())) == 100
        off = small_synthetic.offsets
        for label, c in enumerate(idx.classes.tolist()):
            rows = torch.cat(
                [idx.support[label * 5 : label * 5 + 5], idx.query[label * 15 : label * 15 + 15]]
            )
            assert bool(((rows >= off[c]) & (rows < off[c + 1])).all())


def test_images_match_the_rows_they_come_from(small_synthetic):
    s = EpisodeSampler(small_synthetic, 3, 2, 2, seed=5)
    idx, ep = s.indices(4), s.episode(4)
    assert torch.equal(ep.support_x, small_synthetic.images[idx.support].float() / 255)
    assert torch.equal(ep.query_x, small_synthetic.images[idx.query].float() / 255)


def test_every_image_of_a_class_is_reachable(small_synthetic):
    s = EpisodeSampler(small_synthetic, n_way=5, k_shot=1, q_query=1, seed=0)
    seen: set[int] = set()
    for i in range(3000):
        idx = s.indices(i)
        seen.update(idx.support.tolist() + idx.query.tolist())
    assert seen == set(range(len(small_synthetic.images)))


def test_every_class_is_chosen_about_equally_often(small_synthetic):
    s = EpisodeSampler(small_synthetic, n_way=5, k_shot=1, q_query=1, seed=0)
    counts = torch.bincount(s.batch(range(4000)).classes.flatten(), minlength=100).float()
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()


def test_classes_of_different_sizes(small_synthetic):
    ds = ImageSet.from_classes(
        [small_synthetic.class_images(c)[: 4 + c] for c in range(6)], [f"c{c}" for c in range(6)]
    )
    s = EpisodeSampler(ds, n_way=6, k_shot=1, q_query=3, seed=0)
    seen: set[int] = set()
    for i in range(400):
        idx = s.indices(i)
        rows = torch.cat((idx.support, idx.query))
        assert len(set(rows.tolist())) == len(rows)
        seen.update(rows.tolist())
    assert seen == set(range(len(ds.images)))


def test_same_episodes_in_another_process(small_synthetic):
    code = (
        "from fewshot.data import EpisodeSampler, make_synthetic;"
        "s = EpisodeSampler(make_synthetic(num_classes=100, seed=3), 5, 1, 5, seed=9);"
        "print([s.indices(i).support.tolist() + s.indices(i).query.tolist() for i in (0, 1, 999)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    s = EpisodeSampler(small_synthetic, 5, 1, 5, seed=9)
    here = [s.indices(i).support.tolist() + s.indices(i).query.tolist() for i in (0, 1, 999)]
    assert out.strip() == str(here)


def test_stream_and_fixed_episodes(small_synthetic):
    s = EpisodeSampler(small_synthetic, 5, 1, 2, seed=0)
    stream = s.stream(batch_size=4, start=8)
    first, second = next(stream), next(stream)
    assert torch.equal(first.query_x, s.batch(range(8, 12)).query_x)
    assert torch.equal(second.query_x, s.batch(range(12, 16)).query_x)
    singles = list(s.episodes(70))
    assert len(singles) == 70 and singles[69].support_x.shape == (5, 1, 28, 28)
    assert torch.equal(singles[69].query_x, s.episode(69).query_x)
    batches = list(s.episodes(10, batch_size=4))
    assert [b.support_x.shape[0] for b in batches] == [4, 4, 2]


def test_n_way_larger_than_classes_is_a_clear_error(small_synthetic):
    with pytest.raises(ValueError, match=r"n_way=101 but the dataset has only 100 classes"):
        EpisodeSampler(small_synthetic, n_way=101, k_shot=1, q_query=1)


def test_class_with_too_few_images_is_named(small_synthetic):
    ds = ImageSet.from_classes(
        [small_synthetic.class_images(0), small_synthetic.class_images(1)[:3]], ["big", "tiny"]
    )
    with pytest.raises(ValueError, match=r"'tiny' \(3\).*lower k_shot or q_query to at most 3"):
        EpisodeSampler(ds, n_way=2, k_shot=1, q_query=5)


@pytest.mark.parametrize("kwargs", [{"n_way": 0}, {"k_shot": 0}, {"q_query": -1}, {"n_way": 2.5}])
def test_bad_sizes(small_synthetic, kwargs):
    args = {"n_way": 5, "k_shot": 1, "q_query": 1} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EpisodeSampler(small_synthetic, **args)


def test_negative_index(small_synthetic):
    with pytest.raises(ValueError, match="must be >= 0"):
        EpisodeSampler(small_synthetic, 5, 1, 1).episode(-1)


def test_within_group_episodes_draw_every_class_from_one_group(small_synthetic):
    sampler = EpisodeSampler(small_synthetic, 20, 1, 2, seed=5, within_group=True)
    chosen = set()
    for i in range(40):
        groups = {small_synthetic.groups[c] for c in sampler.indices(i).classes.tolist()}
        assert len(groups) == 1
        chosen |= groups
    assert len(chosen) > 1  # the group itself is drawn per episode
    again = EpisodeSampler(small_synthetic, 20, 1, 2, seed=5, within_group=True)
    assert torch.equal(sampler.batch(range(7)).query_x, again.batch(range(7)).query_x)
    with pytest.raises(ValueError, match="largest group has 20 classes"):
        EpisodeSampler(small_synthetic, 21, 1, 2, within_group=True)
    # classes without groups, or all in one: the option would change nothing, so it is refused
    ungrouped = ImageSet(
        small_synthetic.images,
        small_synthetic.offsets,
        small_synthetic.class_names,
        ("",) * small_synthetic.num_classes,
    )
    with pytest.raises(ValueError, match="are in no group, so it would change nothing"):
        EpisodeSampler(ungrouped, 5, 1, 2, within_group=True)
    one = small_synthetic.subset(range(20))  # the first group's 20 classes
    with pytest.raises(ValueError, match=f"the one group {one.groups[0]!r}"):
        EpisodeSampler(one, 5, 1, 2, within_group=True)
    assert EpisodeSampler(one, 5, 1, 2).n_way == 5  # without it, the same classes are fine


def test_augmented_episodes_keep_their_images_and_stay_pure(small_synthetic):
    plain = EpisodeSampler(small_synthetic, n_way=5, k_shot=2, q_query=3, seed=4)
    aug = EpisodeSampler(small_synthetic, n_way=5, k_shot=2, q_query=3, seed=4, augment="affine")
    a, p = aug.batch(range(3, 6)), plain.batch(range(3, 6))
    assert torch.equal(a.classes, p.classes) and torch.equal(a.support_y, p.support_y)
    assert not torch.allclose(a.support_x, p.support_x)
    # episode 4 is the same whichever batch it comes in
    assert torch.equal(aug.batch([4]).query_x[0], a.query_x[1])
    with pytest.raises(ValueError, match="affine"):
        EpisodeSampler(small_synthetic, 5, 1, 1, augment="rotate")
