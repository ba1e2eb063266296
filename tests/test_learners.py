"""Correctness of the learners: parity with learn2learn and higher, finite differences,
vmap against loop, Reptile's formula, BatchNorm statistics, and the interface."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot import (
    ANIL,
    MAML,
    BlockFeatures,
    FineTune,
    MetaSGD,
    ProtoNet,
    Reptile,
    SimpleShot,
    ViewAveraged,
    build_model,
)
from fewshot.data import Episode, EpisodeSampler
from fewshot.learners import features as features_module
from fewshot.learners.features import embed
from fewshot.learners.functional import SupportStatistics, distillation_loss, forward
from fewshot.learners.protonet import negative_squared_distances, prototypes, refined_prototypes
from fewshot.learners.reptile import step_minibatches
from fewshot.models import Conv4, build_backbone, channels_last
from fewshot.models.backbones import conv_block

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    l2l = pytest.importorskip("learn2learn", reason="install with scripts/install_learn2learn.sh")
    higher = pytest.importorskip("higher")


def _double_batch(data, tasks=1, n=5, k=1, q=3):
    b = EpisodeSampler(data, n, k, q, seed=0).batch(range(tasks))
    return Episode(b.support_x.double(), b.support_y, b.query_x.double(), b.query_y, b.classes)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _conv4_double():
    torch.manual_seed(0)
    return build_model("conv4", 5).double()


def _ours(batch, steps, first_order, strategy="loop"):
    model = _conv4_double()
    loss, _ = MAML(
        model, inner_lr=0.1, inner_steps=steps, first_order=first_order, strategy=strategy
    ).meta_loss(batch)
    loss.backward()
    return _grads(model)


def _learn2learn(batch, steps, first_order):
    model = _conv4_double()
    maml = l2l.algorithms.MAML(model, lr=0.1, first_order=first_order)
    total = 0.0
    for i in range(len(batch.support_x)):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(batch.support_x[i]), batch.support_y[i]))
        total = total + F.cross_entropy(learner(batch.query_x[i]), batch.query_y[i])
    (total / len(batch.support_x)).backward()
    return _grads(model)


def _higher(batch, steps, first_order):
    model = _conv4_double()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(len(batch.support_x)):
        with higher.innerloop_ctx(
            model, inner, copy_initial_weights=False, track_higher_grads=not first_order
        ) as (
            fmodel,
            diffopt,
        ):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(batch.support_x[i]), batch.support_y[i]))
            loss = F.cross_entropy(fmodel(batch.query_x[i]), batch.query_y[i]) / len(batch.support_x)
            if first_order:  # FOMAML: the query gradient at the adapted weights, applied to the init
                grads = torch.autograd.grad(loss, fmodel.parameters())
                for p, g in zip(model.parameters(), grads, strict=True):
                    p.grad = g if p.grad is None else p.grad + g
            else:
                loss.backward()
    return _grads(model)


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_learn2learn_and_higher(small_synthetic, steps, first_order):
    batch = _double_batch(small_synthetic)
    ours = _ours(batch, steps, first_order)
    assert _rel(ours, _learn2learn(batch, steps, first_order)) < 1e-4
    assert _rel(ours, _higher(batch, steps, first_order)) < 1e-4
    assert _rel(ours, _ours(batch, steps, not first_order)) > 1e-3  # the two orders differ


@pytest.mark.parametrize(
    "cls, head",
    [(MAML, {}), (ANIL, {}), (MetaSGD, {}), (MAML, {"proto_head": True}), (ANIL, {"proto_head": True})]
    + [(MAML, {"zero_head": True})],
)
def test_vmap_equals_loop(small_synthetic, cls, head):
    batch = _double_batch(small_synthetic, tasks=2)
    grads = {}
    for strategy in ("loop", "vmap"):
        torch.manual_seed(0)
        model = build_model("conv4", 5).double()
        learner = cls(model, inner_lr=0.1, inner_steps=2, strategy=strategy, **head)
        loss, _ = learner.meta_loss(batch)
        loss.backward()
        grads[strategy] = torch.cat([p.grad.flatten() for p in learner.parameters() if p.grad is not None])
    assert _rel(grads["vmap"], grads["loop"]) < 1e-8


@pytest.mark.parametrize(
    "make",
    [
        lambda model: MAML(model, test_steps=0, proto_head=True),
        lambda model: Reptile(model, inner_steps=1, test_steps=0, proto_head=True),
    ],
    ids=["maml", "reptile"],
)
def test_proto_head_starts_from_protonet(small_synthetic, make):
    """Before any inner step a learner with the class-mean head predicts as ProtoNet, at any
    number of ways (a 5-way model on a 3-way episode)."""
    torch.manual_seed(0)
    model = build_model("conv4", 5).double()
    ep = _double_batch(small_synthetic, n=3, k=2, q=3)
    sx, sy, qx = ep.support_x[0], ep.support_y[0], ep.query_x[0]
    params = dict(model.backbone.named_parameters())
    centres = torch.stack([forward(model.backbone, params, sx)[sy == c].mean(0) for c in range(3)])
    expected = -torch.cdist(forward(model.backbone, params, qx), centres).pow(2)
    start = make(model).adapt(sx, sy)(qx)
    assert torch.allclose(start.log_softmax(-1), expected.log_softmax(-1), atol=1e-10)
    assert not torch.allclose(start, expected)  # the logits themselves differ by |h|^2 per image


def test_refined_prototypes_follow_the_queries():
    """Soft k-means from the class means: no round changes nothing, one round is its formula, and
    an atypical support image no longer decides a cluster of queries."""
    support, labels = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1])
    queries = torch.tensor([[1.2, 0.1], [1.2, -0.1], [4.0, 0.1], [4.0, -0.1]])  # classes 0, 0, 1, 1
    torch.testing.assert_close(refined_prototypes(support, labels, queries, 2, 0), support)
    weights = negative_squared_distances(queries, support).softmax(-1)
    expected = torch.stack(
        [(support[c] + (weights[:, c, None] * queries).sum(0)) / (1 + weights[:, c].sum()) for c in range(2)]
    )
    refined = refined_prototypes(support, labels, queries, 2, 1)
    torch.testing.assert_close(refined, expected)
    assert negative_squared_distances(queries, support).argmax(-1).tolist() == [1, 1, 1, 1]
    assert negative_squared_distances(queries, refined).argmax(-1).tolist() == [0, 0, 1, 1]
    batched = refined_prototypes(support.expand(3, 2, 2), labels.expand(3, 2), queries.expand(3, 4, 2), 2, 1)
    torch.testing.assert_close(batched, refined.expand(3, 2, 2))


def test_zero_head_first_step_is_a_class_mean_head(small_synthetic):
    """From a zero head one inner step leaves the backbone and makes row k of a 3-way head
    (a 5-way model on a 3-way episode) ``lr / M * sum_i (y_ik - 1/3) h_i``: class means,
    centred, with a zero bias."""
    torch.manual_seed(0)
    model = build_model("conv4", 5).double()
    ep = _double_batch(small_synthetic, n=3, k=2, q=3)
    sx, sy, qx = ep.support_x[0], ep.support_y[0], ep.query_x[0]
    params = dict(model.backbone.named_parameters())
    h = forward(model.backbone, params, sx)
    rows = 0.3 / len(sy) * (F.one_hot(sy, 3).double() - 1 / 3).T @ h
    expected = forward(model.backbone, params, qx) @ rows.T
    adapted = MAML(model, inner_lr=0.3, test_steps=1, zero_head=True).adapt(sx, sy)(qx)
    torch.testing.assert_close(adapted, expected)
    assert not torch.allclose(MAML(model, inner_lr=0.3, test_steps=1).adapt(sx, sy)(qx), expected)
    with pytest.raises(ValueError, match="pick one"):
        MAML(model, proto_head=True, zero_head=True)


@pytest.mark.parametrize("head", ["proto_head", "zero_head"])
def test_meta_gradient_reaches_the_backbone_only_with_a_head_made_per_task(small_synthetic, head):
    """With the class-mean head (Proto-MAML) or a zero head, the meta-gradient reaches the
    backbone, and the model's own head is never used."""
    torch.manual_seed(0)
    model = build_model("conv4", 5).double()
    batch = _double_batch(small_synthetic, tasks=2)
    MAML(model, inner_lr=0.1, inner_steps=2, **{head: True}).meta_loss(batch)[0].backward()
    assert model.head.weight.grad is None and model.head.bias.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_second_order_term_by_finite_differences():
    """d/dtheta of L_q(theta - a * grad L_s(theta)), against central differences."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    model.backbone = None  # not a Classifier: only MAML's functional core is exercised
    sx, qx = torch.randn(9, 4, dtype=torch.float64), torch.randn(12, 4, dtype=torch.float64)
    sy, qy = torch.arange(3).repeat(3), torch.arange(3).repeat(4)
    ep = Episode(sx[None], sy[None], qx[None], qy[None], torch.arange(3)[None])
    maml = MAML(model, inner_lr=0.5, inner_steps=2)
    loss, _ = maml.meta_loss(ep)
    loss.backward()
    analytic = torch.cat([p.grad.flatten() for p in model.parameters()])

    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def objective(vector):
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = vector[i : i + s.numel()].view(s).clone().requires_grad_()
            i += s.numel()
        with torch.enable_grad():
            for _ in range(2):
                grads = torch.autograd.grad(
                    F.cross_entropy(forward(model, params, sx), sy), list(params.values())
                )
                params = {n: p - 0.5 * g for (n, p), g in zip(params.items(), grads, strict=True)}
        return F.cross_entropy(forward(model, params, qx), qy).item()

    eps = 1e-6
    for d in range(5):
        direction = torch.randn(flat.shape, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
        numeric = (objective(flat + eps * direction) - objective(flat - eps * direction)) / (2 * eps)
        assert abs(numeric - float(analytic @ direction)) < 1e-6 * max(1.0, abs(numeric))
    # and the first-order approximation is measurably different, so the test can fail
    model.zero_grad()
    MAML(model, inner_lr=0.5, inner_steps=2, first_order=True).meta_loss(ep)[0].backward()
    fo = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert _rel(fo, analytic) > 1e-3


def test_reptile_update_equals_its_formula(small_synthetic):
    torch.manual_seed(0)
    model = build_model("conv4", 5)
    reptile = Reptile(model, inner_lr=0.05, inner_steps=3, inner_optimizer="sgd")
    batch = EpisodeSampler(small_synthetic, 5, 2, 2, seed=0).batch(range(3))
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    phis = []
    for i in range(3):  # the task training, done by hand with an ordinary module
        net = build_model("conv4", 5)
        net.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        for _ in range(3):
            opt.zero_grad()
            with torch.no_grad():
                for m in net.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.track_running_stats = False
            F.cross_entropy(net(channels_last(batch.support_x[i])), batch.support_y[i]).backward()
            opt.step()
        phis.append({n: p.detach() for n, p in net.named_parameters()})
    outer = torch.optim.SGD(model.parameters(), lr=0.7)
    loss, _ = reptile.meta_loss(batch)
    loss.backward()
    outer.step()
    for n, p in model.named_parameters():
        expected = theta[n] + 0.7 * (sum(phi[n] for phi in phis) / 3 - theta[n])
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "head, step_shots", [("proto_head", None), ("zero_head", None), ("zero_head", 1), ("proto_head", 1)]
)
def test_reptile_task_head_update_equals_its_formula(small_synthetic, head, step_shots):
    """With a head made per task (class means or zero) the Reptile update is its formula for
    the backbone and the head is never meta-updated; with ``step_shots=1`` on 2-shot tasks,
    inner step t trains on image t mod 2 of every class."""
    torch.manual_seed(0)
    model = build_model("conv4", 5).double()
    batch = _double_batch(small_synthetic, tasks=3, k=2)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    phis = []
    for i in range(3):  # by hand: an ordinary module whose head is set to the class means or zero
        net = build_model("conv4", 5).double()
        net.load_state_dict(model.state_dict())
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.track_running_stats = False
        sx, sy = batch.support_x[i], batch.support_y[i]
        with torch.no_grad():
            c = prototypes(net.backbone(sx), sy, 5)
            net.head.weight.copy_(2 * c if head == "proto_head" else torch.zeros_like(c))
            net.head.bias.copy_(-c.pow(2).sum(-1) if head == "proto_head" else torch.zeros(5))
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        for t in range(3):
            if step_shots is None:
                x, y = sx, sy
            else:
                idx = torch.stack([torch.nonzero(sy == k).flatten()[t % 2] for k in range(5)])
                x, y = sx[idx], sy[idx]
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        phis.append({n: p.detach() for n, p in net.named_parameters()})
    reptile = Reptile(
        model, inner_lr=0.05, inner_steps=3, inner_optimizer="sgd", step_shots=step_shots, **{head: True}
    )
    reptile.meta_loss(batch)[0].backward()
    assert model.head.weight.grad is None and model.head.bias.grad is None
    torch.optim.SGD(model.parameters(), lr=0.7).step()
    for n, p in model.named_parameters():
        moved = n.startswith("backbone.")
        target = theta[n] + 0.7 * (sum(phi[n] for phi in phis) / 3 - theta[n]) if moved else theta[n]
        torch.testing.assert_close(p.detach(), target, rtol=1e-9, atol=1e-10)
    assert any(not torch.equal(p.detach(), theta[n]) for n, p in model.named_parameters() if "backbone." in n)


def test_reptile_minibatches_change_the_update_but_not_adaptation(small_synthetic):
    """``step_shots`` changes what meta-training does, not how a task is adapted to."""
    torch.manual_seed(0)
    model = build_model("conv4", 5).double()
    batch = _double_batch(small_synthetic, tasks=2, k=2)
    learners = [Reptile(model, inner_lr=0.05, inner_steps=2, zero_head=True, step_shots=s) for s in (None, 1)]
    losses = [learner.meta_loss(batch)[0] for learner in learners]
    assert not torch.allclose(losses[0], losses[1])
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    torch.testing.assert_close(learners[0].adapt(sx, sy)(qx), learners[1].adapt(sx, sy)(qx), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pick one"):
        Reptile(model, proto_head=True, zero_head=True)
    with pytest.raises(ValueError, match="step_shots must be >= 1"):
        Reptile(model, step_shots=0)


def test_reptile_zero_head_adapts_as_maml_zero_head(small_synthetic):
    """Reptile's adaptation from a zero head (steps of torch.optim.SGD) is MAML's (the same SGD
    steps in the functional core): a MAML run with a zero head that is not meta-trained is the
    not-meta-trained control of a Reptile run with one."""
    torch.manual_seed(0)
    model = build_model("conv4", 5).double()
    ep = _double_batch(small_synthetic, n=3, k=2, q=3)  # also at other ways than the head
    sx, sy, qx = ep.support_x[0], ep.support_y[0], ep.query_x[0]
    reptile = Reptile(model, 0.2, 2, "sgd", test_steps=4, zero_head=True, step_shots=1)
    maml = MAML(model, inner_lr=0.2, test_steps=4, zero_head=True)
    torch.testing.assert_close(reptile.adapt(sx, sy)(qx), maml.adapt(sx, sy)(qx), rtol=1e-9, atol=1e-9)


def test_step_minibatches_take_successive_shots_of_every_class():
    y = torch.tensor([2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1, 2])  # 3 classes, 4 shots each, shuffled
    batches = step_minibatches(y, steps=4, shots=2)
    for t, idx in enumerate(batches):
        assert sorted(y[idx].tolist()) == [0, 0, 1, 1, 2, 2]
        for c in range(3):
            own = torch.nonzero(y == c).flatten()
            assert idx[y[idx] == c].tolist() == own[[(2 * t) % 4, (2 * t + 1) % 4]].tolist()
    assert sorted(torch.cat(batches[:2]).tolist()) == list(range(12))  # two steps: every image once
    with pytest.raises(ValueError, match="step_shots=5 but a class has only 4 support images"):
        step_minibatches(y, steps=1, shots=5)


def test_reptile_proto_head_meta_trains_at_other_ways_than_the_head(small_synthetic):
    """With ``proto_head`` the task's head comes from its class means, so a 3-way model
    meta-trains on 5-way tasks: only the backbone gets a Reptile direction."""
    torch.manual_seed(0)
    model = build_model("conv4", 3)
    batch = EpisodeSampler(small_synthetic, 5, 2, 2, seed=0).batch(range(2))  # 2 shots: a support loss
    Reptile(model, inner_lr=0.05, inner_steps=1, inner_optimizer="sgd", proto_head=True).meta_loss(batch)[
        0
    ].backward()
    assert model.head.weight.grad is None and model.backbone.blocks[0][0].weight.grad.abs().sum() > 0


def test_reptile_adapts_with_its_test_steps_and_lr(small_synthetic):
    torch.manual_seed(0)
    model = build_model("conv4", 5)
    ep = EpisodeSampler(small_synthetic, 5, 2, 3, seed=0).episode(0)
    tested = Reptile(model, inner_lr=0.05, inner_steps=3, inner_optimizer="sgd", test_steps=2, test_lr=0.2)
    trained_so = Reptile(model, inner_lr=0.2, inner_steps=2, inner_optimizer="sgd")
    logits = tested.adapt(ep.support_x, ep.support_y)(ep.query_x)
    torch.testing.assert_close(logits, trained_so.adapt(ep.support_x, ep.support_y)(ep.query_x))
    default = Reptile(model, inner_lr=0.05, inner_steps=3, inner_optimizer="sgd")
    assert not torch.allclose(logits, default.adapt(ep.support_x, ep.support_y)(ep.query_x))


def test_inner_steps_never_touch_running_statistics(small_synthetic):
    model = build_model("conv4", 5)
    before = {n: b.clone() for n, b in model.named_buffers()}
    batch = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0).batch(range(2))
    for learner in (MAML(model, inner_steps=2), ANIL(model), Reptile(model, inner_steps=2)):
        learner.meta_loss(batch)[0].backward()
        learner.adapt(batch.support_x[0], batch.support_y[0])(batch.query_x[0])
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    assert model.training  # modes are restored too


@pytest.mark.parametrize("cls", [MAML, ANIL])
def test_running_test_norm_classifies_each_query_on_its_own(small_synthetic, cls):
    torch.manual_seed(0)
    model = build_model("conv4", 5)
    with torch.no_grad():
        model(torch.rand(40, 1, 28, 28))  # running statistics of their own, as a trained network has
    batch = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0).batch(range(2))
    ep = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0).episode(0)
    for norm, alone in (("batch", False), ("running", True), ("support", True)):
        learner = cls(model, test_steps=2, test_norm=norm).eval()
        predict = learner.adapt(ep.support_x, ep.support_y)
        together = predict(ep.query_x)
        one_by_one = torch.cat([predict(ep.query_x[i : i + 1]) for i in range(len(ep.query_x))])
        assert torch.allclose(together, one_by_one, atol=1e-4) == alone
    # before any real step, the running learner is the network in eval mode
    still = cls(model, test_lr=1e-12, test_norm="running").eval()
    torch.testing.assert_close(still.adapt(ep.support_x, ep.support_y)(ep.query_x), model.eval()(ep.query_x))
    # meta-training normalises by the batch either way
    losses = [
        cls(model, test_norm=norm).train().meta_loss(batch)[0] for norm in ("batch", "running", "support")
    ]
    assert torch.equal(losses[0], losses[1]) and torch.equal(losses[0], losses[2])
    with pytest.raises(ValueError, match="test_norm must be one of batch, running, support"):
        cls(model, test_norm="eval")


@pytest.mark.parametrize("cls", [MAML, ANIL])
def test_support_test_norm_normalises_by_the_support_set(small_synthetic, cls):
    torch.manual_seed(0)
    model = build_model("conv4", 5)
    ep = EpisodeSampler(small_synthetic, 5, 2, 3, seed=0).episode(0)
    batch, support = (cls(model, test_steps=2, test_norm=n).eval() for n in ("batch", "support"))
    on_batch = batch.adapt(ep.support_x, ep.support_y)
    on_support = support.adapt(ep.support_x, ep.support_y)
    # the support set scored as a batch has exactly the support set's statistics
    torch.testing.assert_close(on_support(ep.support_x), on_batch(ep.support_x), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(on_support(ep.query_x), on_batch(ep.query_x), atol=1e-3)
    # before any real step: the network in eval mode, with the support set's statistics as running ones
    inputs = {}
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = [m.register_forward_hook(lambda m, x, y: inputs.__setitem__(m, x[0])) for m in norms]
    model.train()(ep.support_x)
    for h in hooks:
        h.remove()
    expected = copy.deepcopy(model).eval()
    for m, e in zip(norms, (m for m in expected.modules() if isinstance(m, nn.BatchNorm2d)), strict=True):
        e.running_mean.copy_(inputs[m].mean((0, 2, 3)))
        e.running_var.copy_(inputs[m].var((0, 2, 3), unbiased=False))
    still = cls(model, test_lr=1e-12, test_norm="support").eval()
    with torch.no_grad():
        torch.testing.assert_close(still.adapt(ep.support_x, ep.support_y)(ep.query_x), expected(ep.query_x))
    # task threads: every episode gets the statistics of its own support set, on whichever copy
    eps = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0).batch(range(3))
    threaded = cls(model, test_steps=2, test_norm="support", strategy="threads").eval()
    together = threaded.adapt_batch(eps.support_x, eps.support_y)(eps.query_x)
    for i in range(3):
        torch.testing.assert_close(
            together[i], support.adapt(eps.support_x[i], eps.support_y[i])(eps.query_x[i])
        )
    assert not any("forward" in vars(m) for m in model.modules())
    with pytest.raises(RuntimeError, match="record the support set first"):
        SupportStatistics().use(model)


def test_adapt_does_not_change_the_initialization(small_synthetic):
    model = build_model("conv4", 5)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    ep = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0).episode(0)
    backbone_only = model.backbone
    for learner in (MAML(model, test_steps=3), MetaSGD(model), Reptile(model, inner_steps=2)):
        logits = learner.adapt(ep.support_x, ep.support_y)(ep.query_x)
        assert logits.shape == (15, 5)
    for mode in ("linear", "partial", "full"):
        ft = FineTune(backbone_only, mode=mode, freeze_blocks=2, epochs=2)
        assert ft.adapt(ep.support_x, ep.support_y)(ep.query_x).shape == (15, 5)
    assert SimpleShot(backbone_only).adapt(ep.support_x, ep.support_y)(ep.query_x).shape == (15, 5)
    assert ProtoNet(backbone_only).adapt(ep.support_x, ep.support_y)(ep.query_x).shape == (15, 5)
    for n, p in model.named_parameters():
        assert torch.equal(p, init[n]), n


def test_finetune_is_repeatable_and_respects_freezing(small_synthetic):
    torch.manual_seed(0)
    backbone = Conv4(1)
    ep = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0).episode(0)
    a = FineTune(backbone, mode="partial", freeze_blocks=3, epochs=3).adapt(ep.support_x, ep.support_y)
    b = FineTune(backbone, mode="partial", freeze_blocks=3, epochs=3).adapt(ep.support_x, ep.support_y)
    assert torch.equal(a(ep.query_x), b(ep.query_x))
    with pytest.raises(ValueError, match="freeze_blocks must be in 1..4"):
        FineTune(backbone, mode="partial", freeze_blocks=7)
    with pytest.raises(ValueError, match="mode must be"):
        FineTune(backbone, mode="half")


def test_pretrained_backbone_loading(tmp_path):
    torch.manual_seed(0)
    source = build_model("conv4", 64)
    torch.save({"model": source.state_dict()}, tmp_path / "pre.pt")
    loaded = build_model("conv4", 5, pretrained=tmp_path / "pre.pt")
    for (n, p), q in zip(
        source.backbone.state_dict().items(), loaded.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), n
    assert loaded.head.out_features == 5
    torch.save(build_model("conv4", 5, in_channels=3).state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(
        ValueError, match=r"blocks\.0\.0\.weight: checkpoint \(64, 3, 3, 3\) vs model \(64, 1, 3, 3\)"
    ):
        build_model("conv4", 5, pretrained=tmp_path / "rgb.pt")
    torch.save({"model": build_model("resnet12", 5).state_dict()}, tmp_path / "r12.pt")
    with pytest.raises(ValueError, match="missing keys"):
        build_model("conv4", 5, pretrained=tmp_path / "r12.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model("conv4", 5, pretrained=tmp_path / "none.pt")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("vgg", 5)
    with pytest.raises(ValueError, match="width must be at least 1"):
        build_model("conv4-0", 5)


def test_one_view_is_the_backbone_itself_and_views_need_the_image():
    backbone = build_model("conv4", 5).backbone.eval()
    images = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(ViewAveraged(backbone, 1)(images), backbone(images), rtol=0, atol=0)
    eight = ViewAveraged(backbone, 8, seed=3)
    assert eight.views == 8 and eight.feature_dim == 64
    torch.testing.assert_close(eight(images), ViewAveraged(backbone, 8, seed=3)(images), rtol=0, atol=0)
    torch.testing.assert_close(eight(images[1:2]), eight(images)[1:2])  # each image on its own
    with pytest.raises(ValueError, match="views must be at least 1"):
        ViewAveraged(backbone, 0)


def test_embed_bounds_the_images_of_one_call_views_included(monkeypatch):
    monkeypatch.setattr(features_module, "EMBED_IMAGES", 8)  # 4 views: 2 images a call
    backbone = build_model("conv4", 5).backbone
    calls = []
    backbone.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    images = torch.rand(5, 1, 28, 28)
    four = ViewAveraged(backbone, 4, seed=1)
    grouped = embed(four, images)
    assert calls == [8, 8, 4]  # 2, 2 and 1 images, each with its 3 copies
    calls.clear()
    monkeypatch.setattr(features_module, "EMBED_IMAGES", 10_000)
    torch.testing.assert_close(grouped, embed(four, images))
    assert calls == [20]
    calls.clear()
    monkeypatch.setattr(features_module, "EMBED_IMAGES", 2)  # no views: 2 images a call
    plain = embed(backbone, images)
    assert calls == [2, 2, 1]
    with torch.no_grad():
        torch.testing.assert_close(plain, backbone.eval()(images))


def test_block_features_put_earlier_blocks_max_pooled_outputs_beside_the_features():
    backbone = build_model("conv4-globalmax", 5).backbone.eval()
    images = torch.rand(3, 1, 28, 28)
    levels = BlockFeatures(backbone, [3, 1])
    assert levels.blocks == (1, 3) and levels.widths == (64, 64) and levels.feature_dim == 192
    with torch.no_grad():
        features = levels(images)
        by_hand = [backbone(images)]
        for stop in (1, 3):  # the outputs of blocks 1 and 3, each image's maximum per channel
            by_hand.append(backbone.run_blocks(images, 0, stop).flatten(2).max(2).values)
    torch.testing.assert_close(features, torch.cat(by_hand, 1))
    wide = BlockFeatures(build_backbone("resnet12", 3, 32).eval(), [2])
    assert wide(torch.rand(2, 3, 32, 32)).shape == (2, wide.feature_dim)
    for bad in ([4], [0], [2, 2], []):
        with pytest.raises(ValueError, match="blocks must be distinct numbers from 1 to 3"):
            BlockFeatures(backbone, bad)


def test_conv4_width_is_part_of_the_backbone_name(tmp_path):
    wide = build_model("conv4-96", 5)
    assert wide.backbone.feature_dim == 96 and wide.backbone(torch.zeros(2, 1, 28, 28)).shape == (2, 96)
    torch.save({"model": wide.state_dict()}, tmp_path / "wide.pt")
    assert build_model("conv4-96", 5, pretrained=tmp_path / "wide.pt").backbone.feature_dim == 96
    with pytest.raises(ValueError, match=r"checkpoint \(96, 1, 3, 3\) vs model \(64, 1, 3, 3\)"):
        build_model("conv4", 5, pretrained=tmp_path / "wide.pt")


def test_conv4_nopool_keeps_the_last_blocks_spatial_map():
    """``-nopool`` drops only the last max-pool: same parameters, 3x3 positions of features;
    ``-globalmax`` pools all of them."""
    pooled, spatial = build_model("conv4", 5).backbone.eval(), build_model("conv4-nopool", 5).backbone.eval()
    spatial.load_state_dict(pooled.state_dict())
    images = torch.rand(3, 1, 28, 28)
    grid = spatial(images).view(3, 64, 3, 3)
    assert spatial.feature_dim == 576 and build_model("conv4-32-nopool", 5).backbone.feature_dim == 288
    # Pooling the map's top-left 2x2 (what the 3x3 map loses to the floor division is the last row
    # and column) gives the pooled network's features: ReLU and max-pool commute.
    torch.testing.assert_close(grid[:, :, :2, :2].amax(dim=(2, 3)), pooled(images))
    with pytest.raises(ValueError, match="at least 8x8"):
        build_backbone("conv4-nopool", image_size=7)
    # -globalmax takes the maximum over all nine positions instead, with the same parameters
    global_max = build_model("conv4-globalmax", 5).backbone.eval()
    global_max.load_state_dict(pooled.state_dict())
    torch.testing.assert_close(global_max(images), grid.amax(dim=(2, 3)))
    assert (
        global_max.feature_dim == 64 and build_backbone("conv4-32-globalmax", image_size=84).feature_dim == 32
    )
    with pytest.raises(ValueError, match="pool must be one of max, ceil, none, globalmax, globalavg"):
        conv_block(1, 8, pool="avg")


def test_conv4_up_resizes_its_input_first_with_the_same_parameters():
    """``-up36``: 28x28 images resized to 36x36 inside the network, so every map is larger
    (36, 18, 9, 4) while the weights are exactly those of the network without it."""
    plain = build_model("conv4-globalmax", 5).backbone.eval()
    up = build_model("conv4-globalmax-up36", 5).backbone.eval()
    up.load_state_dict(plain.state_dict())  # strict: the same parameters and buffers
    images = torch.rand(3, 1, 28, 28)
    resized = F.interpolate(images, size=(36, 36), mode="bilinear", align_corners=False)
    assert resized.shape == (3, 1, 36, 36) and not torch.allclose(resized[:, :, :28, :28], images)
    torch.testing.assert_close(up(images), plain(resized))
    assert [up.run_blocks(images, 0, b).shape[-1] for b in (1, 2, 3)] == [18, 9, 4]
    assert up.run_blocks(up.run_blocks(images, 0, 2), 2).shape == (3, 64)  # later blocks: no resize
    assert build_backbone("conv4-up36").feature_dim == 64 * 2 * 2  # 36, 18, 9, 4, 2
    with pytest.raises(ValueError, match="upsample to at least 28"):
        build_backbone("conv4-globalmax-up20")


def test_conv4_ceil_pools_keep_the_last_row_and_column_and_globalavg_takes_the_mean():
    """``-ceil``: the third block's 7x7 map pools to 4x4, not 3x3; the extra row and column
    are the maxima over the map's last row and column. ``-globalavg``: the mean of the last
    block's ReLU map."""
    plain = build_model("conv4-nopool", 5).backbone.eval()
    ceil = build_model("conv4-ceil-globalmax", 5).backbone.eval()
    mean = build_model("conv4-globalavg", 5).backbone.eval()
    ceil.load_state_dict(plain.state_dict())
    mean.load_state_dict(plain.state_dict())
    images = torch.rand(3, 1, 28, 28)
    third = plain.blocks[2]
    before_pool = third[1](third[0](plain.run_blocks(images, 0, 2)))  # conv and BN of the third block: 7x7
    pooled = ceil.run_blocks(images, 0, 3)
    assert pooled.shape == (3, 64, 4, 4)
    torch.testing.assert_close(pooled[:, :, :3, :3], plain.run_blocks(images, 0, 3))
    edge_row = before_pool[:, :, 6, :].unfold(-1, 2, 2).amax(-1)  # columns 0-1, 2-3, 4-5 of the last row
    torch.testing.assert_close(pooled[:, :, 3, :3], edge_row.relu())
    torch.testing.assert_close(pooled[:, :, 3, 3], before_pool[:, :, 6, 6].relu())
    last = ceil.blocks[3]
    torch.testing.assert_close(ceil(images), last[1](last[0](pooled)).amax(dim=(2, 3)).relu())
    torch.testing.assert_close(mean(images), plain(images).view(3, 64, 9).mean(-1))
    assert ceil.feature_dim == mean.feature_dim == 64
    assert build_backbone("conv4-ceil").feature_dim == 64 * 2 * 2  # 28, 14, 7, 4, 2
    assert build_backbone("conv4-32-ceil-nopool").feature_dim == 32 * 4 * 4
    with pytest.raises(ValueError, match="unknown backbone 'conv4-globalavg-ceil'"):
        build_backbone("conv4-globalavg-ceil")


