"""The vectorised recursions against brute force over all state paths."""

import itertools
import math

import pytest
import torch

from pyroem.ops.recursions import forward_backward, viterbi


def _problem(K=3, T=6, B=3, seed=0, zero=True):
    g = torch.Generator().manual_seed(seed)
    pi = torch.rand(K, generator=g, dtype=torch.float64)
    A = torch.rand(K, K, generator=g, dtype=torch.float64)
    if zero:
        A[0, K - 1] = 0.0  # a structural zero
    pi, A = pi / pi.sum(), A / A.sum(-1, keepdim=True)
    le = 2 * torch.randn(B, T, K, generator=g, dtype=torch.float64)
    return pi, A, le


def _brute(pi, A, le, n, final):
    """All paths of one chain of length n: (log p(x), gamma, xi, best, argmax path)."""
    K = pi.shape[0]
    paths, scores = [], []
    for z in itertools.product(range(K), repeat=n):
        if final is not None and not final[z[-1]]:
            continue
        s = pi[z[0]].log() + le[0, z[0]]
        for t in range(1, n):
            s = s + A[z[t - 1], z[t]].log() + le[t, z[t]]
        paths.append(z)
        scores.append(s)
    scores = torch.stack(scores)
    logz = scores.logsumexp(0)
    w = (scores - logz).exp()
    gamma = torch.zeros(n, K, dtype=torch.float64)
    xi = torch.zeros(K, K, dtype=torch.float64)
    for wi, z in zip(w, paths):
        for t in range(n):
            gamma[t, z[t]] += wi
        for t in range(1, n):
            xi[z[t - 1], z[t]] += wi
    i = int(scores.argmax())
    return logz, gamma, xi, scores[i], list(paths[i])


