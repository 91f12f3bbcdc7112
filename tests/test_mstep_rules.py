"""The M-step rule registry: a rule added by a user (the docs' Geometric example), dispatch by
type through the MRO, routes without side effects, the warning for a rejected closed form,
and the shared weighted statistics."""

import importlib.util
import re
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributions as td
from torch.distributions import constraints

from pyroem.distributions.statistics import categorical_counts, scatter_about, split_moments
from pyroem.infer import EM, exact_posterior, fit_em
from pyroem.infer.mstep import AutoMStep, MStepRule, registry
from pyroem.infer.mstep.rules import PoissonRule

ROOT = Path(__file__).resolve().parents[1]
X = torch.tensor([0.0, 1.0, 0.0, 2.0, 7.0, 9.0, 4.0, 12.0, 0.0, 6.0], dtype=torch.float64)


@pytest.fixture(scope="module")
def geometric_rule():
    """The rule of docs/mstep_rules.rst, imported from the file the page includes."""
    spec = importlib.util.spec_from_file_location("geometric_rule",
                                                  ROOT / "examples" / "geometric_rule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers GeometricRule
    yield module.GeometricRule
    registry.unregister(td.Geometric)


def geometric_mixture(x):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    probs = pyro.param("probs", torch.tensor([0.6, 0.2], dtype=torch.float64),
                       constraint=constraints.unit_interval)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Geometric(probs[z]), obs=x)


def brute_force(x):
    """Responsibilities and log p(X) by Bayes' rule over the two components."""
    w, p = pyro.param("weights").detach(), pyro.param("probs").detach()
    joint = w.log() + p.log() + x[:, None] * (-p).log1p()  # (N, K)
    return joint.softmax(-1), float(joint.logsumexp(-1).sum())


def test_geometric_rule_is_the_weighted_mle(geometric_rule):
    em = EM(geometric_mixture)
    lls = []
    for _ in range(15):
        geometric_mixture(X)  # creates the parameters on the first pass
        resp, ll = brute_force(X)
        lls.append(ll)
        loss = em.step(X)
        assert loss == pytest.approx(-ll, rel=1e-12)
        nk = resp.sum(0)
        assert torch.allclose(pyro.param("probs"), nk / (resp * (1 + X[:, None])).sum(0),
                              atol=1e-12)
        assert torch.allclose(pyro.param("weights"), nk / len(X), atol=1e-12)
    assert em.m_step.strategies == {"probs": "closed-form:Geometric",
                                    "weights": "closed-form:Categorical"}
    assert all(b >= a - 1e-10 for a, b in zip(lls, lls[1:]))
    assert lls[-1] > lls[0] + 1.0


def test_docs_page_includes_the_tested_rule_and_its_usage_runs(geometric_rule):
    page = (ROOT / "docs" / "mstep_rules.rst").read_text()
    assert ".. literalinclude:: ../examples/geometric_rule.py" in page
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", page)
    assert blocks
    namespace = {}
    for block in blocks:
        code = "\n".join(line[4:] for line in block.splitlines())
        exec(compile(code, "docs/mstep_rules.rst", "exec"), namespace)  # noqa: S102 (our docs)
    em = namespace["em"]
    assert em.m_step.strategies == {"probs": "closed-form:Geometric",
                                    "weights": "closed-form:Categorical"}
    losses = namespace["losses"]
    assert all(b <= a + 1e-10 for a, b in zip(losses, losses[1:]))


class CountPoisson(dist.Poisson):
    """A subclass of a registered distribution with no rule of its own."""


