r"""
Vectorised forward-backward (sum-product) and Viterbi (max-product) recursions for
batches of hidden Markov chains.

A batch of ``B`` chains of (padded) length ``T`` with ``K`` states is processed
together: every Python step of a recursion acts on all chains at once. A long chain is
also cut into ``nb`` blocks of ``L`` steps (``L ~ sqrt(T)``) and processed in three
phases, so that the number of sequential Python steps is :math:`O(L + nb) = O(\sqrt T)`
instead of :math:`T`:

1. **transfer**: inside all blocks at once, the product of the step matrices
   :math:`M_b = \prod_{t \in b} A\,\mathrm{diag}(e_t)` (each row rescaled separately,
   its log-scale kept, so a block never underflows);
2. **stitch**: the exact filtered vector at each block boundary,
   :math:`\hat\alpha_{b+1} \propto \hat\alpha_b M_b`, and the scaled backward vector,
   :math:`\hat\beta_{b-1} = M_b \hat\beta_b / \prod_{t \in b} c_t` (``nb`` small steps);
3. **inside**: the ordinary scaled recursion inside all blocks at once, each block
   started from its exact boundary vector.

Because the forward recursion of each block starts from the exact normalised filtered
distribution :math:`p(z_{t_0} | x_{1:t_0})`, the per-step normalisers inside a block
are the one-step predictive likelihoods :math:`c_t = p(x_t | x_{1:t-1})` and

.. math:: \log p(x_{1:T}) = \sum_t \log c_t + \sum_t m_t,

where :math:`m_t = \max_k \log p(x_t | z_t = k)` is the offset taken out of the
emissions before exponentiating. Both sums are accumulated in float64, so float32
stays accurate on very long chains. Padded steps (beyond each chain's length) are
identity steps, so chains of different lengths share one padded layout.

The backward recursion uses Rabiner's scaling: it divides by the same :math:`c_t`,
:math:`\hat\beta_{t-1} = A (e_t \odot \hat\beta_t) / c_t`, so that
:math:`\gamma_t = \hat\alpha_t \odot \hat\beta_t` and
:math:`\sum_t \xi_t = A \odot \sum_t \hat\alpha_{t-1}^\top (e_t \odot \hat\beta_t) / c_t`
need no normalising pass. :math:`\hat\beta_t(k) = p(x_{t+1:T} | z_t = k) / p(x_{t+1:T} |
x_{1:t})` can exceed the float range for a state that the past rules out and the future
favours; such ratios are capped at the largest float (they only multiply zero forward
probabilities), so the recursion never produces NaN. Below float64 the posteriors are
renormalised per frame, against the drift of the rounded :math:`c_t` over long chains.

When one block covers the chains (many chains, or short ones), the recursion runs
unblocked and state-major, ``(T, K, B)`` (see :func:`_rabiner_forward_backward`).

The max-product recursion uses the blocked layout in log space (max-plus products).
"""

import math

import numpy as np
import torch

# Blocks multiply the work of a step by K (K x K matrices instead of vectors) and save
# Python steps; they pay while a step is too small to fill the machine. Measured
# (1 thread, float64): the sum-product pays up to B K^3 = 2^16 (K=16, B=16, T=5000:
# 345 -> 194 ms; K=16, B=256: 643 -> 1510 ms, so not there), the max-plus one, whose
# (B, nb, K, K, K) products are elementwise, only up to 2^13 (K=16, B=2: 447 -> 90 ms;
# K=8, B=64: 219 -> 390 ms). Chains of 32 frames already gain (K=2: T=272, 12 -> 2.3 ms).
SUM_PRODUCT_WORK, MAX_PLUS_WORK = 2**16, 2**13


def _block_length(num_steps, batch, num_states, max_work=SUM_PRODUCT_WORK):
    # The boundary stitch runs in NumPy, much cheaper per step than a torch step inside
    # the blocks, so blocks shorter than sqrt(T) pay: sqrt(T / 8) was the fastest
    # measured (bench/hmm.py, T = 1e5, K = 16; also T = 272 to 10^4, K = 2 to 32).
    if num_steps >= 32 and batch * num_states**3 <= max_work:
        return max(1, math.ceil(math.sqrt(num_steps / 8)))
    return max(1, num_steps)