def test_torchvision_backbone_takes_a_saved_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "resnet18.pt")
    model = build_model("resnet18", 5, in_channels=3, pretrained=tmp_path / "resnet18.pt")
    assert torch.equal(model.backbone.net.conv1.weight, net.conv1.weight)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(
    ("name", "channels", "size"), [("conv4", 1, 28), ("resnet12", 3, 32), ("resnet18", 1, 32)]
)
def test_run_blocks_in_two_parts_gives_the_features(name, channels, size):
    torch.manual_seed(0)
    backbone = build_model(name, 5, in_channels=channels, image_size=size).backbone.eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        features = backbone(x)
        assert features.shape == (2, backbone.feature_dim)
        for k in range(1, len(backbone.blocks)):
            torch.testing.assert_close(backbone.run_blocks(backbone.run_blocks(x, 0, k), k), features)


@pytest.mark.parametrize("cls", [MAML, ANIL, MetaSGD])
def test_meta_backward_equals_meta_loss_backward(small_synthetic, cls):
    batch = _double_batch(small_synthetic, tasks=3)
    grads = []
    for use_loss in (True, False):
        torch.manual_seed(0)
        learner = cls(build_model("conv4", 5).double(), inner_lr=0.1, inner_steps=2)
        if use_loss:
            loss, metrics = learner.meta_loss(batch)
            loss.backward()
        else:
            metrics = learner.meta_backward(batch)
        grads.append((torch.cat([p.grad.flatten() for p in learner.parameters()]), metrics))
    assert _rel(grads[1][0], grads[0][0]) < 1e-10
    assert torch.allclose(grads[1][1]["loss"], grads[0][1]["loss"])
    assert torch.equal(grads[1][1]["accuracy"], grads[0][1]["accuracy"])