def poisson_mixture(x, family=dist.Poisson):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    rates = pyro.param("rates", torch.tensor([1.0, 5.0], dtype=torch.float64),
                       constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", family(rates[z]), obs=x)


def test_subclass_of_a_registered_distribution_uses_its_rule():
    assert isinstance(registry.lookup(CountPoisson(torch.tensor(1.0))), PoissonRule)
    poisson_mixture(X, CountPoisson)
    resp = exact_posterior(poisson_mixture, X, CountPoisson)["x"].T
    em = EM(poisson_mixture)
    em.step(X, CountPoisson)
    assert em.m_step.strategies["rates"] == "closed-form:CountPoisson"
    expected = (resp * X[:, None]).sum(0) / resp.sum(0)
    assert torch.allclose(pyro.param("rates"), expected, atol=1e-12)


def test_a_subclass_rule_takes_precedence_over_its_parents():
    class HalfRatePoissonRule(PoissonRule):
        def maximize(self, arg, num, den, old):
            return super().maximize(arg, num, den, old) / 2

    registry.register(HalfRatePoissonRule, types=(CountPoisson,))
    try:
        assert isinstance(registry.lookup(CountPoisson(torch.tensor(1.0))), HalfRatePoissonRule)
        assert type(registry.lookup(dist.Poisson(torch.tensor(1.0)))) is PoissonRule
    finally:
        registry.unregister(CountPoisson)
    assert type(registry.lookup(CountPoisson(torch.tensor(1.0)))) is PoissonRule


def test_routes_change_nothing_and_match_the_step():
    poisson_mixture(X)
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    em = EM(poisson_mixture)
    routes = em.resolve(X).params
    assert all(torch.equal(before[k], v.detach()) for k, v in pyro.get_param_store().items())
    em.step(X)
    assert routes == em.m_step.strategies == {"rates": "closed-form:Poisson",
                                              "weights": "closed-form:Categorical"}


def positive_locs_model(x):
    """Means constrained positive: the closed form (a negative mean) is rejected."""
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([0.5, 3.0], dtype=torch.float64),
                      constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def test_rejected_closed_form_warns_once_per_parameter():
    x = torch.tensor([-3.0, -2.5, 4.0, 5.0], dtype=torch.float64)
    positive_locs_model(x)
    m_step = AutoMStep(positive_locs_model)
    posterior = exact_posterior(positive_locs_model, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert m_step.routes(posterior, x)["locs"] == "numerical"  # analysis: no warning
        assert not caught
        for _ in range(3):
            m_step(exact_posterior(positive_locs_model, x), x)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert "'locs'" in messages[0] and "constraint" in messages[0]
    assert m_step.strategies["locs"] == "numerical"
    assert (pyro.param("locs") > 0).all()


def test_unrecognised_family_goes_numerical_without_warning():
    def model(x):
        rate = pyro.param("rate", torch.tensor(1.0, dtype=torch.float64),
                          constraint=constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Weibull(1.0 / rate, torch.tensor(1.5, dtype=torch.float64)),
                        obs=x + 1)

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="AutoMStep")
        hist = fit_em(model, X, max_iter=2, tol=0)
    assert hist.records["strategies"][0] == {"rate": "numerical"}


def test_rules_declare_types():
    class NoTypes(MStepRule):
        pass

    with pytest.raises(ValueError, match="no distribution types"):
        registry.register(NoTypes)


def test_shared_statistics_match_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    w = torch.rand(50, 4, generator=g, dtype=torch.float64)
    shift = x.mean(0)
    xc = x - shift
    design = torch.cat([(xc[:, :, None] * xc[:, None, :]).flatten(1), xc, torch.ones(50, 1,
                        dtype=torch.float64)], -1)
    m = split_moments(w.T @ design, shift)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64)
    d = xc[None] - mu[:, None]  # (K, N, D)
    expected = torch.einsum("nk,kni,knj->kij", w, d, d)
    assert torch.allclose(scatter_about(m["n"], m["sx"], m["sxx"], mu), expected, atol=1e-10)
    diag = design[:, [0, 4, 8, 9, 10, 11, 12]]  # [x^2, x, 1] per dim
    md = split_moments(w.T @ diag, shift)
    got = scatter_about(md["n"][:, None], md["sx"], md["sxx"], mu, "diag")
    assert torch.allclose(got, expected.diagonal(dim1=-2, dim2=-1), atol=1e-10)
    values = torch.randint(5, (50,), generator=g)
    counts = categorical_counts(w, values, 5)
    assert torch.allclose(counts, w.T @ torch.nn.functional.one_hot(values, 5).double())
