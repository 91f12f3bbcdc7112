"""EM across two processes (torch.distributed, gloo on loopback): every rank ends with the
parameters of one process fitting all shards, to 1e-10; a bad shard is an error on every
rank that names the rank."""

import datetime
import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyroem.datasets import load_old_faithful
from pyroem.models import PLDA, GaussianHMM, GaussianMixture

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD = 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params(m):
    return {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith("q_")}


def _shard(items, rank):
    return items[rank::WORLD]


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    results = {}
    try:
        for case, run in CASES.items():  # one process group for every case: spawn once
            try:
                results[case] = run(rank)
            except ValueError as e:
                results[case] = {"error": str(e)}
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"{rank}.pt"))


def _gmm_case(rank):
    x = load_old_faithful()
    state = GaussianMixture(3, 2).initialize(x, seed=0).state_dict()
    m = GaussianMixture(3, 2)
    m.load_state_dict(state)
    hist = m.fit(_shard(x, rank), init="given", max_iter=10, tol=0)
    fresh = GaussianMixture(3, 2)  # starting values from rank 0's shard, broadcast
    fresh.fit([_shard(x, rank)[:60], _shard(x, rank)[60:]], seed=rank, max_iter=3, tol=0)
    return {"params": _params(m), "ll": hist.log_likelihood, "fresh": _params(fresh)}


def _hmm_case(rank):
    windows = list(load_old_faithful().split(16))
    state = GaussianHMM(2, 2).initialize(windows, seed=0).state_dict()
    m = GaussianHMM(2, 2)
    m.load_state_dict(state)
    hist = m.fit([_shard(windows, rank)], init="given", max_iter=8, tol=0)
    return {"params": _params(m), "ll": hist.log_likelihood}


def _bad_case(rank):
    x = load_old_faithful()
    m = GaussianMixture(2, 2).initialize(x, seed=0)
    shard = _shard(x, rank) if rank == 0 else _shard(x, rank)[:, :1]
    m.fit(shard, init="given", max_iter=3)
    return {}


def _speakers():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20, 3, generator=g, dtype=torch.float64) * 2 + 5
    lab = torch.arange(20).repeat_interleave(5)
    x = z[lab] + torch.randn(100, 3, generator=g, dtype=torch.float64)
    return x, [f"spk{int(v)}" for v in lab]


def _plda_case(rank):
    x, names = _speakers()  # every speaker spread over both ranks
    m = PLDA(3)
    m.fit(_shard(x, rank), _shard(names, rank), max_iter=6, tol=0)
    return {"params": _params(m)}


def user_mixture(x):
    """A user's mixture whose starting means are its data's first rows (so every rank
    must take rank 0's)."""
    import pyro
    import pyro.distributions as pdist
    from torch.distributions import constraints
    weights = pyro.param("weights", torch.ones(3, dtype=x.dtype) / 3,
                         constraint=constraints.simplex)
    locs = pyro.param("locs", x[:3].clone())
    tril = pyro.param("tril", torch.eye(x.shape[1], dtype=x.dtype).expand(3, -1, -1).clone(),
                      constraint=constraints.lower_cholesky)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", pdist.Categorical(weights))
        pyro.sample("x", pdist.MultivariateNormal(locs[z], scale_tril=tril[z]), obs=x)


def _user_params():
    import pyro
    return {n: pyro.param(n).detach().clone() for n in ("weights", "locs", "tril")}


def _fit_em_case(rank):
    import pyro

    from pyroem.infer import fit_em
    pyro.clear_param_store()
    shard = _shard(load_old_faithful(), rank)
    hist = fit_em(user_mixture, batches=[shard[:50], shard[50:]], max_iter=6, tol=0)
    out = {"params": _user_params(), "ll": hist.log_likelihood}
    pyro.clear_param_store()
    bad = shard if rank == 0 else shard[:, :1]  # rank 1: another dimension
    try:
        fit_em(user_mixture, batches=[bad[:50], bad[50:]], max_iter=2, tol=0)
    except ValueError as e:
        out["error"] = str(e)
    return out


CASES = {"gmm": _gmm_case, "hmm": _hmm_case, "plda": _plda_case, "bad": _bad_case,
         "fit_em": _fit_em_case}


@pytest.fixture(scope="module")
def spawned():
    """Every case's results on each of the two ranks (one spawn for the module)."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(out, f"{r}.pt")) for r in range(WORLD)]


def _assert_same(a, b, tol=1e-10):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=tol), k


def test_two_processes_fit_a_gmm_like_one_process_on_all_shards(spawned):
    results = [r["gmm"] for r in spawned]
    x = load_old_faithful()
    ref = GaussianMixture(3, 2).initialize(x, seed=0)
    hist = ref.fit(torch.cat([_shard(x, r) for r in range(WORLD)]), init="given",
                   max_iter=10, tol=0)
    for r in results:
        _assert_same(r["params"], _params(ref))
        assert max(abs(a - b) for a, b in zip(r["ll"], hist.log_likelihood)) < 1e-9
    _assert_same(results[0]["fresh"], results[1]["fresh"], tol=0)  # identical on every rank


def test_two_processes_fit_an_hmm_like_one_process_on_all_shards(spawned):
    results = [r["hmm"] for r in spawned]
    windows = list(load_old_faithful().split(16))
    ref = GaussianHMM(2, 2).initialize(windows, seed=0)
    ref.fit([_shard(windows, r) for r in range(WORLD)], init="given", max_iter=8, tol=0)
    for r in results:
        _assert_same(r["params"], _params(ref))


def test_a_shard_of_another_dimension_is_an_error_naming_the_rank_on_every_rank(spawned):
    results = [r["bad"] for r in spawned]
    assert "rank 1 failed" in results[0]["error"] and "shape" in results[0]["error"]
    assert "shape (N, 2)" in results[1]["error"]  # rank 1 raises its own error


def test_two_processes_fit_plda_with_speakers_spread_over_both(spawned):
    results = [r["plda"] for r in spawned]
    x, names = _speakers()
    ref = PLDA(3)
    ref.fit(x, names, max_iter=6, tol=0)
    for r in results:
        _assert_same(r["params"], _params(ref))


def test_two_processes_fit_a_user_model_by_fit_em_like_one_process(spawned):
    import pyro

    from pyroem.infer import fit_em
    results = [r["fit_em"] for r in spawned]
    x = load_old_faithful()
    pyro.clear_param_store()
    # rank 0's first rows start the means on every rank, as they start this fit
    hist = fit_em(user_mixture, torch.cat([_shard(x, r) for r in range(WORLD)]),
                  max_iter=6, tol=0)
    ref = _user_params()
    for r in results:
        _assert_same(r["params"], ref)
        assert max(abs(a - b) for a, b in zip(r["ll"], hist.log_likelihood)) < 1e-9
    assert all("rank 1" in r["error"] for r in results)
