"""EM on user models through the public API: PyroModules, Viterbi (hard) EM, float32,
strategies of the built-in models."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from generic_brute import init_params, param
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from pyroem.infer import EM, fit_em
from pyroem.models import GaussianMixture

X = torch.tensor([0.0, 1.0, 2.0, 7.0, 9.0, 8.0])


class PoissonMixture(PyroModule):
    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.weights = PyroParam(torch.tensor([0.5, 0.5], dtype=dtype),
                                 constraint=constraints.simplex)
        self.rates = PyroParam(torch.tensor([1.0, 5.0], dtype=dtype),
                               constraint=constraints.positive)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(self.weights))
            pyro.sample("x", dist.Poisson(self.rates[z]), obs=x)


def hand_step(x, weights, rates, hard=False):
    log_joint = weights.log() + dist.Poisson(rates).log_prob(x[:, None])
    resp = log_joint.softmax(-1)
    if hard:
        resp = torch.nn.functional.one_hot(log_joint.argmax(-1), 2).to(x.dtype)
    nk = resp.sum(0)
    return nk / nk.sum(), (resp * x[:, None]).sum(0) / nk


def test_pyro_module_model():
    mix = PoissonMixture()
    x = X.double()
    weights, rates = hand_step(x, mix.weights.detach(), mix.rates.detach())
    em = EM(mix)
    em.step(x)
    assert torch.allclose(mix.weights.detach(), weights, atol=1e-12)
    assert torch.allclose(mix.rates.detach(), rates, atol=1e-12)
    with pytest.raises(ValueError, match="no pyro.param"):
        EM(mix.forward).step(x)  # outside the module's context its params are invisible


def mixture(x):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=x.dtype),
                         constraint=constraints.simplex)
    rates = pyro.param("rates", torch.tensor([1.0, 5.0], dtype=x.dtype),
                       constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)


def test_viterbi_em_uses_hard_assignments():
    x = X.double()
    init_params(mixture, x)
    weights, rates = hand_step(x, param("weights"), param("rates"), hard=True)
    EM(mixture, hard=True).step(x)
    assert torch.allclose(param("weights"), weights, atol=1e-12)
    assert torch.allclose(param("rates"), rates, atol=1e-12)


def test_float32_matches_float64():
    hist32 = fit_em(mixture, X.float(), max_iter=5, tol=0)
    rates32 = param("rates")
    pyro.clear_param_store()
    hist64 = fit_em(mixture, X.double(), max_iter=5, tol=0)
    assert rates32.dtype == torch.float32
    assert torch.allclose(rates32.double(), param("rates"), rtol=1e-5)
    assert hist32.log_likelihood == pytest.approx(hist64.log_likelihood, rel=1e-5)


def test_builtin_models_keep_their_closed_form():
    gmm = GaussianMixture(2, 1)
    hist = gmm.fit(torch.randn(30, 1, generator=torch.Generator().manual_seed(0)),
                   max_iter=2, seed=0)
    assert hist.records["strategies"][0] == {"weights": "closed-form:GaussianMixture",
                                             "means": "closed-form:GaussianMixture",
                                             "scale_tril": "closed-form:GaussianMixture"}
    assert type(EM(gmm.model).m_step).__name__ == "ClosedFormMStep"


def logits_model(x, y):
    logits = pyro.param("logits", torch.zeros(2, dtype=torch.float64))
    emit_logits = pyro.param("emit_logits", torch.tensor([-1.0, 1.0], dtype=torch.float64))
    rates = pyro.param("rates", torch.tensor([1.0, 5.0], dtype=torch.float64),
                       constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(logits=logits))
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)
        pyro.sample("y", dist.Bernoulli(logits=emit_logits[z]), obs=y)


def test_logits_parametrisations_have_closed_forms():
    x, y = X.double(), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    init_params(logits_model, x, y)
    from pyroem.infer import exact_posterior
    resp = exact_posterior(logits_model, x, y)["x"].T
    em = EM(logits_model)
    em.step(x, y)
    nk = resp.sum(0)
    assert torch.allclose(param("logits").softmax(-1), nk / nk.sum(), atol=1e-12)
    assert torch.allclose(param("emit_logits").sigmoid(), (resp * y[:, None]).sum(0) / nk,
                          atol=1e-12)
    assert em.m_step.strategies == {"emit_logits": "closed-form:Bernoulli",
                                    "logits": "closed-form:Categorical",
                                    "rates": "closed-form:Poisson"}