def _layout(steps, lengths, block_length, fill, max_work):
    """The step tensors ``(B, S, K)`` padded with ``fill`` to ``(B, nb, L, K)``, with
    :func:`_blocks`' layout."""
    B, S, K = steps.shape
    nb, L, masks, _ = _blocks(S, B, K, lengths, block_length, steps.device, max_work)
    pad = nb * L - S
    if pad:
        steps = torch.cat([steps, steps.new_full((B, pad, K), fill)], 1)
    return steps.reshape(B, nb, L, K), masks, nb, L


def _safe_log_normalize(w):
    """``exp(w - max w)`` along the last dim; rows that are all ``-inf`` stay zero."""
    top = w.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return (w - top).exp()


def _normalize(v):
    s = v.sum(-1, keepdim=True)
    return v / s.clamp_min(torch.finfo(v.dtype).tiny), s.squeeze(-1)


def _where(mask, new, old):
    if mask is None:
        return new
    while mask.dim() < new.dim():
        mask = mask.unsqueeze(-1)
    return torch.where(mask, new, old)


def _blocks(S, B, K, lengths, block_length, device, max_work=SUM_PRODUCT_WORK):
    """Block layout of the ``S = T - 1`` steps: ``(nb, L, masks)`` with ``masks[l]`` the
    ``(B, nb)`` validity of step ``l`` of every block (``None`` where all are valid; step
    ``s`` produces frame ``s``, valid if ``s < length``)."""
    if S == 0:
        return 1, 0, [], None
    L = block_length if block_length is not None else _block_length(S, B, K, max_work)
    L = max(1, min(int(L), S))
    nb = -(-S // L)
    frame = torch.arange(1, nb * L + 1, device=device)
    valid = (frame < lengths.unsqueeze(-1)).reshape(B, nb, L)
    partial = (~valid).any(0).any(0).tolist()
    masks = [valid[:, :, l] if partial[l] else None for l in range(L)]
    return nb, L, masks, (valid if any(partial) else None)


def _transfer(trans, es, masks, B, nb, L, K):
    r"""
    Transfer matrices :math:`P_b \propto \prod_{t \in b} A\,\mathrm{diag}(e_t)` of all
    blocks, each row rescaled separately: returns ``P (B, nb, K, K)`` with unit row sums
    and the log row scales ``R (B, nb, K)``.

    Kept transposed, ``Q[j, b, n, i] = P_bn[i, j]``, so that each step is one wide matrix
    product :math:`A^\top Q` (about twice as fast as the tall ``P @ A``), in place on two
    buffers: these are the largest tensors of the recursion.
    """
    dtype = es.dtype
    tiny = torch.finfo(dtype).tiny
    eye = torch.eye(K, dtype=dtype, device=es.device)
    Q = eye.reshape(K, 1, 1, K).expand(K, B, nb, K).contiguous()
    Qn = torch.empty_like(Q)
    R = es.new_zeros(B, nb, K)  # es: time-major (L, B, nb, K)
    trans_t = trans.T.contiguous()
    # Rows are rescaled every `every` steps. A step multiplies a row's mass by at least the
    # smallest scaled emission it reaches (e = exp(log b - max log b) <= 1); a row lost to
    # underflow needs that factor below ~1e-154 twice in a row in float64 (below 1e-308 once
    # when rescaling every step, the limit of any scaled recursion), so float64 rescales
    # every other step (a quarter less work) and float32 every step.
    every = 2 if dtype == torch.float64 else 1
    for l in range(L):
        torch.mm(trans_t, Q.view(K, -1), out=Qn.view(K, -1))
        Qn.mul_(es[l].permute(2, 0, 1).unsqueeze(-1))
        v = masks[l]
        if v is None and l % every and l != L - 1:
            Q, Qn = Qn, Q
            continue
        s = Qn.sum(0).clamp_(min=tiny)  # an all-zero row stays zero
        Qn.div_(s)
        if v is None:
            Q, Qn = Qn, Q
            R.add_(s.log_())
        else:
            Q = torch.where(v.unsqueeze(-1), Qn, Q)
            R = torch.where(v.unsqueeze(-1), R + s.log(), R)
            Qn = torch.empty_like(Q)
    return Q.permute(1, 2, 3, 0).contiguous(), R


def _stitch(v0, P, R):
    r"""
    The filtered vectors at the block boundaries, one block after the other:
    :math:`\hat\alpha_{b+1} \propto (\hat\alpha_b \odot e^{R_b}) P_b` from ``v0``, the
    first block's start; the row scales :math:`R_b` are combined in log space.

    These ``nb`` steps act on ``(B, K)`` vectors: NumPy's per-call cost is a fraction of
    torch's at that size, so they run in NumPy (on a CPU copy for other devices).
    """
    B, nb, K = R.shape
    p, r = P.detach().cpu().numpy(), R.detach().cpu().numpy()
    out = np.empty((B, nb, K), dtype=p.dtype)
    low, tiny = np.finfo(p.dtype).min, np.finfo(p.dtype).tiny
    out[:, 0] = v0.detach().cpu().numpy()
    with np.errstate(divide="ignore", under="ignore"):
        for b in range(1, nb):
            w = np.log(out[:, b - 1]) + r[:, b - 1]
            w -= np.maximum(w.max(-1, keepdims=True), low)  # all -inf (impossible) stays 0
            np.exp(w, out=w)
            w = np.matmul(w[:, None, :], p[:, b - 1])[:, 0]
            out[:, b] = w / np.maximum(w.sum(-1, keepdims=True), tiny)
    return torch.from_numpy(out).to(v0.device)


def _stitch_backward(last, P, R, C):
    r"""
    The Rabiner-scaled backward vectors at the block ends, from ``last`` (the last
    block's end) back: :math:`\hat\beta_{b-1} = e^{R_b - C_b} \odot (P_b \hat\beta_b)`,
    with :math:`C_b = \sum_{t \in b} \log c_t` the forward normalisers of block ``b``
    (so :math:`\hat\alpha \odot \hat\beta` is the posterior), capped at the largest
    float as in :func:`_rabiner_forward_backward`. In NumPy, as :func:`_stitch`.
    """
    B, nb, K = R.shape
    p, r = P.detach().cpu().numpy(), R.detach().cpu().numpy()
    c = C.detach().cpu().numpy()
    out = np.empty((B, nb, K), dtype=p.dtype)
    big = np.finfo(p.dtype).max
    out[:, nb - 1] = last.detach().cpu().numpy()
    with np.errstate(divide="ignore", under="ignore", over="ignore"):
        for b in range(nb - 2, -1, -1):
            w = np.matmul(p[:, b + 1], out[:, b + 1, :, None])[..., 0]
            w = np.log(w) + (r[:, b + 1] - c[:, b + 1, None])
            np.minimum(np.exp(w), big, out=out[:, b])
    return torch.from_numpy(out).to(last.device)


def _step_masks(lengths, T):
    """``valid (T, B)`` (frame ``t`` of chain ``b`` is data) and the per-frame masks:
    ``None`` where every chain has frame ``t``."""
    valid = torch.arange(T, device=lengths.device).unsqueeze(-1) < lengths
    partial = (~valid).any(-1).tolist()
    return valid, [valid[t] if partial[t] else None for t in range(T)], any(partial)


def _rabiner_forward_backward(log_start, trans, lt, lengths, final_w):
    r"""
    The unblocked recursion on state-major emissions ``lt (T, K, B)`` with Rabiner's
    scaling: the backward vectors are divided by the forward normalisers,
    :math:`\hat\beta_{t-1} = A (e_t \odot \hat\beta_t) / c_t`, so that
    :math:`\gamma_t = \hat\alpha_t \odot \hat\beta_t` and
    :math:`\sum_t \xi_t = A \odot \sum_t \hat\alpha_{t-1}^\top (e_t \odot
    \hat\beta_t) / c_t` need no normalising pass. :math:`\hat\beta_t(k)` is the ratio
    :math:`p(x_{t+1:T} | z_t = k) / p(x_{t+1:T} | x_{1:t})` and may overflow where a state
    unlikely in the past explains the future much better (float32, sparse transitions).
    Such ratios are capped at the largest float: they only ever multiply (numerically)
    zero forward probabilities.

    Everything is state-major, ``(T, K, B)``: a step is then one wide product
    ``(K, K) @ (K, B)`` (about twice as fast as ``(B, K) @ (K, K)``), sums over states run
    down contiguous rows, and Gaussian emissions and their moments are batched products
    in that layout too (:func:`~pyroem.models.gaussian_emission.state_major_log_prob`).

    :returns: ``(log_evidence (B,), gamma (T, K, B), xi (K, K))``.
    """
    T, K, B = lt.shape
    tiny = torch.finfo(lt.dtype).tiny
    valid, masks, padded = _step_masks(lengths, T)
    offset = lt.amax(1)
    offset = torch.where(torch.isfinite(offset), offset, torch.zeros_like(offset))
    log_ev = (offset.double() * valid).sum(0)
    # one pass, from whatever layout the caller's emissions have
    e = torch.sub(lt, offset.unsqueeze(1), out=lt.new_empty(T, K, B)).exp_()

    # forward: alpha_t = (A^T alpha_{t-1}) e_t / c_t; padded frames repeat the last alpha
    fw = torch.empty_like(e)
    scale = e.new_empty(T, B)
    torch.mul(log_start.exp().unsqueeze(-1), e[0], out=fw[0])
    trans_t = trans.T.contiguous()
    for t in range(T):
        a = fw[t]
        if t:
            torch.mm(trans_t, fw[t - 1], out=a).mul_(e[t])
        c = torch.sum(a, 0, out=scale[t])
        a.div_(c.clamp_min(tiny))
        if masks[t] is not None:
            a.copy_(torch.where(masks[t], a, fw[t - 1]))
            scale[t].masked_fill_(~masks[t], 1.0)
    log_ev += scale.double().log().sum(0)
    # 1 / c_t, and 0 where c_t = 0 (impossible data: alpha, beta and gamma stay zero)
    inv = _safe_reciprocal(scale)

    # backward from beta_T = 1_F / sum_F alpha_T (so that gamma_T sums to one)
    bw = torch.empty_like(e)
    if final_w is None:
        bw[T - 1] = 1.0
    else:
        end = final_w @ fw[T - 1]  # fw[T - 1] is each chain's last alpha
        log_ev += end.double().log()
        torch.mul(final_w.unsqueeze(-1), _safe_reciprocal(end), out=bw[T - 1])
    u = e[1:]  # u_t = e_t beta_t / c_t, written over e_t (not needed after this step)
    trans = trans.contiguous()
    big = torch.finfo(e.dtype).max
    for t in range(T - 1, 0, -1):
        # Ratios beyond the float range belong to states the forward pass gives
        # (numerically) zero probability; capping them keeps 0 * inf = NaN out of the
        # structural zeros of A and of gamma, and leaves every other value as it was.
        ut = u[t - 1].mul_(bw[t]).mul_(inv[t]).clamp_max_(big)
        torch.mm(trans, ut, out=bw[t - 1]).clamp_max_(big)
        if masks[t] is not None:
            ut.masked_fill_(~masks[t], 0.0)
            bw[t - 1].copy_(torch.where(masks[t], bw[t - 1], bw[t]))

    gamma = bw.mul_(fw)
    if _drifts(e.dtype):
        n = _safe_reciprocal(gamma.sum(1, keepdim=True))
        gamma.mul_(n)
        u.mul_(n[1:])
    pairs = torch.bmm(fw[:-1], u.transpose(1, 2)).sum(0)
    xi = torch.where(trans > 0, trans * pairs, 0.0)  # pairs may be inf where A is zero
    if padded:
        gamma.mul_(valid.unsqueeze(1))
    return log_ev, gamma, xi


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
        time; ``log_evidence`` is float64. Without blocks ``gamma`` is a view of a
        state-major ``(T, K, B)`` tensor (``gamma.permute(1, 2, 0)`` is contiguous), and
        ``log_emit`` is read fastest in that layout too.
    """
    B, T, K = log_emit.shape
    final_w = None if final is None else final.to(log_emit.dtype)
    S = T - 1
    L = block_length if block_length is not None else _block_length(S, B, K)
    if S == 0 or L >= S:
        # one block: the state-major recursion; gamma is a (B, T, K) view of its result
        log_ev, gamma, xi = _rabiner_forward_backward(log_start, trans,
                                                      log_emit.permute(1, 2, 0), lengths, final_w)
        return log_ev, gamma.permute(2, 0, 1), xi
    return _blocked_forward_backward(log_start, trans, log_emit, lengths, final_w, L)


def _drifts(dtype):
    # Rabiner's backward divides by every c_t: the rounding of the c_t multiplies along the
    # chain, a common factor per frame (about 1e-3 after 1e5 float32 steps, 1e-11 in
    # float64). Below float64 the posteriors are renormalised per frame (n_t = sum gamma_t,
    # which is also the pairwise normaliser of xi_t).
    return dtype != torch.float64


def _safe_reciprocal(c):
    """``1 / c``, and ``0`` where ``c = 0`` (impossible data keeps zero probabilities)."""
    return torch.where(c > 0, c.clamp_min(torch.finfo(c.dtype).tiny).reciprocal(), 0.0)


def _blocked_forward_backward(log_start, trans, log_emit, lengths, final_w, block_length):
    """:func:`forward_backward` in blocks (the module docstring), Rabiner-scaled."""
    log_emit = log_emit.contiguous()
    B, T, K = log_emit.shape
    dtype, device = log_emit.dtype, log_emit.device
    tiny = torch.finfo(dtype).tiny
    frame_mask = torch.arange(T, device=device) < lengths.unsqueeze(-1)
    S = T - 1
    nb, L, masks, valid = _blocks(S, B, K, lengths, block_length, device)

    # scaled emissions e_t = exp(log b_t - m_t), m_t = max_k log b_t(k); the steps are laid
    # out time-major, (L, B, nb, K), so that every step of a loop reads and writes one
    # contiguous slab; padding emits 1
    offset = log_emit.amax(-1, keepdim=True)
    offset = torch.where(torch.isfinite(offset), offset, torch.zeros_like(offset))
    log_ev = (offset.squeeze(-1).double() * frame_mask).sum(-1)
    e0 = (log_emit[:, 0] - offset[:, 0]).exp()
    if nb * L == S:  # no padding steps: one pass straight into the time-major layout
        es = log_emit.new_empty(L, B, nb, K)
        torch.sub(log_emit[:, 1:].view(B, nb, L, K), offset[:, 1:].view(B, nb, L, 1),
                  out=es.permute(1, 2, 0, 3))
        es.exp_()
    else:
        steps = log_emit.new_zeros(B, nb * L, K)
        torch.sub(log_emit[:, 1:], offset[:, 1:], out=steps[:, :S])
        es = steps.view(B, nb, L, K).permute(2, 0, 1, 3).contiguous().exp_()
        del steps

    a0 = log_start.exp() * e0
    c0 = a0.sum(-1)
    a0 = a0 / c0.clamp_min(tiny).unsqueeze(-1)
    log_ev = log_ev + c0.double().log()

    if nb > 1:
        P, R = _transfer(trans, es, masks, B, nb, L, K)

    # 2a. stitch the filtered vectors at the block boundaries
    x = x_start = _stitch(a0, P, R) if nb > 1 else a0.unsqueeze(1)

    # 3a. scaled forward inside all blocks at once
    fw = log_emit.new_empty(L, B, nb, K)
    scale = log_emit.new_ones(L, B, nb)  # c_t, the per-step normalisers
    for l in range(L):
        a = torch.matmul(x, trans, out=fw[l]).mul_(es[l])
        c = a.sum(-1)
        a.div_(c.clamp_min(tiny).unsqueeze(-1))
        v = masks[l]
        if v is None:
            scale[l] = c
        else:
            fw[l] = _where(v, a, x)
            scale[l] = torch.where(v, c, 1.0)
        x = fw[l]
    log_scale = scale.double().log()
    log_ev = log_ev + log_scale.sum((0, 2))
    last = torch.ones_like(a0)
    if final_w is not None:
        # x is the filtered vector at each chain's last frame (padded steps are identity)
        end = (x[:, -1] * final_w).sum(-1)
        log_ev = log_ev + end.double().log()
        last = final_w * _safe_reciprocal(end).unsqueeze(-1)
    inv = _safe_reciprocal(scale)
    big = torch.finfo(dtype).max

    # 2b. Rabiner-scaled backward vectors at the block ends (beta_hat = beta / prod c)
    if nb > 1:
        C = log_scale.sum(0)
        C = torch.where(torch.isfinite(C), C, 0.0).to(dtype)  # impossible chains stay zero
        y = _stitch_backward(last, P, R, C)
    else:
        y = last.unsqueeze(1)

    # 3b. backward inside all blocks at once: beta_{t-1} = A u_t with u_t = e_t beta_t / c_t
    # written over e_t; ratios beyond the float range are capped (see
    # _rabiner_forward_backward)
    bw = log_emit.new_empty(L, B, nb, K)
    trans_t = trans.T
    if L:
        bw[L - 1] = y
    for l in range(L - 1, -1, -1):
        # beta of the frame before step l, computed in place where it is stored
        out = bw[l - 1] if l else torch.empty_like(y)
        u = es[l].mul_(bw[l]).mul_(inv[l].unsqueeze(-1)).clamp_max_(big)
        torch.matmul(u, trans_t, out=out).clamp_max_(big)
        if masks[l] is not None:
            u.masked_fill_(~masks[l].unsqueeze(-1), 0.0)
            out.copy_(_where(masks[l], out, bw[l]))
        y = out

    # gamma_t = alpha_t beta_t; xi = A * sum_t alpha_{t-1}^T u_t
    g = bw.mul_(fw)
    g0 = a0 * y[:, 0]
    if _drifts(dtype):
        n = _safe_reciprocal(g.sum(-1, keepdim=True))
        g.mul_(n)
        es.mul_(n)
        g0.mul_(_safe_reciprocal(g0.sum(-1, keepdim=True)))
    if L:
        # alpha_{t-1}: each block's start vector for its first step, else fw[l - 1]
        pairs = x_start.reshape(-1, K).T @ es[0].reshape(-1, K)
        pairs = pairs + fw[:-1].reshape(-1, K).T @ es[1:].reshape(-1, K)
        xi = torch.where(trans > 0, trans * pairs, 0.0)
    else:
        xi = trans.new_zeros(K, K)
    gamma = log_emit.new_empty(B, 1 + nb * L, K)
    gamma[:, 0] = g0
    inner = gamma[:, 1:].view(B, nb, L, K)
    inner.copy_(g.permute(1, 2, 0, 3))
    if valid is not None:
        inner.mul_(valid.unsqueeze(-1))
    return log_ev, gamma[:, :T], xi


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
    B, T, K = log_emit.shape
    device = log_emit.device
    frame_mask = torch.arange(T, device=device) < lengths.unsqueeze(-1)
    log_final = None
    if final is not None:
        log_final = torch.where(final, 0.0, -math.inf).to(log_emit.dtype)

    def shift(w):
        top = w.amax(-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        return w - top, top.squeeze(-1)

    d0, o0 = shift(log_start + log_emit[:, 0])
    best = o0.double()
    if T == 1:
        end = d0 if log_final is None else d0 + log_final
        top, state = end.max(-1)
        return best + top.double(), state.unsqueeze(1)

    les, masks, nb, L = _layout(log_emit[:, 1:], lengths, block_length, 0.0, MAX_PLUS_WORK)
    ident = torch.arange(K, device=device)

    # 1. max-plus transfer matrices of the blocks
    if nb > 1:
        P = torch.full((K, K), -math.inf, dtype=log_emit.dtype, device=device)
        P = P.diagonal_scatter(torch.zeros(K, dtype=log_emit.dtype, device=device))
        P = P.expand(B, nb, K, K)
        R = log_emit.new_zeros(B, nb, K)
        for l in range(L):
            Pn = (P.unsqueeze(-1) + log_trans).amax(-2) + les[:, :, l].unsqueeze(-2)
            Pn, top = shift(Pn)
            v = masks[l]
            P = _where(v, Pn, P)
            R = _where(v, R + top, R)

    # 2. stitch the boundary scores
    x = [d0]
    for b in range(1, nb):
        w = (x[-1] + R[:, b - 1]).unsqueeze(-1) + P[:, b - 1]
        x.append(shift(w.amax(-2))[0])
    x = torch.stack(x, 1)

    # 3. Viterbi inside all blocks at once, with back-pointers
    psi, offs = [], []
    for l in range(L):
        top, arg = (x.unsqueeze(-1) + log_trans).max(-2)
        xn, o = shift(top + les[:, :, l])
        v = masks[l]
        x = _where(v, xn, x)
        psi.append(_where(v, arg, ident.expand_as(arg)))
        offs.append(_where(v, o.double(), o.new_zeros((), dtype=torch.float64)))
    best = best + torch.stack(offs, -1).sum((-1, -2))
    end = x[:, -1] if log_final is None else x[:, -1] + log_final
    top, state = end.max(-1)
    best = best + top.double()

    # backtrace: compose each block's back-pointers, stitch, then fill the frames in
    def back(cur, upto):
        for l in range(L - 1, -1, -1):
            upto(l, cur)
            cur = psi[l].gather(-1, cur)
        return cur

    if nb > 1:
        start_of = back(ident.expand(B, nb, K).contiguous(), lambda l, c: None)
        ends = [state]
        for b in range(nb - 1, 0, -1):
            ends.insert(0, start_of[:, b].gather(-1, ends[0].unsqueeze(-1)).squeeze(-1))
        ends = torch.stack(ends, 1)
    else:
        ends = state.unsqueeze(1)
    path = [None] * L

    def record(l, cur):
        path[l] = cur.squeeze(-1)

    first = back(ends.unsqueeze(-1), record)[:, 0]
    path = torch.stack(path, 2).reshape(B, nb * L)[:, : T - 1]
    path = torch.cat([first, path], 1)
    return best, torch.where(frame_mask, path, -1)
