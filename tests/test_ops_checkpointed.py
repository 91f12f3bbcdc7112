"""Checkpointed forward-backward: the unchunked recursion's results, in bounded blocks;
a zero transition and an impossible state at a block boundary included."""

import itertools

import pytest
import torch

from pyroem.ops.checkpointed import checkpointed_forward_backward
from pyroem.ops.recursions import forward_backward

F64 = torch.float64


def _chain(B, T, K, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(K, generator=g, dtype=F64).softmax(-1)
    trans = (2 * torch.rand(K, K, generator=g, dtype=F64)).softmax(-1)
    log_emit = 3 * torch.randn(B, T, K, generator=g, dtype=F64) - 50  # far below 1
    return start.log().to(dtype), trans.to(dtype), log_emit.to(dtype)


def _run(log_start, trans, log_emit, L):
    B, T, K = log_emit.shape
    gamma = torch.full((B, T, K), float("nan"), dtype=log_emit.dtype)
    calls = []

    def emissions(a, b):
        calls.append((a, b))
        return log_emit[:, a:b]

    def visit(a, b, g):
        assert b - a <= L and g.shape == (B, b - a, K)
        gamma[:, a:b] = g
    log_ev, xi = checkpointed_forward_backward(log_start, trans, emissions, T, L, visit)
    assert all(b - a <= L for a, b in calls)  # no emission block beyond L steps is read
    return log_ev, gamma, xi


def _brute_force(log_start, trans, log_emit):
    """Sums over every state path of a tiny chain."""
    B, T, K = log_emit.shape
    paths = torch.tensor(list(itertools.product(range(K), repeat=T)))
    lp = log_start[paths[:, 0]] + trans.log()[paths[:, :-1], paths[:, 1:]].sum(-1)
    joint = lp + log_emit[:, torch.arange(T), paths].sum(-1)  # (B, paths)
    log_ev = joint.logsumexp(-1)
    w = (joint - log_ev[:, None]).exp()
    gamma = torch.zeros(B, T, K, dtype=F64)
    xi = torch.zeros(K, K, dtype=F64)
    for t in range(T):
        gamma[:, t] = (w[..., None] * torch.nn.functional.one_hot(paths[:, t], K)).sum(1)
        if t:
            pair = torch.nn.functional.one_hot(paths[:, t - 1] * K + paths[:, t], K * K)
            xi += (w[..., None] * pair).sum((0, 1)).reshape(K, K)
    return log_ev, gamma, xi


@pytest.mark.parametrize("L", [1, 2, 3, 7])
def test_equals_a_brute_force_sum_over_all_paths(L):
    log_start, trans, log_emit = _chain(1, 7, 3)
    log_ev, gamma, xi = _run(log_start, trans, log_emit, L)
    ref_ev, ref_gamma, ref_xi = _brute_force(log_start, trans, log_emit)
    assert torch.allclose(log_ev, ref_ev, rtol=0, atol=1e-10)
    assert torch.allclose(gamma, ref_gamma, rtol=0, atol=1e-10)
    assert torch.allclose(xi, ref_xi, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype, tol", [(F64, 1e-10), (torch.float32, 2e-3)])
@pytest.mark.parametrize("L", [1, 64, 999, 5000])
def test_long_chain_equals_the_unchunked_forward_backward(dtype, tol, L):
    log_start, trans, log_emit = _chain(1, 3000, 4, seed=1, dtype=dtype)
    log_ev, gamma, xi = _run(log_start, trans, log_emit, L)
    ref_ev, ref_gamma, ref_xi = forward_backward(log_start, trans, log_emit,
                                                 torch.tensor([3000]))
    assert torch.allclose(log_ev, ref_ev.to(F64), rtol=1e-12 if dtype == F64 else 1e-6, atol=0)
    assert torch.allclose(gamma, ref_gamma.to(dtype), rtol=0, atol=tol)
    assert torch.allclose(xi, ref_xi.to(dtype), rtol=1e-10 if dtype == F64 else 1e-3, atol=tol)
    assert torch.allclose(gamma.sum(-1), torch.ones(1, 3000, dtype=dtype), atol=tol)


def test_bad_block_length_and_steps_are_refused():
    log_start, trans, log_emit = _chain(1, 5, 2)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="block_length"):
            checkpointed_forward_backward(log_start, trans, lambda a, b: log_emit[:, a:b], 5,
                                          bad, lambda *a: None)
    with pytest.raises(ValueError, match=r"shape \(1, 2, K\)"):
        checkpointed_forward_backward(log_start, trans, lambda a, b: log_emit[:, a:b + 1], 5,
                                      2, lambda *a: None)
    with pytest.raises(ValueError, match="num_steps"):
        checkpointed_forward_backward(log_start, trans, lambda a, b: log_emit[:, a:b], 0, 2,
                                      lambda *a: None)


def test_zero_transitions_and_states_ruled_out_at_block_boundaries():
    log_start, trans, log_emit = _chain(1, 9, 3, seed=4)
    trans = trans.clone()
    trans[0, 2] = trans[2, 0] = 0.0  # no 0 <-> 2 jumps
    trans = trans / trans.sum(-1, keepdim=True)
    log_emit = log_emit.clone()
    log_emit[0, 3, 1] = -float("inf")  # state 1 impossible at step 3 (a block start for L=3)
    for L in (1, 2, 3, 4):
        log_ev, gamma, xi = _run(log_start, trans, log_emit, L)
        ref_ev, ref_gamma, ref_xi = _brute_force(log_start, trans, log_emit)
        assert torch.allclose(log_ev, ref_ev, rtol=0, atol=1e-10)
        assert torch.allclose(gamma, ref_gamma, rtol=0, atol=1e-10)
        assert torch.allclose(xi, ref_xi, rtol=0, atol=1e-10)