THREADED = {
    "maml": lambda model, strategy: MAML(model, inner_lr=0.1, strategy=strategy),
    "anil": lambda model, strategy: ANIL(model, inner_lr=0.1, strategy=strategy),
    "metasgd": lambda model, strategy: MetaSGD(model, inner_lr=0.1, strategy=strategy),
    "protomaml": lambda model, strategy: MAML(model, inner_lr=0.1, strategy=strategy, proto_head=True),
    "reptile": lambda model, strategy: Reptile(model, inner_lr=1e-3, inner_steps=3, strategy=strategy),
}


@pytest.mark.parametrize("name", THREADED)
def test_threads_equal_loop_exactly(small_synthetic, name):
    # float32 on purpose: each kernel runs as in the loop, so not one bit may differ.
    batch = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0).batch(range(5))
    results = {}
    for strategy in ("loop", "threads"):
        torch.manual_seed(0)
        learner = THREADED[name](build_model("conv4", 5), strategy)
        metrics = learner.meta_backward(batch)
        grads = [p.grad for p in learner.parameters() if p.grad is not None]
        results[strategy] = (torch.cat([g.flatten() for g in grads]), metrics, learner)
    (loop, loop_metrics, _), (threads, threads_metrics, learner) = results["loop"], results["threads"]
    assert torch.equal(threads, loop) and loop.abs().sum() > 0
    assert all(torch.equal(threads_metrics[k], loop_metrics[k]) for k in loop_metrics)
    if name == "protomaml":  # the head's own parameters get no gradient under threads either
        assert learner.model.head.weight.grad is None


