"""The EM contract: the plan EM resolves per model, and the errors for half a contract."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from pyroem.infer import EM, ChainPosterior, DiscretePosterior, GaussianPosterior
from pyroem.models import PLDA, GaussianHMM, GaussianMixture


def _poisson_mixture(x):
    w = pyro.param("w", torch.tensor([0.5, 0.5], dtype=x.dtype), constraint=constraints.simplex)
    rate = pyro.param("rate", torch.tensor([1.0, 6.0], dtype=x.dtype),
                      constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Poisson(rate[z]), obs=x)


def test_plan_of_a_builtin_mixture_is_its_closed_form():
    gmm = GaussianMixture(2, 2)
    plan = EM(gmm.model, gmm.guide).plan
    # its own e_step is Pyro's exact enumeration of its model (weighted fits aside)
    assert plan.e_step == "e_step of GaussianMixture"
    assert plan.write == "write_posterior of GaussianMixture"
    assert plan.m_step == "closed form of GaussianMixture"
    assert set(plan.params) == {"weights", "means", "scale_tril"}
    assert set(plan.params.values()) == {"closed-form:GaussianMixture"}
    assert "closed form of GaussianMixture" in repr(plan)


@pytest.mark.parametrize("model, e_step", [(GaussianHMM(2, 1), "e_step of GaussianHMM"),
                                           (PLDA(2), "e_step of PLDA")])
def test_plan_of_models_with_their_own_e_step(model, e_step):
    plan = EM(model.model, model.guide).plan
    assert plan.e_step == e_step
    assert plan.m_step == f"closed form of {type(model).__name__}"


def test_plan_of_a_user_model_is_resolved_with_data_without_changing_parameters():
    x = torch.tensor([0.0, 1, 2, 7, 5, 6, 1, 8], dtype=torch.float64)
    em = EM(_poisson_mixture)
    assert em.plan.m_step == "automatic" and em.plan.params == {}
    pyro.clear_param_store()
    em.resolve(x)
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    assert em.plan.params == {"w": "closed-form:Categorical", "rate": "closed-form:Poisson"}
    after = dict(pyro.get_param_store().items())
    assert all(torch.equal(before[k], after[k].detach()) for k in before)
    em.step(x)
    assert em.plan.params == {"w": "closed-form:Categorical", "rate": "closed-form:Poisson"}


class _Half:
    def expected_statistics(self, posterior, x):
        return {}

    def model(self, x):
        _poisson_mixture(x)


class _OwnEStepOnly:
    def e_step(self, x, hard=False):
        raise AssertionError("never called")

    def model(self, x):
        _poisson_mixture(x)


def test_half_a_closed_form_is_an_error_naming_the_missing_method():
    with pytest.raises(TypeError, match=r"expected_statistics\(\) but not maximize\(\)"):
        EM(_Half().model)


def test_own_e_step_without_closed_form_m_step_is_an_error():
    with pytest.raises(TypeError, match="own e_step"):
        EM(_OwnEStepOnly().model)
    EM(_OwnEStepOnly().model, m_step=lambda posterior, x: None)  # a given M-step is fine


def test_posteriors_are_typed():
    x = torch.randn(20, 2, dtype=torch.float64)
    gmm = GaussianMixture(2, 2).initialize(x, seed=0)
    post = EM(gmm.model, gmm.guide).e_step(x)
    assert isinstance(post, DiscretePosterior) and post["x"].shape == (2, 20)
    hmm = GaussianHMM(2, 2).initialize(x, seed=0)
    chain = hmm.e_step(*hmm.prepare(x))
    assert isinstance(chain, ChainPosterior)
    assert chain.gamma.shape == (1, 20, 2) and chain.trans.shape == (2, 2)
    assert torch.allclose(chain.trans.sum() + 1, torch.tensor(20.0, dtype=torch.float64))
    assert torch.allclose(chain.log_evidence, chain.log_prob.sum())
    labels = torch.arange(20) % 4
    plda = PLDA(2).initialize(x, labels)
    gauss = plda.posterior(x, labels)
    assert isinstance(gauss, GaussianPosterior) and gauss.loc.shape == (4, 2)
    assert torch.allclose(gauss.latent_covariance(), gauss.speaker_covariance())
