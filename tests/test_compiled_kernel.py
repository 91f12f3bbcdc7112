"""The compiled forward-backward for chains with few states (pyroem.ops.compiled) against
the pure-torch recursions (the reference), brute force and hmmlearn; its fallback."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from pyroem.ops import compiled
from pyroem.ops.recursions import forward_backward, forward_backward_symbols

pytestmark = pytest.mark.skipif(compiled.library() is None,
                                reason="the compiled kernel could not be built here")


def _problem(K, T, B, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pi = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    A = torch.rand(K, K, generator=g, dtype=torch.float64) + 0.05
    if K > 1:
        A[0, K - 1] = 0.0  # a structural zero
    pi, A = pi / pi.sum(), A / A.sum(-1, keepdim=True)
    le = 3 * torch.randn(B, T, K, generator=g, dtype=torch.float64)
    return pi.log().to(dtype), A.to(dtype), le.to(dtype)


@pytest.mark.parametrize("K", [1, 2, 3, 4, 8, 12, 16])  # 12: the kernel's general case
@pytest.mark.parametrize("final", [False, True])
def test_kernel_equals_torch_recursion_float64(K, final):
    log_pi, A, le = _problem(K, 60, 4, seed=K)
    lengths = torch.tensor([60, 41, 1, 7])
    fin = (torch.arange(K) % 2 == 0) if final else None
    fw = None if fin is None else fin.double()
    for block_length in (60, 5):  # the one-block and the blocked torch recursions
        ref = forward_backward(log_pi, A, le, lengths, fin, block_length)
        got = compiled.compiled_forward_backward(log_pi, A, le, lengths, fw)
        assert torch.allclose(got[0], ref[0], rtol=1e-12, atol=1e-12)
        assert torch.allclose(got[1], ref[1], rtol=0, atol=1e-12)
        assert torch.allclose(got[2], ref[2], rtol=1e-12, atol=1e-12)
    assert (got[1][1, 41:] == 0).all() and (got[1][2, 1:] == 0).all()
    if K > 1:
        assert got[2][0, K - 1] == 0  # no expected transitions through a structural zero


@pytest.mark.parametrize("K", [2, 5, 8])
def test_kernel_float32_close_to_float64(K):
    log_pi, A, le = _problem(K, 2000, 2, seed=10 + K)
    lengths = torch.tensor([2000, 1500])
    ref = forward_backward(log_pi, A, le, lengths, None, 2000)
    got = compiled.compiled_forward_backward(log_pi.float(), A.float(), le.float(), lengths, None)
    assert got[1].dtype == got[2].dtype == torch.float32
    assert torch.allclose(got[0], ref[0], rtol=1e-5)
    assert (got[1].double() - ref[1]).abs().max() < 1e-4
    # float32 renormalises each frame: gamma sums to one on data frames
    assert torch.allclose(got[1][0].sum(-1), torch.ones(2000), atol=1e-5)
    assert torch.allclose(got[2].double(), ref[2], rtol=1e-3, atol=1e-2)


def test_routing_by_states_and_layout(monkeypatch):
    calls = []
    real = compiled.compiled_forward_backward

    def spy(*args, **kwargs):
        calls.append(args[2].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr("pyroem.ops.recursions.compiled_forward_backward", spy)
    for K, B, T, kernel in [(4, 50, 20, True), (16, 1, 5000, True), (16, 64, 20, False),
                            (17, 1, 5000, False)]:
        log_pi, A, le = _problem(K, T, B, seed=K)
        lengths = torch.full((B,), T)
        calls.clear()
        got = forward_backward(log_pi, A, le, lengths)
        assert bool(calls) == kernel, (K, B, T)
        ref = forward_backward(log_pi, A, le, lengths, None, T if B > 1 else 71)
        assert torch.allclose(got[0], ref[0], rtol=1e-12)
        assert torch.allclose(got[1], ref[1], atol=1e-10)


def test_kernel_equals_brute_force():
    log_pi, A, le = _problem(3, 6, 2, seed=3)
    lengths = torch.tensor([6, 4])
    ll, gamma, xi = compiled.compiled_forward_backward(log_pi, A, le, lengths, None)
    xi_ref = torch.zeros(3, 3, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        scores, paths = [], list(itertools.product(range(3), repeat=n))
        for z in paths:
            s = log_pi[z[0]] + le[b, 0, z[0]]
            for t in range(1, n):
                s = s + A[z[t - 1], z[t]].log() + le[b, t, z[t]]
            scores.append(s)
        scores = torch.stack(scores)
        w = (scores - scores.logsumexp(0)).exp()
        g = torch.zeros(n, 3, dtype=torch.float64)
        for wi, z in zip(w, paths):
            g[torch.arange(n), list(z)] += wi
            for t in range(1, n):
                xi_ref[z[t - 1], z[t]] += wi
        assert ll[b].item() == pytest.approx(scores.logsumexp(0).item(), abs=1e-10)
        assert torch.allclose(gamma[b, :n], g, atol=1e-12)
    assert torch.allclose(xi, xi_ref, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symbol_table_equals_dense_emissions(dtype):
    g = torch.Generator().manual_seed(5)
    K, M, B, T = 4, 6, 3, 500
    log_pi, A, _ = _problem(K, 2, 1, seed=5, dtype=dtype)
    probs = torch.rand(K, M, generator=g, dtype=torch.float64)
    probs[1, 2] = 0.0  # a symbol that state 1 never emits
    table = (probs / probs.sum(-1, keepdim=True)).log().T.contiguous().to(dtype)  # (M, K)
    symbols = torch.randint(0, M, (B, T), generator=g)
    lengths = torch.tensor([500, 333, 2])
    ref = forward_backward(log_pi, A, table[symbols], lengths, None, T)  # torch, dense
    got = forward_backward_symbols(log_pi, A, table, symbols, lengths)  # kernel, table
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(got[0], ref[0], rtol=tol)
    assert torch.allclose(got[1], ref[1], atol=10 * tol)
    assert torch.allclose(got[2], ref[2], rtol=10 * tol, atol=10 * tol)
    assert (got[1][:, :, 1][symbols == 2] == 0).all()
    # the torch route of the same function (blocked) agrees too
    torch_route = forward_backward_symbols(log_pi, A, table, symbols, lengths, block_length=50)
    assert torch.allclose(torch_route[0], ref[0], rtol=tol)


def test_long_chain_no_underflow_and_impossible_data():
    # 2e5 frames of a sticky 4-state chain: log p far below the float range, finite
    log_pi, A, le = _problem(4, 200_000, 1, seed=7)
    lengths = torch.tensor([200_000])
    for dtype in (torch.float64, torch.float32):
        ll, gamma, xi = compiled.compiled_forward_backward(
            log_pi.to(dtype), A.to(dtype), le.to(dtype), lengths, None)
        assert torch.isfinite(ll).all() and torch.isfinite(gamma).all() and torch.isfinite(xi).all()
    ref = forward_backward(log_pi, A, le, lengths, None, 200)  # torch, blocked
    assert ll.item() == pytest.approx(ref[0].item(), rel=1e-5)
    pi = torch.tensor([1.0, 0.0], dtype=torch.float64)
    le = torch.tensor([[[0.0, 0.0], [-math.inf, 0.0]]], dtype=torch.float64)
    ll, gamma, xi = compiled.compiled_forward_backward(pi.log(), torch.eye(2, dtype=torch.float64),
                                                       le, torch.tensor([2]), None)
    assert ll.item() == -math.inf and not gamma.isnan().any() and not xi.isnan().any()


def test_turned_off_or_unbuildable_runs_torch(monkeypatch):
    log_pi, A, le = _problem(3, 50, 2, seed=9)
    lengths = torch.tensor([50, 20])
    ref = forward_backward(log_pi, A, le, lengths, None, 50)

    def refuse(*args):
        raise AssertionError("the compiled kernel ran")

    monkeypatch.setattr("pyroem.ops.recursions.compiled_forward_backward", refuse)
    monkeypatch.setenv("PYROEM_COMPILED", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # turned off on purpose: no warning
        got = forward_backward(log_pi, A, le, lengths)
    assert torch.allclose(got[0], ref[0], rtol=1e-12)
    monkeypatch.delenv("PYROEM_COMPILED")

    def no_compiler():
        raise OSError("no C compiler")

    monkeypatch.setattr(compiled, "_build", no_compiler)
    monkeypatch.setattr(compiled, "_state", {"lib": None, "tried": False})
    with pytest.warns(RuntimeWarning, match="could not be built.*no C compiler"):
        got = forward_backward(log_pi, A, le, lengths)
    assert torch.allclose(got[0], ref[0], rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        forward_backward(log_pi, A, le, lengths)


def test_categorical_hmm_matches_hmmlearn_through_the_table():
    hl = pytest.importorskip("hmmlearn.hmm")
    from pyroem.infer import EM
    from pyroem.models import CategoricalHMM

    rng = np.random.default_rng(0)
    K, M = 3, 4
    start, trans = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K) * 3, size=K)
    emit = rng.dirichlet(np.ones(M), size=K)
    seqs = [rng.integers(0, M, n) for n in (400, 250)]
    ref = hl.CategoricalHMM(K, init_params="", params="ste", n_iter=1, implementation="scaling")
    ref.n_features = M
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, trans, emit
    x = np.concatenate(seqs).reshape(-1, 1)
    ll_ref = ref.score(x, [400, 250])
    ref.fit(x, [400, 250])
    model = CategoricalHMM(K, M).double()
    model.start_probs, model.trans_probs = torch.tensor(start), torch.tensor(trans)
    model.emission_probs = torch.tensor(emit)
    args = model.prepare([torch.tensor(s) for s in seqs])
    loss = EM(model.model, model.guide).step(*args)
    assert -loss == pytest.approx(ll_ref, rel=1e-12)
    assert np.allclose(model.trans_probs.detach().numpy(), ref.transmat_, atol=1e-10)
    assert np.allclose(model.emission_probs.detach().numpy(), ref.emissionprob_, atol=1e-10)
