r"""
Vectorised forward-backward (sum-product) and Viterbi (max-product) recursions for
batches of hidden Markov chains: pure functions of the chain's parameters and emission
log-densities, knowing nothing of models.

A batch of ``B`` chains of (padded) length ``T`` with ``K`` states is processed
together: every Python step of a recursion acts on all chains at once. Padded steps
(beyond each chain's length) are identity steps, so chains of different lengths share
one padded layout. A Python step costs microseconds, so the count of sequential steps is
what matters:

- few states (:math:`K \le 8`; up to 16 for few long chains): the same recursion
  compiled, frame by frame (:mod:`~pyroem.ops.compiled`), where one torch operation per
  step would cost more than the step's arithmetic;
- many chains, or short ones: one block, the scaled recursion of
  :mod:`~pyroem.ops.scaled`, state-major ``(T, K, B)``;
- a long chain: about :math:`\sqrt T` blocks (:mod:`~pyroem.ops.blocked`): the
  transfer matrices of all blocks at once, the block boundaries stitched, then the
  recursion inside all blocks at once; :math:`O(\sqrt T)` Python steps instead of
  :math:`T`.

The per-step normalisers are the one-step predictive likelihoods
:math:`c_t = p(x_t | x_{1:t-1})` and

.. math:: \log p(x_{1:T}) = \sum_t \log c_t + \sum_t m_t,

where :math:`m_t = \max_k \log p(x_t | z_t = k)` is the offset taken out of the
emissions before exponentiating. Both sums are accumulated in float64, so float32
stays accurate on very long chains.

The backward recursion uses Rabiner's scaling: it divides by the same :math:`c_t`,
:math:`\hat\beta_{t-1} = A (e_t \odot \hat\beta_t) / c_t`, so that
:math:`\gamma_t = \hat\alpha_t \odot \hat\beta_t` and
:math:`\sum_t \xi_t = A \odot \sum_t \hat\alpha_{t-1}^\top (e_t \odot \hat\beta_t) / c_t`
need no normalising pass. :math:`\hat\beta_t(k) = p(x_{t+1:T} | z_t = k) / p(x_{t+1:T} |
x_{1:t})` can exceed the float range for a state that the past rules out and the future
favours; such ratios are capped at the largest float (they only multiply zero forward
probabilities), so the recursion never produces NaN. Below float64 the posteriors are
renormalised per frame, against the drift of the rounded :math:`c_t` over long chains.

The max-product recursion uses the blocked layout in log space (max-plus products).
"""

import math
from contextlib import nullcontext

import torch

from pyroem.ops.blocked import (
    MAX_PLUS_WORK,
    auto_block_length,
    blocked_forward_backward,
    layout,
    where,
)
from pyroem.ops.compiled import applies, compiled_forward_backward, flushes
from pyroem.ops.denormals import flush_denormals
from pyroem.ops.scaled import finite_max, scaled_forward_backward


def forward_backward(log_start, trans, log_emit, lengths, final=None, block_length=None):
    r"""
    Sum-product forward-backward on a batch of chains.

    .. math::

        \alpha_1 = \pi \odot b_1,\quad \alpha_t = (\alpha_{t-1} A) \odot b_t,\quad
        \beta_T = \mathbb 1_F,\quad \beta_{t-1} = A (b_t \odot \beta_t),\\
        \gamma_t \propto \alpha_t \odot \beta_t,\quad
        \xi_t(i, j) \propto \alpha_{t-1}(i) A_{ij} b_t(j) \beta_t(j),\quad
        p(X) = \textstyle\sum_{k \in F} \alpha_T(k).

    :param torch.Tensor log_start: :math:`\log \pi`, shape ``(K,)``.
    :param torch.Tensor trans: :math:`A`, shape ``(K, K)`` (probabilities, zeros allowed).
    :param torch.Tensor log_emit: :math:`\log b_t(k)`, shape ``(B, T, K)``.
    :param torch.Tensor lengths: ``(B,)`` integer lengths ``1 <= l <= T``.
    :param torch.Tensor final: optional ``(K,)`` bool mask of allowed final states ``F``.
    :param int block_length: steps per block (``None``: automatic).
    :returns: ``(log_evidence (B,), gamma (B, T, K), xi (K, K))`` with ``gamma`` zero on
        padded frames and ``xi`` the expected transition counts summed over chains and
        time; ``log_evidence`` is float64. With at most
        :data:`~pyroem.ops.compiled.MAX_STATES` states (16 where the torch route would
        be blocked) and no ``block_length`` the compiled kernel runs
        (:mod:`~pyroem.ops.compiled`; ``gamma`` contiguous);
        otherwise, without blocks, ``gamma`` is a view of a state-major ``(T, K, B)``
        tensor (``gamma.permute(1, 2, 0)`` is contiguous), and ``log_emit`` is read
        fastest in that layout too.
    """
    B, T, K = log_emit.shape
    final_w = None if final is None else final.to(log_emit.dtype)
    S = T - 1
    L = block_length if block_length is not None else auto_block_length(S, B, K)
    compiled = block_length is None and applies(log_emit, trans, blocked=0 < L < S)
    # entries below the smallest normal float (pyroem.ops.denormals); the kernel may
    # flush them itself
    with nullcontext() if compiled and flushes() else flush_denormals():
        if compiled:  # few states: the compiled frame-by-frame recursion (pyroem.ops.compiled)
            return compiled_forward_backward(log_start, trans, log_emit, lengths, final_w)
        if S == 0 or L >= S:
            # one block: the state-major recursion; gamma is a (B, T, K) view of its result
            log_ev, gamma, xi = scaled_forward_backward(log_start, trans,
                                                        log_emit.permute(1, 2, 0), lengths,
                                                        final_w)
            return log_ev, gamma.permute(2, 0, 1), xi
        return blocked_forward_backward(log_start, trans, log_emit, lengths, final_w, L)