def test_threads_run_under_the_callers_bf16_autocast(small_synthetic):
    # Autocast is thread-local, like grad mode: the workers must enter the caller's again.
    batch = EpisodeSampler(small_synthetic, 5, 1, 3, seed=0).batch(range(4))
    results = {}
    for strategy in ("loop", "threads", "float32"):
        torch.manual_seed(0)
        learner = THREADED["maml"](build_model("conv4", 5), "loop" if strategy == "float32" else strategy)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=strategy != "float32"):
            learner.meta_backward(batch)
        results[strategy] = torch.cat([p.grad.flatten() for p in learner.parameters()])
    assert torch.equal(results["threads"], results["loop"])
    assert not torch.equal(results["loop"], results["float32"])


def test_unknown_strategy_names_the_choices():
    with pytest.raises(
        ValueError, match="strategy must be 'auto', 'loop', 'threads' or 'vmap', got 'thread'"
    ):
        MAML(build_model("conv4", 5), strategy="thread")
    with pytest.raises(ValueError, match="strategy must be 'auto', 'loop' or 'threads', got 'vmap'"):
        Reptile(build_model("conv4", 5), strategy="vmap")


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_reaches_the_convolutions(channels):
    # A single-channel batch is where .contiguous(memory_format=channels_last) silently keeps NCHW.
    x = torch.randn(6, channels, 28, 28)
    y = channels_last(x)
    assert torch.equal(y, x)
    conv = nn.Conv2d(channels, 8, 3, padding=1)
    out = conv(y)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


