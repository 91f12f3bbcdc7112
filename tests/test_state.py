"""The explicit model state: configuration + parameters (the guide's too), round-tripped
exactly; fits and compare that leave a model as it was when they fail or finish."""

import copy
import io

import pytest
import torch

from pyroem.datasets import load_old_faithful
from pyroem.infer import compare
from pyroem.models import GMMHMM, PLDA, CategoricalHMM, GaussianHMM, GaussianMixture


def _tensors(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}


def _equal(a, b):
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _fitted():
    x = load_old_faithful()
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(40, 3, generator=g, dtype=torch.float64)
    labels = torch.arange(40) % 7
    symbols = torch.randint(4, (60,), generator=g)
    models = [
        (GaussianMixture(2, 2, covariance_type="diag", reg_covar=1e-5), (x,)),
        (GaussianHMM(2, 2, covariance_type="full", final_states=[1]), (x,)),
        (GMMHMM(2, 2, dim=2, covariance_type="tied"), (x,)),
        (CategoricalHMM(3, 4, trans_concentration=2.0), (symbols,)),
        (PLDA(3), (emb, labels)),
    ]
    for m, data in models:
        m.fit(*data, max_iter=3, tol=0, seed=1)
        if hasattr(m, "q_probs") or isinstance(m, PLDA):  # the guide holds q
            m.fit(*data, max_iter=2, tol=0, init="given", method="em")
    return models


@pytest.mark.parametrize("index", range(5))
def test_state_round_trips_exactly_through_a_file(index):
    model, data = _fitted()[index]
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)
    fresh = type(model).from_state_dict(state)
    assert fresh.config().keys() == model.config().keys()
    assert _equal(_tensors(fresh), _tensors(model))
    assert torch.allclose(fresh.log_prob(*data), model.log_prob(*data), rtol=0, atol=0)
    # into a model of another configuration: rebuilt, then loaded
    other = type(model).from_state_dict(state)
    other.load_state_dict(type(model)(**model.config()).state_dict())
    other.load_state_dict(state)
    assert _equal(_tensors(other), _tensors(model))


def test_guide_parameters_round_trip_with_their_data_sized_shape():
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2)
    gmm.fit(x, max_iter=2, tol=0, seed=0)
    assert gmm.q_probs.shape == (272, 2)
    fresh = GaussianMixture(2, 2)
    assert not hasattr(fresh, "q_probs")
    fresh.load_state_dict(gmm.state_dict())
    assert torch.equal(fresh.q_probs, gmm.q_probs)
    fresh.load_state_dict(GaussianMixture(2, 2).state_dict())  # no q: removed again
    assert "q_probs_unconstrained" not in fresh.state_dict()


def test_dtype_round_trips():
    gmm = GaussianMixture(2, 2)
    state32 = copy.deepcopy(gmm.float().state_dict())
    gmm.fit(load_old_faithful(), max_iter=2, tol=0, seed=0)
    assert gmm.dtype == torch.float64
    gmm.load_state_dict(state32)
    assert gmm.dtype == torch.float32 and _equal(_tensors(gmm), {
        k: v for k, v in state32.items() if torch.is_tensor(v)})


def test_bad_state_is_refused_before_any_change():
    gmm = GaussianMixture(2, 2)
    before = _tensors(gmm)
    with pytest.raises(ValueError, match="not a GaussianMixture"):
        gmm.load_state_dict(PLDA(2).state_dict())
    bad = gmm.state_dict()
    bad["means_unconstrained" if "means_unconstrained" in bad else "means"] = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="shape"):
        gmm.load_state_dict(bad)
    state = gmm.state_dict()
    del state["weights_unconstrained"]
    with pytest.raises(ValueError, match="missing"):
        gmm.load_state_dict(state)
    assert _equal(_tensors(gmm), before)


def test_config_rebuilds_an_equivalent_model():
    hmm = GaussianHMM(3, 2, covariance_type="spherical", reg_covar=1e-3, params="tm",
                      start_concentration=2.0, block_length=16)
    twin = GaussianHMM(**hmm.config())
    assert twin.config().keys() == hmm.config().keys()
    for k, v in hmm.config().items():
        assert (torch.equal(v, twin.config()[k]) if torch.is_tensor(v)
                else v == twin.config()[k])


def test_initialize_is_the_start_of_fit():
    x = load_old_faithful()
    a, b = GaussianMixture(3, 2), GaussianMixture(3, 2)
    a.fit(x, max_iter=5, tol=0, seed=4)
    b.initialize(x, seed=4)
    b.fit(x, max_iter=5, tol=0, init="given")
    assert _equal(_tensors(a), _tensors(b))


def test_failed_fit_leaves_state_dtype_and_guide_untouched():
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2).float()
    before = _tensors(gmm)
    with pytest.raises(ValueError):
        gmm.fit(x, method="em", max_iter=2, tol=0, init="given", lr=None,
                record_decomposition="sometimes")
    x_bad = x.clone()
    x_bad[:, 1] = 1.0  # a constant column: a singular covariance with reg_covar=0
    strict = GaussianMixture(2, 2, reg_covar=0.0).float()
    before_strict = _tensors(strict)
    with pytest.raises(ValueError, match="positive definite"):
        strict.fit(x_bad, max_iter=3, tol=0, seed=0)
    assert strict.dtype == torch.float32 and _equal(_tensors(strict), before_strict)
    assert _equal(_tensors(gmm), before)


def test_compare_leaves_the_model_exactly_as_it_was():
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2).float()
    gmm.fit(x.float(), max_iter=2, tol=0, seed=0)
    before, hist = _tensors(gmm), gmm.history
    compare(gmm, x, methods=("em", "svi"), max_iter=2, record_decomposition=False)
    assert gmm.dtype == torch.float32 and _equal(_tensors(gmm), before)
    assert gmm.history is hist