@pytest.mark.parametrize("final", [None, [False, True, True]])
@pytest.mark.parametrize("block_length", [None, 1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_backward_and_viterbi_equal_brute_force(final, block_length, dtype):
    pi, A, le = _problem()
    lengths = torch.tensor([6, 4, 1])
    fin = None if final is None else torch.tensor(final)
    tol, ptol = (1e-10, 1e-12) if dtype == torch.float64 else (1e-5, 1e-5)
    ll, gamma, xi = forward_backward(pi.log().to(dtype), A.to(dtype), le.to(dtype), lengths,
                                     fin, block_length)
    best, path = viterbi(pi.log().to(dtype), A.log().to(dtype), le.to(dtype), lengths, fin,
                         block_length)
    assert gamma.dtype == xi.dtype == dtype
    xi_ref = torch.zeros_like(xi, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        logz, g, x, top, z = _brute(pi, A, le[b], n, fin)
        xi_ref += x
        assert ll[b].item() == pytest.approx(logz.item(), abs=tol)
        assert torch.allclose(gamma[b, :n].double(), g, atol=ptol)
        assert (gamma[b, n:] == 0).all()
        assert best[b].item() == pytest.approx(top.item(), abs=tol)
        assert path[b, :n].tolist() == z and (path[b, n:] == -1).all()
        if fin is not None:
            assert fin[path[b, n - 1]]
    assert torch.allclose(xi.double(), xi_ref, atol=ptol)
    assert xi[0, 2] == 0  # the structural zero gets no expected transitions


def test_blocked_long_chain_equals_unblocked():
    pi, A, le = _problem(K=4, T=3000, B=2, seed=1)
    lengths = torch.tensor([3000, 1777])
    ref = forward_backward(pi.log(), A, le, lengths, None, 3000)
    got = forward_backward(pi.log(), A, le, lengths, None, 37)
    assert torch.allclose(ref[0], got[0], rtol=1e-12)
    assert torch.allclose(ref[1], got[1], atol=1e-10)
    assert torch.allclose(ref[2], got[2], rtol=1e-9)
    v_ref = viterbi(pi.log(), A.log(), le, lengths, None, 3000)
    v_got = viterbi(pi.log(), A.log(), le, lengths, None, 37)
    assert torch.allclose(v_ref[0], v_got[0], rtol=1e-12)
    assert torch.equal(v_ref[1], v_got[1])


def test_float32_long_sequence_close_to_float64():
    # a sticky 8-state chain observed through informative emissions: 1e5 frames (1e6 in bench/hmm.py)
    g = torch.Generator().manual_seed(0)
    K, T = 8, 100_000
    A = torch.full((K, K), 0.02 / (K - 1), dtype=torch.float64) + 0.98 * torch.eye(K, dtype=torch.float64)
    A = A / A.sum(-1, keepdim=True)
    pi = torch.full((K,), 1.0 / K, dtype=torch.float64)
    le = -0.5 * (torch.randn(1, T, K, generator=g, dtype=torch.float64) * 3) ** 2 - 40.0
    lengths = torch.tensor([T])
    ll64, g64, xi64 = forward_backward(pi.log(), A, le, lengths)
    ll32, g32, xi32 = forward_backward(pi.log().float(), A.float(), le.float(), lengths)
    assert torch.isfinite(ll32).all() and not g32.isnan().any()
    assert abs(ll32.item() - ll64.item()) <= 1e-5 * abs(ll64.item())
    assert (g32.double() - g64).abs().max() < 1e-3
    assert torch.allclose(xi32.double(), xi64, rtol=1e-3, atol=1e-2)
    best64, path64 = viterbi(pi.log(), A.log(), le, lengths)
    best32, path32 = viterbi(pi.log().float(), A.log().float(), le.float(), lengths)
    assert abs(best32.item() - best64.item()) <= 1e-5 * abs(best64.item())
    assert (path32 == path64).double().mean() > 0.999


def test_impossible_data_gives_minus_inf_not_nan():
    pi = torch.tensor([1.0, 0.0], dtype=torch.float64)
    A = torch.eye(2, dtype=torch.float64)
    le = torch.tensor([[[0.0, 0.0], [-math.inf, 0.0]]], dtype=torch.float64)
    ll, _gamma, xi = forward_backward(pi.log(), A, le, torch.tensor([2]))
    assert ll.item() == -math.inf
    assert not xi.isnan().any()


@pytest.mark.parametrize("T, block_length", [(100, None), (100, 7), (3000, None)])
def test_backward_ratios_beyond_the_float_range_give_no_nan(T, block_length):
    # An absorbing chain that must stay in state 0 while every frame prefers state 1 by one
    # nat: the scaled backward ratio p(future | z = 1) / p(future | past) = e^(T - 1)
    # exceeds float32's range at T = 100 and float64's at T = 3000 (a state the forward
    # pass gives zero probability), unblocked, in blocks, and in the automatic blocks of a
    # long chain. Exactly: log p = -T, gamma = [1, 0], xi = [[T - 1, 0], [0, 0]].
    le = torch.tensor([[-1.0, 0.0]]).expand(1, T, 2)
    for dtype in (torch.float64, torch.float32):
        pi = torch.tensor([1.0, 0.0], dtype=dtype)
        ll, gamma, xi = forward_backward(pi.log(), torch.eye(2, dtype=dtype), le.to(dtype),
                                         torch.tensor([T]), None, block_length)
        assert ll.item() == pytest.approx(-T, rel=1e-6)
        assert torch.allclose(gamma[0], torch.tensor([1.0, 0.0], dtype=dtype).expand(T, 2))
        assert torch.allclose(xi, torch.tensor([[T - 1.0, 0.0], [0.0, 0.0]], dtype=dtype),
                              rtol=1e-5)


def test_subnormals_flushed_inside_the_recursion_only():
    from pyroem.ops.denormals import flush_denormals, flushing

    tiny = torch.tensor(torch.finfo(torch.float32).tiny)
    assert not flushing() and (tiny / 4) > 0  # the default: subnormals kept
    with flush_denormals():
        assert flushing() and (tiny / 4) == 0
    assert not flushing()
    pi, A, le = _problem(K=12, T=400, B=2, seed=2)  # 12 states: the torch recursions
    forward_backward(pi.log().float(), A.float(), le.float(), torch.tensor([400, 300]))
    assert not flushing()  # restored after the recursion
    torch.set_flush_denormal(True)  # a caller that flushes keeps flushing
    try:
        forward_backward(pi.log().float(), A.float(), le.float(), torch.tensor([400, 300]))
        assert flushing()
    finally:
        torch.set_flush_denormal(False)


def test_flushed_exp_keeps_zeros_and_normal_results():
    from pyroem.ops.scaled import flushed_exp_

    x = torch.tensor([0.0, -1.5, -80.0, -86.0, -87.0, -100.0, -1e4, -math.inf])
    got = flushed_exp_(x.clone())
    ref = x.double().exp()
    normal = ref > math.e * torch.finfo(torch.float32).tiny
    assert torch.allclose(got[normal].double(), ref[normal], rtol=1e-6)  # exp where normal
    assert (got[~normal] == 0).all()  # below e * tiny: zero, exact zeros included
    assert normal.tolist() == [True, True, True, True, False, False, False, False]
    x64 = torch.tensor([-1.0, -800.0, -math.inf], dtype=torch.float64)
    assert torch.equal(flushed_exp_(x64.clone()), x64.exp())  # float64: plain exp


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_block_stitching_in_torch_equals_numpy(dtype):
    """Off the CPU the block boundaries are stitched in torch (the data stay on the
    device); on CPU tensors both routes must give the same vectors, impossible states
    (a zero entry) included."""
    from pyroem.ops import blocked

    g = torch.Generator().manual_seed(3)
    B, nb, K = 3, 6, 4
    P = torch.rand(B, nb, K, K, generator=g, dtype=dtype)
    P[:, 2, :, 1] = 0  # state 1 unreachable after block 2
    R = torch.randn(B, nb, K, generator=g, dtype=dtype)
    C = torch.randn(B, nb, generator=g, dtype=dtype)
    v0 = torch.rand(B, K, generator=g, dtype=dtype)
    v0 = v0 / v0.sum(-1, keepdim=True)
    last = torch.rand(B, K, generator=g, dtype=dtype)
    tol = dict(rtol=1e-5, atol=0) if dtype == torch.float32 else dict(rtol=1e-12, atol=0)
    forward = blocked._stitch(v0, P, R)
    torch.testing.assert_close(blocked._stitch_torch(v0, P, R), forward, **tol)
    assert (forward[:, 3, 1] == 0).all()
    torch.testing.assert_close(blocked._stitch_backward_torch(last, P, R, C),
                               blocked._stitch_backward(last, P, R, C), **tol)