def test_channels_last_changes_no_value(small_synthetic):
    batch = _double_batch(small_synthetic, tasks=2)
    grads = []
    for channels_last_ in (False, True):
        torch.manual_seed(0)
        learner = MAML(build_model("conv4", 5).double(), inner_lr=0.1, channels_last=channels_last_)
        learner.meta_backward(batch)
        grads.append(torch.cat([p.grad.flatten() for p in learner.parameters()]))
    assert _rel(grads[1], grads[0]) < 1e-10


def test_metasgd_clamp_rates_raises_only_the_rates_below_min_lr():
    learner = MetaSGD(build_model("conv4", 5), inner_lr=0.1, min_lr=0.05)
    rate = next(iter(learner.lrs.values()))
    with torch.no_grad():
        rate[0] = -0.3
    learner.clamp_rates_()
    assert rate[0].eq(0.05).all() and rate[1:].eq(0.1).all()
    unbounded = MetaSGD(build_model("conv4", 5), inner_lr=0.1)
    first = next(iter(unbounded.lrs.values()))
    with torch.no_grad():
        first[0] = -0.3
    unbounded.clamp_rates_()
    assert first[0].eq(-0.3).all()
    with pytest.raises(ValueError, match="inner_lr=0.01 is below min_lr=0.05"):
        MetaSGD(build_model("conv4", 5), inner_lr=0.01, min_lr=0.05)


