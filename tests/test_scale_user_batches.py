"""fit_em over batches (a user's own Pyro model): equal to the in-memory fit, refusals
and bad batches named, parameters untouched by a failed pass."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints
from torch.utils.data import DataLoader, TensorDataset

from pyroem.infer import fit_em

F64 = torch.float64
K, D = 3, 2


def mixture(x):
    """A full-covariance Gaussian mixture written by the user."""
    weights = pyro.param("weights", torch.ones(K, dtype=x.dtype) / K,
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([[-2.0, 0.0], [0.0, 1.0], [2.0, -1.0]], dtype=x.dtype))
    tril = pyro.param("tril", torch.eye(D, dtype=x.dtype).expand(K, D, D).clone(),
                      constraint=constraints.lower_cholesky)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.MultivariateNormal(locs[z], scale_tril=tril[z]), obs=x)


def diag_mixture(x):
    """A mixture of diagonal Normals (loc and scale in two phases)."""
    weights = pyro.param("weights", torch.ones(K, dtype=x.dtype) / K,
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([[-2.0, 0.0], [0.0, 1.0], [2.0, -1.0]], dtype=x.dtype))
    scales = pyro.param("scales", torch.ones(K, D, dtype=x.dtype),
                        constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scales[z]).to_event(1), obs=x)


def chain(x):
    """A two-state HMM over categorical symbols, sequences in a plate (rows of ``x``)."""
    start = pyro.param("start", torch.tensor([0.6, 0.4], dtype=F64),
                       constraint=constraints.simplex)
    trans = pyro.param("trans", torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=F64),
                       constraint=constraints.simplex)
    emit = pyro.param("emit", torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]], dtype=F64),
                      constraint=constraints.simplex)
    with pyro.plate("sequences", x.shape[0]):
        z = pyro.sample("z_0", dist.Categorical(start))
        pyro.sample("x_0", dist.Categorical(emit[z]), obs=x[:, 0])
        for t in pyro.markov(range(1, x.shape[1])):
            z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
            pyro.sample(f"x_{t}", dist.Categorical(emit[z]), obs=x[:, t])


def _points(n=90, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-2.0, 0.5], [0.5, 1.5], [2.5, -1.0]], dtype=dtype)
    z = torch.randint(0, K, (n,), generator=g)
    return centres[z] + 0.6 * torch.randn(n, D, generator=g, dtype=dtype)


def _symbols(s=12, t=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (s, t), generator=g)


def _fit(model, *args, **kw):
    pyro.clear_param_store()
    hist = fit_em(model, *args, max_iter=kw.pop("max_iter", 8), tol=0.0, **kw)
    return hist, {n: pyro.param(n).detach().clone() for n in pyro.get_param_store()}


def _assert_same(a, b, atol=1e-10, ll_atol=1e-9):
    (ha, pa), (hb, pb) = a, b
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.allclose(pa[name], pb[name], rtol=0, atol=atol), name
    ll_a, ll_b = torch.tensor(ha.log_likelihood, dtype=F64), torch.tensor(hb.log_likelihood, dtype=F64)
    assert torch.allclose(ll_a, ll_b, rtol=0, atol=ll_atol)
    assert abs(ha.final_log_likelihood - hb.final_log_likelihood) < ll_atol


@pytest.mark.parametrize("model", [mixture, diag_mixture])
def test_mixture_over_batches_equals_the_in_memory_fit(model):
    x = _points()
    memory = _fit(model, x)
    batches = [x[:25], x[25:31], x[31:]]  # uneven batches
    _assert_same(memory, _fit(model, batches=batches))
    loader = DataLoader(TensorDataset(x), batch_size=40)  # yields [tensor] lists
    _assert_same(memory, _fit(model, batches=loader))
    hist = memory[0]
    assert all(b >= a - 1e-9 for a, b in zip(hist.log_likelihood, hist.log_likelihood[1:]))
    assert hist.records["strategies"][-1]["locs"].startswith("closed-form")


def test_chain_with_sequences_split_over_batches_equals_the_in_memory_fit():
    x = _symbols()
    memory = _fit(chain, x)
    _assert_same(memory, _fit(chain, batches=[(x[:5],), (x[5:6],), (x[6:],)]))
    assert memory[0].records["strategies"][-1]["trans"].startswith("closed-form")


def test_float32_batches_run_and_agree_with_memory():
    x = _points(dtype=torch.float32)
    memory = _fit(mixture, x, max_iter=4)
    _assert_same(memory, _fit(mixture, batches=[x[:50], x[50:]], max_iter=4), atol=1e-4,
                 ll_atol=1e-2)


def _params():
    return {n: pyro.param(n).detach().clone() for n in pyro.get_param_store()}


def _started(model, x):
    """Parameters initialised (one iteration in memory), to check a failed fit keeps them."""
    pyro.clear_param_store()
    fit_em(model, x, max_iter=1, tol=0.0)
    return _params()


@pytest.mark.parametrize("bad, message", [
    (lambda x: x[:0], "batch 1: .*empty"),
    (lambda x: x[:10, :1], "batch 1"),            # wrong dimension
    (lambda x: x[:10].float(), "batch 1: .*float32"),  # wrong dtype
    (lambda x: x[:10, :, None], "batch 1: .*dims"),
])
def test_a_bad_batch_mid_pass_is_named_and_changes_nothing(bad, message):
    x = _points()
    before = _started(mixture, x)
    with pytest.raises(ValueError, match=message):
        fit_em(mixture, batches=[x[:40], bad(x), x[40:]], max_iter=3)
    after = _params()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_a_loader_that_yields_nothing_and_one_shot_iterators_are_refused():
    x = _points()
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="yielded nothing"):
        fit_em(mixture, batches=DataLoader(TensorDataset(x[:0]), batch_size=4))
    with pytest.raises(ValueError, match="re-iterable"):
        fit_em(mixture, batches=iter([x]))
    with pytest.raises(ValueError, match="not both"):
        fit_em(mixture, x, batches=[x])


def numerical(x):
    """``loc`` reaches the site through exp: no rule inverts that (numerical route)."""
    loc = pyro.param("loc", torch.tensor(0.0, dtype=x.dtype))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(loc.exp(), 1.0), obs=x)


def with_prior(x):
    weights = pyro.param("weights", torch.ones(K, dtype=x.dtype) / K,
                         constraint=constraints.simplex)
    pyro.sample("prior", dist.Dirichlet(2.0 * torch.ones(K, dtype=x.dtype)), obs=weights)
    locs = pyro.param("locs", torch.tensor([[-2.0, 0.0], [0.0, 1.0], [2.0, -1.0]], dtype=x.dtype))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0).to_event(1), obs=x)


@pytest.mark.parametrize("model, data, message", [
    (numerical, lambda: torch.randn(20, dtype=F64, generator=torch.Generator().manual_seed(3)),
     "'loc' has no closed-form update"),
    (with_prior, _points, "'weights' has a conjugate prior"),
])
def test_a_model_whose_m_step_cannot_be_split_is_refused(model, data, message):
    x = data()
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=message):
        fit_em(model, batches=[x[:10], x[10:]], max_iter=2)
    # in memory the same model fits
    pyro.clear_param_store()
    fit_em(model, x, max_iter=2, tol=0.0)
