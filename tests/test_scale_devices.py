"""The batched, chunked and online routes on every available device (CUDA skipped where
absent): parameters follow the model's device and equal a CPU fit."""

import pytest
import torch

from pyroem.datasets import load_old_faithful
from pyroem.models import GaussianHMM, GaussianMixture

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _close(model, ref, tol=1e-10):
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        if not name.startswith("q_"):
            assert p.device.type == model_device(model)
            assert torch.allclose(p.cpu(), q.cpu(), rtol=0, atol=tol), name


def model_device(model):
    return next(model.parameters()).device.type


@pytest.mark.parametrize("device", DEVICES)
def test_gmm_batches_chunks_and_online_on_the_device(device):
    x = load_old_faithful()
    ref = GaussianMixture(3, 2).initialize(x, seed=0)
    state = ref.state_dict()
    ref.fit(x, init="given", max_iter=5, tol=0)
    xd = x.to(device)
    for data, kw in (([xd[:100], xd[100:]], {}), (xd, {"chunk_size": 64})):
        m = GaussianMixture(3, 2)
        m.load_state_dict(state)
        m.to(device)  # parameters follow .to(device)
        assert model_device(m) == device
        m.fit(data, init="given", max_iter=5, tol=0, **kw)
        _close(m, ref)
    fresh = GaussianMixture(3, 2).to(device)
    fresh.fit([xd[:100], xd[100:]], seed=0, init="random", max_iter=2, tol=0)
    assert model_device(fresh) == device
    fresh.partial_fit(xd[:50])
    assert model_device(fresh) == device and torch.isfinite(fresh.means).all()


@pytest.mark.parametrize("device", DEVICES)
def test_hmm_batches_on_the_device(device):
    windows = list(load_old_faithful().split(16))
    ref = GaussianHMM(2, 2).initialize(windows, seed=0)
    state = ref.state_dict()
    ref.fit(windows, init="given", max_iter=4, tol=0)
    m = GaussianHMM(2, 2)
    m.load_state_dict(state)
    m.to(device)
    m.fit([[w.to(device) for w in windows[:9]], [w.to(device) for w in windows[9:]]],
          init="given", max_iter=4, tol=0)
    _close(m, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_hmm_and_plda_scores_in_chunks_on_the_device(device):
    from pyroem.models import PLDA
    windows = list(load_old_faithful().split(16))
    hmm = GaussianHMM(2, 2)
    hmm.fit(windows, seed=0, max_iter=3, tol=0)
    whole = hmm.log_prob(windows)
    hmm.to(device)
    on_device = [w.to(device) for w in windows]
    lp = hmm.log_prob(on_device, chunk_size=3)
    assert lp.device.type == device
    assert torch.allclose(lp.cpu(), whole, rtol=0, atol=1e-10)
    assert hmm.posterior(on_device, chunk_size=3)[0].device.type == device
    # one long sequence: blocks of frames (the checkpointed E-step)
    x = load_old_faithful()
    one = hmm.log_prob(x.to(device), chunk_size=50)
    assert one.device.type == device
    assert torch.allclose(one.cpu(), hmm.to("cpu").log_prob(x), rtol=1e-13, atol=0)
    hmm.to(device)

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(4)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)[labels] + torch.randn(
        40, 3, generator=g, dtype=torch.float64)
    plda = PLDA(3)
    plda.fit(x, labels, max_iter=3, tol=0)
    whole = plda.log_prob(x, labels)
    plda.to(device)
    lp = plda.log_prob(x.to(device), labels.to(device), chunk_size=7)
    assert lp.device.type == device
    assert torch.allclose(lp.cpu(), whole, rtol=0, atol=1e-10)


def _device_mixture(x):
    import pyro
    import pyro.distributions as dist
    from torch.distributions import constraints
    opts = {"dtype": x.dtype, "device": x.device}
    weights = pyro.param("weights", torch.ones(2, **opts) / 2, constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([[2.0, 55.0], [4.5, 80.0]], **opts))
    scales = pyro.param("scales", torch.tensor([[1.0, 10.0], [1.0, 10.0]], **opts),
                        constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scales[z]).to_event(1), obs=x)


@pytest.mark.parametrize("device", DEVICES)
def test_fit_em_over_batches_on_the_device(device):
    import pyro

    from pyroem.infer import fit_em
    x = load_old_faithful()
    pyro.clear_param_store()
    fit_em(_device_mixture, x, max_iter=4, tol=0)
    ref = {n: pyro.param(n).detach().clone() for n in ("weights", "locs", "scales")}
    pyro.clear_param_store()
    xd = x.to(device)
    fit_em(_device_mixture, batches=[xd[:100], xd[100:]], max_iter=4, tol=0)
    for name, value in ref.items():
        p = pyro.param(name).detach()
        assert p.device.type == device
        assert torch.allclose(p.cpu(), value, rtol=0, atol=1e-10), name
