"""pyroem.plot: the numbers each figure draws, and that every figure is written headless."""

import matplotlib
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch.distributions import MultivariateNormal as TorchMVN

from pyroem import plot
from pyroem.datasets import load_old_faithful
from pyroem.infer import compare
from pyroem.models import GaussianMixture

# These tests use small tensors, for which torch's intra-op thread pool only adds
# contention on a shared machine (20x slower under load); one thread is plenty.


@pytest.fixture(scope="module")
def faithful():
    x = load_old_faithful()
    return (x - x.mean(0)) / x.std(0)


def started_gmm(covariance_type="full"):
    gmm = GaussianMixture(2, dim=2, covariance_type=covariance_type, reg_covar=0.0)
    gmm = gmm.to(torch.float64)
    gmm.means = torch.tensor([[-1.5, 1.0], [1.5, -1.0]], dtype=torch.float64)
    return gmm


def test_load_old_faithful():
    x = load_old_faithful()
    assert x.shape == (272, 2) and x.dtype == torch.float64
    # Published summary of R's faithful data.
    assert x.mean(0).tolist() == pytest.approx([3.487783, 70.897059], abs=1e-5)
    assert load_old_faithful(dtype=torch.float32).dtype == torch.float32


def test_em_bound_lies_below_and_touches_at_eta_old(faithful):
    gmm = started_gmm()
    means = gmm.means.clone()
    b = plot.em_bound_path(gmm, faithful, num_points=25)
    assert torch.equal(gmm.means, means)  # the model passed in is untouched
    i_old, i_new = int((b.t == 0).nonzero()), int((b.t == 1).nonzero())
    gap = b.log_evidence - b.bound
    assert (gap >= -1e-9).all()  # a lower bound everywhere on the path
    assert abs(float(gap[i_old])) < 1e-9  # touching at eta_old
    assert float(gap[i_new]) > 1.0 and float(gap[0]) > 1.0 and float(gap[-1]) > 1.0
    # The M-step maximises the bound: its largest value on the path is at eta_new.
    assert int(b.bound.argmax()) == i_new
    # ... and both ends agree with independent computations.
    start = float(gmm.log_prob(faithful).sum())
    assert b.log_evidence_old == pytest.approx(start, abs=1e-9)
    r_old = gmm.posterior(faithful)  # q_old = p(Z|X, eta_old), (N, K)
    stepped = started_gmm()
    stepped.fit(faithful, init="given", max_iter=1, tol=0)
    assert b.log_evidence_new == pytest.approx(float(stepped.log_prob(faithful).sum()), abs=1e-9)
    with torch.no_grad():
        log_joint = torch.stack([
            stepped.weights[k].log() + TorchMVN(stepped.means[k], stepped.covariances[k]).log_prob(faithful)
            for k in range(2)], -1)
    bound_new = (r_old * log_joint).sum() - torch.xlogy(r_old, r_old).sum()
    assert float(b.bound[i_new]) == pytest.approx(float(bound_new), abs=1e-9)
    assert b.log_evidence_new > b.log_evidence_old


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "tied"])
def test_em_bound_other_covariances(faithful, covariance_type):
    b = plot.em_bound_path(started_gmm(covariance_type), faithful, num_points=7)
    gap = b.log_evidence - b.bound
    assert (gap >= -1e-9).all() and abs(float(gap[b.t == 0])) < 1e-9
    assert int(b.bound.argmax()) == int((b.t == 1).nonzero())


def _all_axes(result):
    return list(result) if isinstance(result, (list, tuple)) or hasattr(result, "shape") else [result]


def test_every_figure_is_written_headless_and_labelled(faithful, tmp_path):
    backend = matplotlib.get_backend()
    gmm = started_gmm()
    hists = compare(gmm, faithful, max_iter=4, init="given")
    hist = hists["em"]  # compare records the decomposition
    fitted = started_gmm()
    fitted.fit(faithful, init="given", max_iter=20, tol=0)
    figures = {
        "bound.png": plot.plot_em_bound(gmm, faithful, num_points=9, path=tmp_path / "bound.png"),
        "convergence.png": plot.plot_convergence(hists, num_items=272,
                                                 path=tmp_path / "convergence.png"),
        "mixture.png": plot.plot_mixture(fitted, faithful, path=tmp_path / "mixture.png"),
        "decomposition.pdf": plot.plot_decomposition(hist, path=tmp_path / "decomposition.pdf"),
    }
    for name, result in figures.items():
        axes = _all_axes(result)
        assert all(isinstance(ax, Axes) for ax in axes), name
        assert (tmp_path / name).stat().st_size > 1000
        for ax in axes:  # a title and both axes labelled, on every panel
            assert ax.get_title() and ax.get_ylabel(), (name, ax)
        assert axes[-1].get_xlabel(), name
        # more than one series drawn: a legend says which is which
        assert any(ax.get_legend() is not None for ax in axes), name
    # the iterations axis is logarithmic: EM's few iterations and SVI's many both show
    assert figures["convergence.png"][0].get_xscale() == "log"
    assert matplotlib.get_backend() == backend


def test_figures_draw_into_given_axes(faithful):
    fig = Figure()
    ax = fig.add_subplot()
    fitted = started_gmm()
    fitted.fit(faithful, init="given", max_iter=3, tol=0)
    assert plot.plot_mixture(fitted, faithful, ax=ax, labels=("a (min)", "b (min)")) is ax
    assert ax.get_xlabel() == "a (min)" and len(fig.axes) == 1
    pair = Figure().subplots(1, 2)
    hists = compare(started_gmm(), faithful, methods=("em",), max_iter=2, init="given")
    assert tuple(plot.plot_convergence(hists, ax=pair)) == tuple(pair)
    with pytest.raises(ValueError, match="2 Axes"):
        plot.plot_convergence(hists, ax=[ax])


def test_decomposition_series_adds_up(faithful):
    hist = started_gmm().fit(faithful, init="given", max_iter=5, tol=0, record_decomposition=True)
    t, log_evidence, elbo, kl = plot.decomposition_series(hist)
    assert t.tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5]
    assert torch.allclose(elbo + kl, log_evidence, rtol=0, atol=1e-9)
    assert (kl[0::2].abs() < 1e-9).all() and (kl[1::2] > 0).all()
    with pytest.raises(ValueError, match="record_decomposition"):
        plot.decomposition_series(started_gmm().fit(faithful, init="given", max_iter=2))


def test_convergence_series_is_aligned(faithful):
    hists = compare(started_gmm(), faithful, methods=("em", "viterbi"), max_iter=3, init="given")
    for hist in hists.values():
        iters, secs, ll = plot.convergence_series(hist)
        assert len(iters) == len(secs) == len(ll) == 4
        assert float(secs[0]) == 0.0 and (secs[1:] >= secs[:-1]).all()
        assert float(ll[0]) == pytest.approx(float(started_gmm().log_prob(faithful).sum()), abs=1e-9)
    # EM's own series is its log-likelihood; Viterbi's is the true evidence, not log p(X, Z_hat).
    v = hists["viterbi"]
    assert plot.convergence_series(v)[2][1:-1].tolist() == v.records["log_evidence"][1:]
    assert v.records["log_evidence"][0] > v.log_likelihood[0]


def test_plot_mixture_rejects_non_2d():
    gmm = GaussianMixture(2, dim=3)
    with pytest.raises(ValueError, match="2-D"):
        plot.plot_mixture(gmm, torch.randn(10, 3))
