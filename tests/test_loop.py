"""The one fit loop: convergence per data item, ConvergenceWarning, recorders."""

import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from torch.distributions import constraints

from pyroem.infer import compare, fit_em
from pyroem.infer.fit import count_observations
from pyroem.infer.loop import ConvergenceWarning
from pyroem.models import GaussianHMM, GaussianMixture


def _mixture(x):
    w = pyro.param("w", torch.tensor([0.3, 0.7], dtype=x.dtype), constraint=constraints.simplex)
    loc = pyro.param("loc", torch.tensor([-1.0, 1.0], dtype=x.dtype))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Normal(loc[z], 1.0), obs=x)


@pytest.fixture
def blobs():
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(60, 2, generator=g, dtype=torch.float64) - 3,
                      torch.randn(40, 2, generator=g, dtype=torch.float64) + 3])


def test_unconverged_fit_warns_and_says_so(blobs):
    gmm = GaussianMixture(2, 2)
    with pytest.warns(ConvergenceWarning, match="did not converge in 1 iterations"):
        hist = gmm.fit(blobs, max_iter=1, seed=0)
    assert not hist.converged and not gmm.converged


def test_tol_zero_runs_max_iter_without_warning(blobs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        hist = GaussianMixture(2, 2).fit(blobs, max_iter=3, tol=0, seed=0)
    assert hist.num_iters == 3 and not hist.converged


def test_user_model_tolerance_is_per_data_item():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(50, generator=g) - 2, torch.randn(50, generator=g) + 2]).double()
    hist = fit_em(_mixture, x, max_iter=500, tol=1e-7)
    assert hist.converged
    ll = hist.log_likelihood
    assert abs(ll[-1] - ll[-2]) < 1e-7 * 100 <= abs(ll[-2] - ll[-3])


def test_count_observations_of_a_mixture_and_of_a_masked_chain():
    assert count_observations(_mixture, torch.zeros(7, dtype=torch.float64)) == 7

    def chain(x, lengths):
        with pyro.plate("seqs", x.shape[0]):
            z = 0
            for t in pyro.markov(range(x.shape[1])):
                with poutine.mask(mask=lengths > t):
                    z = pyro.sample(f"z_{t}", dist.Categorical(torch.ones(2) / 2))
                    pyro.sample(f"x_{t}", dist.Normal(z * 1.0, 1.0), obs=x[:, t])
                    pyro.factor(f"f_{t}", torch.zeros(x.shape[0]))

    assert count_observations(chain, torch.zeros(3, 5), torch.tensor([5, 2, 4])) == 11


def test_history_records_and_seconds(blobs):
    hist = GaussianMixture(2, 2).fit(blobs, max_iter=50, seed=0)
    assert hist.converged and len(hist.seconds) == hist.num_iters == len(hist.log_likelihood)
    assert all(a <= b for a, b in zip(hist.seconds, hist.seconds[1:]))
    assert all(a <= b + 1e-9 for a, b in zip(hist.log_likelihood, hist.log_likelihood[1:]))
    assert hist.records["strategies"][0]["means"] == "closed-form:GaussianMixture"


def test_hmm_fit_goes_through_the_same_loop():
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(40, 1, generator=g) - 2, torch.randn(40, 1, generator=g) + 2])
    hmm = GaussianHMM(2, 1)
    with pytest.warns(ConvergenceWarning):
        hmm.fit(x.double(), max_iter=2, seed=0)
    hist = hmm.fit(x.double(), max_iter=200, tol=1e-8, seed=0)
    assert hist.converged
    assert abs(hist.log_likelihood[-1] - hist.log_likelihood[-2]) < 1e-8 * 80


def test_compare_does_not_warn_for_its_fixed_iterations(blobs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        hists = compare(GaussianMixture(2, 2), blobs, methods=("em", "viterbi"), max_iter=2,
                        record_decomposition=False)
    assert [h.num_iters for h in hists.values()] == [2, 2]
