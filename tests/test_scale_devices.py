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