def test_distillation_loss_is_hintons_soft_target_kl():
    torch.manual_seed(0)
    s, t, temperature = torch.randn(6, 5), torch.randn(6, 5), 3.0
    p = (t / temperature).softmax(-1)
    kl = (p * (p.log() - (s / temperature).log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(distillation_loss(s, t, temperature), temperature**2 * kl)
    assert float(distillation_loss(t, t, temperature)) == pytest.approx(0, abs=1e-6)


def test_protonet_with_a_teacher_mixes_the_labels_and_the_teachers_logits(small_synthetic):
    """meta_loss = (1 - w) CE + w T^2 KL against the teacher's ProtoNet logits (eval mode, same
    images); w = 0 is plain ProtoNet; the teacher is neither trained nor saved."""
    batch = _double_batch(small_synthetic, tasks=2, k=2)  # float64: no rounding between the two sides
    torch.manual_seed(0)
    student, teacher = build_backbone("conv4").double(), build_backbone("conv4").double()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    plain, _ = ProtoNet(student).meta_loss(batch)
    torch.testing.assert_close(
        ProtoNet(student, teacher=teacher, distill_weight=0.0).meta_loss(batch)[0], plain
    )

    proto = ProtoNet(student, teacher=teacher, distill_weight=0.3, temperature=2.0)
    loss, _ = proto.meta_loss(batch)
    expected = []
    for i in range(2):
        sx, sy, qx, qy = batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i]
        feats = student(torch.cat((sx, qx)))  # one pass: the student's BatchNorm uses batch statistics
        logits = negative_squared_distances(feats[10:], prototypes(feats[:10], sy, 5))
        with torch.no_grad():
            target = negative_squared_distances(teacher(qx), prototypes(teacher(sx), sy, 5))
        expected.append(0.7 * F.cross_entropy(logits, qy) + 0.3 * distillation_loss(logits, target, 2.0))
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())

    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert set(proto.state_dict()) == {f"backbone.{k}" for k in student.state_dict()}
    assert {id(p) for p in proto.parameters()} == {id(p) for p in student.parameters()}
    proto.train()
    assert not teacher.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k
    with pytest.raises(ValueError, match="distill_weight must be between 0 and 1"):
        ProtoNet(student, teacher=teacher, distill_weight=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ProtoNet(student, teacher=teacher, temperature=0.0)


def test_protonet_with_a_base_head_adds_the_base_class_cross_entropy(small_synthetic):
    """meta_loss = ProtoNet's CE + w CE of a linear head over every base class, on the features of
    all the episode's images labelled by Episode.classes; w = 0 is plain ProtoNet with no head."""
    batch = _double_batch(small_synthetic, tasks=2, k=2)
    torch.manual_seed(0)
    backbone = build_backbone("conv4").double()
    plain, _ = ProtoNet(backbone).meta_loss(batch)
    off = ProtoNet(backbone, base_classes=small_synthetic.num_classes, base_weight=0.0)
    assert off.base_head is None and set(off.state_dict()) == {f"backbone.{k}" for k in backbone.state_dict()}
    torch.testing.assert_close(off.meta_loss(batch)[0], plain)

    proto = ProtoNet(backbone, base_classes=small_synthetic.num_classes, base_weight=0.5).double()
    loss, _ = proto.meta_loss(batch)
    expected = []
    for i in range(2):
        sx, sy, qx, qy = batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i]
        feats = backbone(torch.cat((sx, qx)))
        logits = negative_squared_distances(feats[10:], prototypes(feats[:10], sy, 5))
        base = F.cross_entropy(proto.base_head(feats), batch.classes[i][torch.cat((sy, qy))])
        expected.append(F.cross_entropy(logits, qy) + 0.5 * base)
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    assert loss.item() > plain.item()  # the head's loss is there, not zero
    loss.backward()
    assert proto.base_head.weight.grad is not None and proto.base_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="base_weight must be >= 0"):
        ProtoNet(backbone, base_classes=10, base_weight=-1.0)
    with pytest.raises(ValueError, match="needs the number of base classes"):
        ProtoNet(backbone, base_weight=0.5)


