"""Every learner adapts a batch of episodes exactly as it adapts each episode alone."""

import pytest
import torch

from fewshot import ANIL, MAML, EpisodeSampler, FineTune, MetaSGD, ProtoNet, Reptile, SimpleShot
from fewshot.learners.functional import fit_head
from fewshot.models import build_backbone, build_model

LEARNERS = {
    "maml-loop": lambda: MAML(build_model("conv4", 5), 0.4, test_steps=2, strategy="loop"),
    "maml-vmap": lambda: MAML(build_model("conv4", 5), 0.4, test_steps=2, strategy="vmap"),
    "maml-threads": lambda: MAML(build_model("conv4", 5), 0.4, test_steps=2, strategy="threads"),
    "anil-threads": lambda: ANIL(build_model("conv4", 5), 0.4, test_steps=3, strategy="threads"),
    "metasgd-vmap": lambda: MetaSGD(build_model("conv4", 5), 0.4, strategy="vmap"),
    "anil-vmap": lambda: ANIL(build_model("conv4", 5), 0.4, test_steps=3, strategy="vmap"),
    "reptile": lambda: Reptile(build_model("conv4", 5), 1e-3, inner_steps=2, strategy="loop"),
    "reptile-threads": lambda: Reptile(build_model("conv4", 5), 1e-3, inner_steps=2, strategy="threads"),
    "protonet": lambda: ProtoNet(build_backbone("conv4")),
    "simpleshot": lambda: SimpleShot(build_backbone("conv4")),
    "finetune": lambda: FineTune(build_backbone("conv4"), epochs=2),
}


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("n_way", [5, 8])
def test_adapt_batch_equals_adapt(small_synthetic, name, n_way):
    # In float64: the batched and single paths may run different kernels (vmap, memory
    # layout), whose float32 rounding a few inner steps on 1-shot BatchNorm can amplify.
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        learner = LEARNERS[name]().eval()
    finally:
        torch.set_default_dtype(torch.float32)
    b = EpisodeSampler(small_synthetic, n_way, 1, 2, seed=4).batch(range(3))
    sx, qx = b.support_x.double(), b.query_x.double()
    logits = learner.adapt_batch(sx, b.support_y)(qx)
    assert logits.shape == (3, 2 * n_way, n_way)
    assert torch.isfinite(logits).all()
    for i in range(3):
        alone = learner.adapt(sx[i], b.support_y[i])(qx[i])
        torch.testing.assert_close(logits[i], alone, rtol=1e-9, atol=1e-9)


def test_fit_head_keeps_a_matching_head_and_averages_otherwise():
    params = {
        "head.weight": torch.arange(10.0).view(5, 2),
        "head.bias": torch.arange(5.0),
        "w": torch.ones(3),
    }
    assert fit_head(params, 5) == params
    wide = fit_head(params, 7)
    assert torch.equal(wide["head.weight"], torch.tensor([[4.0, 5.0]]).expand(7, 2))
    assert torch.equal(wide["head.bias"], torch.full((7,), 2.0))
    assert wide["w"] is params["w"]