def forward_backward_symbols(log_start, trans, log_table, symbols, lengths, final=None,
                             block_length=None):
    r"""
    :func:`forward_backward` for emissions that a lookup table gives,
    :math:`\log b_t(k)` = ``log_table[symbols[b, t], k]`` (categorical emissions): the
    compiled kernel (:mod:`~pyroem.ops.compiled`) reads the table, scaled once, instead of a
    ``(B, T, K)`` tensor of log-densities exponentiated frame by frame; otherwise the
    table is gathered and :func:`forward_backward` runs.

    :param torch.Tensor log_table: ``(M, K)``.
    :param torch.Tensor symbols: ``(B, T)`` integers in ``[0, M)`` (padding included).
    """
    B, T = symbols.shape
    blocked = 0 < auto_block_length(T - 1, B, log_table.shape[-1]) < T - 1
    if block_length is None and applies(log_table, trans, blocked):
        final_w = None if final is None else final.to(log_table.dtype)
        with nullcontext() if flushes() else flush_denormals():
            return compiled_forward_backward(log_start, trans, log_table, lengths, final_w,
                                             symbols)
    return forward_backward(log_start, trans, log_table[symbols], lengths, final, block_length)


def _shift(w):
    """``w`` less its finite maximum over the last dim, and that maximum (max-plus
    rescaling: scores stay near zero, ``-inf`` rows stay ``-inf``)."""
    top = finite_max(w, -1)
    return w - top.unsqueeze(-1), top


def _max_plus_transfer(log_trans, les, masks, nb, L):
    r"""Max-plus transfer matrices of all blocks,
    :math:`P_b(i, j) = \max_{z \in b} \log p(z_{end} = j, x_b | z_{start} = i)` (each row
    shifted to a maximum of zero, the shifts summed in ``R (B, nb, K)``)."""
    B, K = les.shape[0], les.shape[-1]
    dtype, device = les.dtype, les.device
    P = torch.full((K, K), -math.inf, dtype=dtype, device=device)
    P = P.diagonal_scatter(torch.zeros(K, dtype=dtype, device=device))
    P = P.expand(B, nb, K, K)
    R = les.new_zeros(B, nb, K)
    for l in range(L):
        Pn = (P.unsqueeze(-1) + log_trans).amax(-2) + les[:, :, l].unsqueeze(-2)
        Pn, top = _shift(Pn)
        v = masks[l]
        P = where(v, Pn, P)
        R = where(v, R + top, R)
    return P, R


def _max_plus_inside(x, log_trans, les, masks):
    r"""Viterbi inside all blocks at once from the boundary scores ``x (B, nb, K)``:
    the end scores, the back-pointers ``psi[l] (B, nb, K)`` (identity on padding) and the
    float64 sum of the shifts taken out of the scores."""
    K = x.shape[-1]
    ident = torch.arange(K, device=x.device)
    psi, offs = [], []
    for l in range(les.shape[2]):
        # amax and argmax, not max(dim): that one enters torch's thread pool even on a
        # small tensor, which costs milliseconds on a busy machine (pyroem.models.simplex)
        scores = x.unsqueeze(-1) + log_trans
        top, arg = scores.amax(-2), scores.argmax(-2)
        xn, o = _shift(top + les[:, :, l])
        v = masks[l]
        x = where(v, xn, x)
        psi.append(where(v, arg, ident.expand_as(arg)))
        offs.append(where(v, o.double(), o.new_zeros((), dtype=torch.float64)))
    return x, psi, torch.stack(offs, -1).sum((-1, -2))


