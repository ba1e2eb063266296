"""Within-class whitening: the matrix by its definition, the backbone wrapper around it, and the
per-episode matrix that pools known classes' covariance with the support set's."""

import pytest
import torch

from fewshot import ProtoNet, SupportWhitening, Whitened, build_model
from fewshot.learners.protonet import prototypes, refined_prototypes, refined_with_whitening
from fewshot.models import whiten_by_own_spread, within_class_covariance, within_class_whitening


def _classes(n_classes=30, per_class=40, seed=0):
    """Features whose within-class spread differs by direction (scales 0.1 to 3), around
    class means spread out much further."""
    g = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    spread = torch.tensor([3.0, 1.0, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    means = 10 * torch.randn(n_classes, 6, generator=g, dtype=torch.float64)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = (torch.randn(len(labels), 6, generator=g, dtype=torch.float64) * spread) @ rotation.T
    return means[labels] + noise, labels


def _within_covariance(features, labels):
    residuals = torch.cat([features[labels == c] - features[labels == c].mean(0) for c in labels.unique()])
    return residuals.T @ residuals / (len(features) - len(labels.unique()))


def test_whitening_makes_the_within_class_covariance_the_identity():
    features, labels = _classes()
    matrix = within_class_whitening(features, labels, shrink=1e-9)
    torch.testing.assert_close(matrix, matrix.T)
    whitened = _within_covariance(features @ matrix, labels)
    torch.testing.assert_close(whitened, torch.eye(6, dtype=torch.float64), atol=1e-6, rtol=0)
    # the labels' values and order do not matter, only which features share one
    shuffled = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    same = within_class_whitening(features[shuffled], 7 * labels[shuffled] + 3, shrink=1e-9)
    torch.testing.assert_close(same, matrix)


def test_shrinkage_pulls_towards_a_multiple_of_the_identity():
    features, labels = _classes()
    covariance = _within_covariance(features, labels)
    mean_variance = torch.linalg.eigvalsh(covariance).mean()
    shrink = 0.5
    expected = torch.linalg.inv(
        torch.linalg.cholesky(covariance + shrink * mean_variance * torch.eye(6, dtype=torch.float64))
    )  # any inverse square root R satisfies R^T R = (S + aI)^-1
    matrix = within_class_whitening(features, labels, shrink)
    torch.testing.assert_close(matrix @ matrix, expected.T @ expected)
    # shrunk far, the matrix is nearly the identity divided by the square root of that scale
    far = within_class_whitening(features, labels, 1e6)
    torch.testing.assert_close(
        far * (1e6 * mean_variance).sqrt(), torch.eye(6, dtype=torch.float64), atol=1e-5, rtol=0
    )
    # in float32 it comes back in float32
    assert within_class_whitening(features.float(), labels, shrink).dtype == torch.float32


def test_whitening_refuses_what_it_cannot_estimate():
    features, labels = _classes(n_classes=3, per_class=1)
    with pytest.raises(ValueError, match="leave no within-class variance"):
        within_class_whitening(features, labels, 1.0)
    with pytest.raises(ValueError, match="shrink must be > 0, got 0"):
        within_class_whitening(*_classes(), 0)


def test_whitened_backbone_multiplies_its_features_by_the_matrix():
    backbone = build_model("conv4", 5).backbone.eval()
    matrix = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    images = torch.rand(3, 1, 28, 28)
    whitened = Whitened(backbone, matrix)
    assert whitened.feature_dim == 64 and "matrix" in whitened.state_dict()
    torch.testing.assert_close(whitened(images), backbone(images) @ matrix)
    with pytest.raises(ValueError, match="a 64-feature backbone needs a 64x64 matrix, got \\(32, 32\\)"):
        Whitened(backbone, torch.eye(32))


def _scatter(features, labels):
    """Sum of outer products of the features less their class means, class by class."""
    residuals = torch.cat([features[labels == c] - features[labels == c].mean(0) for c in labels.unique()])
    return residuals.T @ residuals


def test_within_class_covariance_is_the_pooled_one():
    features, labels = _classes()
    torch.testing.assert_close(
        within_class_covariance(features, labels), _within_covariance(features, labels)
    )
    torch.testing.assert_close(
        within_class_covariance(features.float(), 5 * labels), _within_covariance(features, labels)
    )


def test_support_whitening_pools_the_prior_with_each_support_set():
    features, labels = _classes()
    covariance = within_class_covariance(features, labels)
    shrink, prior = 0.5, 12.0
    whitening = SupportWhitening(covariance, shrink, prior)
    shrunk = covariance + shrink * torch.linalg.eigvalsh(covariance).mean() * torch.eye(
        6, dtype=torch.float64
    )
    # two episodes of 3 classes with 4 images each: by hand, one at a time
    support, support_labels = _classes(n_classes=3, per_class=4, seed=1)
    other, _ = _classes(n_classes=3, per_class=4, seed=2)
    batch = torch.stack((support, other))
    matrices = whitening(batch, torch.stack((support_labels, support_labels)), n_way=3)
    assert matrices.shape == (2, 6, 6)
    for episode, matrix in zip(batch, matrices, strict=True):
        pooled = (_scatter(episode, support_labels) + prior * shrunk) / (12 - 3 + prior)
        torch.testing.assert_close(matrix, matrix.T)
        torch.testing.assert_close(matrix @ pooled @ matrix, torch.eye(6, dtype=torch.float64))
    assert not torch.allclose(matrices[0], matrices[1])  # each episode its own
    # one image a class adds nothing: the known classes' matrix with the same shrinkage
    one_shot = whitening(support[::4].float(), support_labels[::4], n_way=3)
    assert one_shot.dtype == torch.float32
    torch.testing.assert_close(one_shot, within_class_whitening(features, labels, shrink).float())
    # a prior worth little leaves the support set's own spread
    alone = SupportWhitening(covariance, shrink, 1e-9)(support, support_labels, n_way=3)
    torch.testing.assert_close(
        alone @ alone, torch.linalg.inv(_scatter(support, support_labels) / 9), rtol=1e-5, atol=0
    )
    for bad in ((0.0, 1.0), (1.0, 0.0)):
        with pytest.raises(ValueError, match="shrink and prior must be > 0"):
            SupportWhitening(covariance, *bad)
    with pytest.raises(ValueError, match="covariance must be a square \\[D, D\\] matrix .*got \\(6, 5\\)"):
        SupportWhitening(covariance[:, :5], shrink, prior)
    with pytest.raises(ValueError, match="5-dimensional support features against a 6x6 covariance"):
        whitening(support[:, :5], support_labels, n_way=3)


def test_protonet_whitens_each_episode_with_its_own_matrix():
    backbone = build_model("conv4", 5).backbone.eval()
    g = torch.Generator().manual_seed(0)
    support_x, query_x = torch.rand(2, 6, 1, 28, 28, generator=g), torch.rand(2, 5, 1, 28, 28, generator=g)
    support_y = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, 6)
    base = torch.randn(100, 64, generator=g, dtype=torch.float64)
    whitening = SupportWhitening(within_class_covariance(base, torch.arange(100) % 10), 1.0, 30.0)
    proto = ProtoNet(backbone, whitening=whitening).eval()
    logits = proto.adapt_batch(support_x, support_y)(query_x)
    with torch.no_grad():
        for i in range(2):
            support, queries = backbone(support_x[i]), backbone(query_x[i])
            matrix = whitening(support, support_y[i], 3)
            centres = torch.stack([(support @ matrix)[support_y[i] == c].mean(0) for c in range(3)])
            expected = -torch.cdist(queries @ matrix, centres).pow(2)
            torch.testing.assert_close(logits[i], expected, atol=1e-3, rtol=1e-4)
    plain = ProtoNet(backbone).eval().adapt_batch(support_x, support_y)(query_x)
    assert not torch.allclose(plain, logits)
    # refined with the queries, class means and matrix together (transductive)
    refining = ProtoNet(backbone, refine_steps=2, whitening=whitening, refine_whitening=True).eval()
    refined = refining.adapt_batch(support_x, support_y)(query_x)
    with torch.no_grad():
        for i in range(2):
            support, queries = backbone(support_x[i]), backbone(query_x[i])
            centres, matrix = refined_with_whitening(support, support_y[i], queries, 3, 2, whitening)
            expected = -torch.cdist(queries @ matrix, centres @ matrix).pow(2)
            torch.testing.assert_close(refined[i], expected, atol=1e-3, rtol=1e-4)


def test_whitening_refined_with_the_queries():
    features, labels = _classes()
    whitening = SupportWhitening(within_class_covariance(features, labels), 0.5, 12.0)
    support, support_labels = _classes(n_classes=3, per_class=2, seed=1)
    queries, query_labels = _classes(n_classes=3, per_class=5, seed=1)
    # queries counted with their true classes, about the means of all images: the support set's
    # whitening of all of them, labelled
    together = torch.cat((support, queries)), torch.cat((support_labels, query_labels))
    means = torch.stack([together[0][together[1] == c].mean(0) for c in range(3)])
    one_hot = torch.nn.functional.one_hot(query_labels, 3).double()
    torch.testing.assert_close(
        whitening.with_queries(support, support_labels, means, queries, one_hot),
        whitening(*together, n_way=3),
    )
    # a prior worth everything: the refinement of session 26 on features whitened by the support set
    rigid = SupportWhitening(within_class_covariance(features, labels), 0.5, 1e12)
    centres, matrix = refined_with_whitening(support, support_labels, queries, 3, 3, rigid)
    fixed = rigid(support, support_labels, 3)
    torch.testing.assert_close(matrix, fixed)
    torch.testing.assert_close(
        centres @ matrix, refined_prototypes(support @ fixed, support_labels, queries @ fixed, 3, 3)
    )
    # otherwise the queries move the matrix too; no rounds: class means and the support set's matrix
    centres, matrix = refined_with_whitening(support, support_labels, queries, 3, 3, whitening)
    assert not torch.allclose(matrix, whitening(support, support_labels, 3))
    start = refined_with_whitening(support, support_labels, queries, 3, 0, whitening)
    torch.testing.assert_close(start[1], whitening(support, support_labels, 3))
    torch.testing.assert_close(start[0], prototypes(support, support_labels, 3))
    with pytest.raises(ValueError, match="refine_whitening re-estimates a support whitening while refining"):
        ProtoNet(build_model("conv4", 5).backbone, refine_steps=0, whitening=whitening, refine_whitening=True)


def test_whitening_by_own_spread_gives_mahalanobis_distances_and_a_finite_gradient():
    """Squared distances between the whitened features are (x - y)^T C^-1 (x - y) for the features'
    own shrunk within-class covariance C; with almost no shrinkage that spread becomes the identity;
    the gradient matches finite differences."""
    features, labels = _classes(n_classes=8, per_class=5)
    shrink = 0.5
    covariance = _within_covariance(features, labels)
    shrunk = covariance + shrink * torch.linalg.eigvalsh(covariance).mean() * torch.eye(
        6, dtype=torch.float64
    )
    whitened, own = whiten_by_own_spread(features, labels, 8, shrink)
    torch.testing.assert_close(own, covariance)
    diff = features[:, None] - features[None]
    mahalanobis = torch.einsum("ijd,de,ije->ij", diff, torch.linalg.inv(shrunk), diff)
    torch.testing.assert_close(torch.cdist(whitened, whitened).pow(2), mahalanobis)
    full = whiten_by_own_spread(features, labels, 8, 1e-9)[0]
    torch.testing.assert_close(
        _within_covariance(full, labels), torch.eye(6, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert whiten_by_own_spread(features.bfloat16(), labels, 8, shrink)[0].dtype == torch.float32
    small = features[:16].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: whiten_by_own_spread(x, labels[:16] % 4, 4, shrink)[0], (small,)
    )
    with pytest.raises(ValueError, match="shrink must be > 0"):
        whiten_by_own_spread(features, labels, 8, 0.0)
    with pytest.raises(ValueError, match="leave no within-class variance"):
        whiten_by_own_spread(features[:3], torch.arange(3), 3, shrink)


def test_grouped_support_whitening_whitens_each_group_alone_and_weighs_it():
    features, labels = _classes()
    covariance = within_class_covariance(features, labels)
    support, support_labels = _classes(n_classes=3, per_class=4, seed=1)
    shrink, prior = 0.5, 12.0
    grouped = SupportWhitening(covariance, shrink, prior, groups=[(4, 1.0), (2, 0.25)])
    matrix = grouped(support, support_labels, n_way=3)
    # by hand: each group's own whitening from its own block of the covariance, the second halved
    first = SupportWhitening(covariance[:4, :4], shrink, prior)(support[:, :4], support_labels, n_way=3)
    second = SupportWhitening(covariance[4:, 4:], shrink, prior)(support[:, 4:], support_labels, n_way=3)
    torch.testing.assert_close(matrix, torch.block_diag(first, 0.5 * second))
    # so a squared distance is the first group's plus a quarter of the second's
    a, b = features[:5], features[5:10]
    d = ((a - b) @ matrix).pow(2).sum(1)
    parts = ((slice(4), first), (slice(4, 6), second))
    own = [((a[:, cols] - b[:, cols]) @ m).pow(2).sum(1) for cols, m in parts]
    by_group = own[0] + 0.25 * own[1]
    torch.testing.assert_close(d, by_group)
    # one group of weight 1 is the whitening without groups
    whole = SupportWhitening(covariance, shrink, prior, groups=[(6, 1.0)])
    plain = SupportWhitening(covariance, shrink, prior)
    torch.testing.assert_close(whole(support, support_labels, 3), plain(support, support_labels, 3))
    # refined with the queries, the groups stay apart too
    centres = prototypes(support, support_labels, 3)
    weights = torch.full((5, 3), 1 / 3, dtype=torch.float64)
    refined = grouped.with_queries(support, support_labels, centres, features[:5], weights)
    assert torch.count_nonzero(refined[:4, 4:]) == 0 and torch.count_nonzero(refined[4:, :4]) == 0
    for bad in ([(4, 1.0), (3, 1.0)], [(6, 0.0)], [(0, 1.0), (6, 1.0)]):
        with pytest.raises(ValueError, match="groups must split the 6 features into runs of at least one"):
            SupportWhitening(covariance, shrink, prior, groups=bad)