def test_protonet_trained_with_blocks_measures_distances_with_them(small_synthetic):
    """With block_weights, meta_loss is ProtoNet's cross-entropy on the features with each chosen
    earlier block beside them (max-pooled, times the square root of its weight), the backbone's
    state unchanged (no extra entries); prediction still uses the features alone."""
    batch = _double_batch(small_synthetic, tasks=2, k=2, q=4)
    torch.manual_seed(0)
    backbone = build_backbone("conv4").double()
    proto = ProtoNet(backbone, block_weights=[0.25, 0.0, 0.5])
    loss, _ = proto.meta_loss(batch)
    apart, _ = ProtoNet(backbone, block_weights=[0.25, 0.0, 0.5], blocks_apart=True).meta_loss(batch)
    joined, each = [], []  # apart: the features' loss plus each block's own, times its weight
    for i in range(2):
        sx, sy, qx, qy = batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i]
        x = torch.cat((sx, qx))
        first = backbone.blocks[0](x)
        third = backbone.blocks[2](backbone.blocks[1](first))
        groups = ((backbone(x), 1.0), (first.amax((2, 3)), 0.25), (third.amax((2, 3)), 0.5))

        def proto_loss(feats: torch.Tensor, sy=sy, qy=qy) -> torch.Tensor:
            return F.cross_entropy(negative_squared_distances(feats[10:], prototypes(feats[:10], sy, 5)), qy)

        joined.append(proto_loss(torch.cat([feats * w**0.5 for feats, w in groups], 1)))
        each.append(sum(w * proto_loss(feats) for feats, w in groups))
    torch.testing.assert_close(loss, torch.stack(joined).mean())
    torch.testing.assert_close(apart, torch.stack(each).mean())
    plain, _ = ProtoNet(backbone).meta_loss(batch)
    assert loss.item() != pytest.approx(plain.item(), abs=1e-3)
    assert apart.item() != pytest.approx(plain.item(), abs=1e-3)
    assert set(proto.state_dict()) == set(ProtoNet(backbone).state_dict())
    proto.eval()
    with torch.no_grad():
        scores = proto.adapt_batch(batch.support_x[:1], batch.support_y[:1])(batch.query_x[:1])
        torch.testing.assert_close(
            scores,
            ProtoNet(backbone)
            .eval()
            .adapt_batch(batch.support_x[:1], batch.support_y[:1])(batch.query_x[:1]),
        )
    with pytest.raises(ValueError, match="block_weights must be >= 0 with one > 0"):
        ProtoNet(backbone, block_weights=[0.0, 0.0, 0.0])
    with pytest.raises(
        ValueError, match="block_weights has 4 weights, one per block before the last: Conv4 has 3"
    ):
        ProtoNet(backbone, block_weights=[0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="two metrics for training"):
        ProtoNet(backbone, block_weights=[1.0], train_shrink=3.0)
    with pytest.raises(ValueError, match="blocks_apart gives each of block_weights' blocks a loss"):
        ProtoNet(backbone, blocks_apart=True)


def test_protonet_trained_whitened_measures_mahalanobis_distances(small_synthetic):
    """With train_shrink, meta_loss is ProtoNet's cross-entropy with -(q - c)^T C^-1 (q - c) as
    logits, C the shrunk within-class covariance of the episode's own features (support and
    queries); training keeps a running average of C, which prediction whitens with."""
    batch = _double_batch(small_synthetic, tasks=2, k=2, q=4)
    torch.manual_seed(0)
    backbone = build_backbone("conv4").double()
    proto = ProtoNet(backbone, train_shrink=0.3)
    loss, _ = proto.meta_loss(batch)
    expected = []
    for i in range(2):
        sx, sy, qx, qy = batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i]
        feats = backbone(torch.cat((sx, qx)))
        labels = torch.cat((sy, qy))
        means = torch.stack([feats[labels == c].mean(0) for c in range(5)])
        residuals = feats - means[labels]
        covariance = residuals.T @ residuals / (len(feats) - 5)
        covariance = covariance + 0.3 * covariance.diagonal().mean() * torch.eye(64, dtype=torch.float64)
        diff = feats[10:, None] - prototypes(feats[:10], sy, 5)[None]
        logits = -torch.einsum("qcd,de,qce->qc", diff, torch.linalg.inv(covariance), diff)
        expected.append(F.cross_entropy(logits, qy))
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    plain, _ = ProtoNet(backbone).meta_loss(batch)
    assert abs(loss.item() - plain.item()) > 1e-3
    # training kept the running covariance: the mean of the two episodes' (the first counts fully)
    assert int(proto.covariance_updates) == 2
    covariances = []
    for i in range(2):
        feats = backbone(torch.cat((batch.support_x[i], batch.query_x[i])))
        labels = torch.cat((batch.support_y[i], batch.query_y[i]))
        residuals = feats - torch.stack([feats[labels == c].mean(0) for c in range(5)])[labels]
        covariances.append(residuals.T @ residuals / (len(feats) - 5))
    running = covariances[0] + 0.5 * (covariances[1] - covariances[0])
    torch.testing.assert_close(proto.running_covariance, running.detach())
    # and prediction whitens by it, shrunk alike, without updating it
    proto.eval()
    sx, sy, qx = batch.support_x[:1], batch.support_y[:1], batch.query_x[:1]
    shrunk = running + 0.3 * running.diagonal().mean() * torch.eye(64, dtype=torch.float64)
    with torch.no_grad():
        scores = proto.adapt_batch(sx, sy)(qx)[0]
        support, queries = backbone(sx[0]), backbone(qx[0])
        diff = queries[:, None] - prototypes(support, sy[0], 5)[None]
        expected = -torch.einsum("qcd,de,qce->qc", diff, torch.linalg.inv(shrunk), diff)
    torch.testing.assert_close(scores, expected)
    proto.meta_loss(batch)
    assert int(proto.covariance_updates) == 2
    with pytest.raises(ValueError, match="train_shrink must be > 0"):
        ProtoNet(backbone, train_shrink=0.0)