def _backtrace(psi, state, nb):
    """The most probable path ``(B, nb * L)`` of the steps from the back-pointers ``psi``
    and the final states ``state (B,)``: each block's back-pointers composed (its start
    state for every end state), the block ends stitched back from the last one, then the
    frames filled in inside all blocks at once. Also returns the first frame's state."""
    B, _, K = psi[0].shape
    L = len(psi)

    def back(cur, record=None):
        for l in range(L - 1, -1, -1):
            if record is not None:
                record[l] = cur.squeeze(-1)
            cur = psi[l].gather(-1, cur)
        return cur

    ends = [state]
    if nb > 1:
        ident = torch.arange(K, device=state.device)
        start_of = back(ident.expand(B, nb, K).contiguous())
        for b in range(nb - 1, 0, -1):
            ends.insert(0, start_of[:, b].gather(-1, ends[0].unsqueeze(-1)).squeeze(-1))
    path = [None] * L
    first = back(torch.stack(ends, 1).unsqueeze(-1), path)[:, 0]
    return first, torch.stack(path, 2).reshape(B, nb * L)


def viterbi(log_start, log_trans, log_emit, lengths, final=None, block_length=None):
    r"""
    Max-product (Viterbi) decoding of a batch of chains:
    :math:`\hat z = \arg\max_z \log p(x, z)` with
    :math:`\delta_t(j) = \max_i [\delta_{t-1}(i) + \log A_{ij}] + \log b_t(j)`, restricted
    to final states ``F`` when given.

    Same layout as :func:`forward_backward` (blocks in max-plus algebra; the backtrace
    through the blocks is composed per block, stitched, then filled in).

    :returns: ``(best (B,), path (B, T))``: the float64 :math:`\max_z \log p(x, z)` and the
        most probable state path (``-1`` on padded frames).
    """
    T = log_emit.shape[1]
    frame_mask = torch.arange(T, device=log_emit.device) < lengths.unsqueeze(-1)
    log_final = None
    if final is not None:
        log_final = torch.where(final, 0.0, -math.inf).to(log_emit.dtype)
    d0, o0 = _shift(log_start + log_emit[:, 0])
    best = o0.double()
    if T == 1:
        end = d0 if log_final is None else d0 + log_final
        top, state = end.max(-1)
        return best + top.double(), state.unsqueeze(1)
    les, masks, nb, L = layout(log_emit[:, 1:], lengths, block_length, 0.0, MAX_PLUS_WORK)
    x = [d0]
    if nb > 1:  # stitch the boundary scores through the blocks' transfer matrices
        P, R = _max_plus_transfer(log_trans, les, masks, nb, L)
        for b in range(1, nb):
            w = (x[-1] + R[:, b - 1]).unsqueeze(-1) + P[:, b - 1]
            x.append(_shift(w.amax(-2))[0])
    x, psi, offsets = _max_plus_inside(torch.stack(x, 1), log_trans, les, masks)
    end = x[:, -1] if log_final is None else x[:, -1] + log_final
    top, state = end.max(-1)
    best = best + offsets + top.double()
    first, steps = _backtrace(psi, state, nb)
    path = torch.cat([first, steps[:, : T - 1]], 1)
    return best, torch.where(frame_mask, path, -1)


def path_statistics(path, num_states, dtype):
    r"""
    The statistics of state paths as a point-mass posterior (Viterbi training): the
    one-hot :math:`\gamma_t(k) = [\hat z_t = k]` ``(B, T, K)`` (zero where ``path`` is
    ``-1``, on padding) and the transition counts
    :math:`\sum_{b,t} [\hat z_{t-1} = i, \hat z_t = j]` ``(K, K)``, in ``dtype``.
    """
    K = num_states
    valid = path >= 0
    gamma = torch.nn.functional.one_hot(path.clamp_min(0), K).to(dtype)
    gamma = gamma * valid.unsqueeze(-1)
    pair = valid[:, 1:] & valid[:, :-1]
    idx = (path[:, :-1] * K + path[:, 1:])[pair]
    trans = torch.bincount(idx, minlength=K * K).reshape(K, K).to(dtype)
    return gamma, trans
