r"""
Forward-backward on long chains in :math:`O(\sqrt T)` Python steps.

A chain of ``S = T - 1`` steps is cut into ``nb`` blocks of ``L`` steps
(:math:`L \sim \sqrt{T/8}`) and processed in three phases:

1. **transfer**: inside all blocks at once, the product of the step matrices
   :math:`M_b = \prod_{t \in b} A\,\mathrm{diag}(e_t)` (each row rescaled separately,
   its log-scale kept, so a block never underflows);
2. **stitch**: the exact filtered vector at each block boundary,
   :math:`\hat\alpha_{b+1} \propto \hat\alpha_b M_b`, and the scaled backward vector,
   :math:`\hat\beta_{b-1} = M_b \hat\beta_b / \prod_{t \in b} c_t` (``nb`` small steps);
3. **inside**: the ordinary scaled recursion (:mod:`~pyroem.ops.scaled`) inside
   all blocks at once, each block started from its exact boundary vector.

Because each block's forward recursion starts from the exact normalised filtered
distribution :math:`p(z_{t_0} | x_{1:t_0})`, the per-step normalisers inside a block are
the one-step predictive likelihoods :math:`c_t = p(x_t | x_{1:t-1})`, as without blocks.
Padded steps (beyond each chain's length) are identity steps. The layout helpers here are
also those of the max-product recursion (:func:`~pyroem.ops.recursions.viterbi`).
"""

import math

import numpy as np
import torch

from pyroem.ops.scaled import drifts, finite_max, flushed_exp_, safe_reciprocal

# NumPy's float limits, read once here: read for the first time inside the recursions'
# flush-to-zero block (pyroem.ops.denormals) they would warn that subnormals are zero
_NP_LIMITS = {np.dtype(t): np.finfo(t) for t in (np.float32, np.float64)}

# Blocks multiply the work of a step by K (K x K matrices instead of vectors) and save
# Python steps; they pay while a step is too small to fill the machine. Measured
# (1 thread, float64): the sum-product pays up to B K^3 = 2^16 (K=16, B=16, T=5000:
# 345 -> 194 ms; K=16, B=256: 643 -> 1510 ms, so not there), the max-plus one, whose
# (B, nb, K, K, K) products are elementwise, only up to 2^13 (K=16, B=2: 447 -> 90 ms;
# K=8, B=64: 219 -> 390 ms). Chains of 32 frames already gain (K=2: T=272, 12 -> 2.3 ms).
SUM_PRODUCT_WORK, MAX_PLUS_WORK = 2**16, 2**13


def auto_block_length(num_steps, batch, num_states, max_work=SUM_PRODUCT_WORK):
    """Steps per block for ``num_steps`` steps of ``batch`` chains (``num_steps``: one
    block, no blocking)."""
    # The boundary stitch runs in NumPy, much cheaper per step than a torch step inside
    # the blocks, so blocks shorter than sqrt(T) pay: sqrt(T / 8) was the fastest
    # measured (bench/hmm.py, T = 1e5, K = 16; also T = 272 to 10^4, K = 2 to 32).
    if num_steps >= 32 and batch * num_states**3 <= max_work:
        return max(1, math.ceil(math.sqrt(num_steps / 8)))
    return max(1, num_steps)


def blocks(S, B, K, lengths, length, device, max_work=SUM_PRODUCT_WORK):
    """Block layout of the ``S = T - 1`` steps: ``(nb, L, masks, valid)`` with
    ``masks[l]`` the ``(B, nb)`` validity of step ``l`` of every block (``None`` where all
    are valid; step ``s`` produces frame ``s + 1``, valid if ``s + 1 < length``) and
    ``valid (B, nb, L)`` (``None`` when no step is padding)."""
    if S == 0:
        return 1, 0, [], None
    L = length if length is not None else auto_block_length(S, B, K, max_work)
    L = max(1, min(int(L), S))
    nb = -(-S // L)
    frame = torch.arange(1, nb * L + 1, device=device)
    valid = (frame < lengths.unsqueeze(-1)).reshape(B, nb, L)
    partial = (~valid).any(0).any(0).tolist()
    masks = [valid[:, :, l] if partial[l] else None for l in range(L)]
    return nb, L, masks, (valid if any(partial) else None)


def layout(steps, lengths, length, fill, max_work):
    """The step tensors ``(B, S, K)`` padded with ``fill`` to ``(B, nb, L, K)``, with
    :func:`blocks`' layout: ``(steps, masks, nb, L)``."""
    B, S, K = steps.shape
    nb, L, masks, _ = blocks(S, B, K, lengths, length, steps.device, max_work)
    pad = nb * L - S
    if pad:
        steps = torch.cat([steps, steps.new_full((B, pad, K), fill)], 1)
    return steps.reshape(B, nb, L, K), masks, nb, L


def padding(masks):
    """The padding entries of each step, ``(chain, block)`` index tensors of the steps
    beyond each chain's length (``None`` where every block's step is data): a padding step
    puts back its few entries after a step computed on all blocks, instead of a
    ``torch.where`` over all of them (one short chain pads only its last block)."""
    return [None if v is None else (~v).nonzero(as_tuple=True) for v in masks]


def where(mask, new, old):
    """``torch.where`` with ``mask`` broadcast from the left (``new`` where no mask)."""
    if mask is None:
        return new
    while mask.dim() < new.dim():
        mask = mask.unsqueeze(-1)
    return torch.where(mask, new, old)


def _transfer(trans, es, pads, B, nb, L, K):
    r"""
    Transfer matrices :math:`P_b \propto \prod_{t \in b} A\,\mathrm{diag}(e_t)` of all
    blocks, each row rescaled separately: returns ``P (B, nb, K, K)`` with unit row sums
    and the log row scales ``R (B, nb, K)``.

    Kept transposed, ``Q[j, b, n, i] = P_bn[i, j]``, so that each step is one wide matrix
    product :math:`A^\top Q` (about twice as fast as the tall ``P @ A``), in place on two
    buffers: these are the largest tensors of the recursion. Padding steps (``pads[l]``,
    see :func:`padding`) copy the previous matrix back into their few blocks.
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
        pad = pads[l]
        if pad is None and l % every and l != L - 1:
            Q, Qn = Qn, Q
            continue
        s = Qn.sum(0).clamp_(min=tiny)  # an all-zero row stays zero
        Qn.div_(s)
        s = s.log_()
        if pad is not None:
            Qn[:, pad[0], pad[1]] = Q[:, pad[0], pad[1]]
            s[pad] = 0.0
        R.add_(s)
        Q, Qn = Qn, Q
    return Q.permute(1, 2, 3, 0).contiguous(), R


def _stitch(v0, P, R):
    r"""
    The filtered vectors at the block boundaries, one block after the other:
    :math:`\hat\alpha_{b+1} \propto (\hat\alpha_b \odot e^{R_b}) P_b` from ``v0``, the
    first block's start; the row scales :math:`R_b` are combined in log space.

    These ``nb`` steps act on ``(B, K)`` vectors: on the CPU NumPy's per-call cost is a
    fraction of torch's at that size, so they run in NumPy there; on other devices in
    torch (:func:`_stitch_torch`), so that the data never leave the device.
    """
    if P.device.type != "cpu":
        return _stitch_torch(v0, P, R)
    B, nb, K = R.shape
    p, r = P.detach().numpy(), R.detach().numpy()
    out = np.empty((B, nb, K), dtype=p.dtype)
    low, tiny = _NP_LIMITS[p.dtype].min, _NP_LIMITS[p.dtype].tiny
    out[:, 0] = v0.detach().numpy()
    with np.errstate(divide="ignore", under="ignore"):
        for b in range(1, nb):
            w = np.log(out[:, b - 1]) + r[:, b - 1]
            w -= np.maximum(w.max(-1, keepdims=True), low)  # all -inf (impossible) stays 0
            np.exp(w, out=w)
            w = np.matmul(w[:, None, :], p[:, b - 1])[:, 0]
            out[:, b] = w / np.maximum(w.sum(-1, keepdims=True), tiny)
    return torch.from_numpy(out)


def _stitch_torch(v0, P, R):
    """:func:`_stitch`'s recursion in torch, on the tensors' own device."""
    B, nb, K = R.shape
    info = torch.finfo(P.dtype)
    out = P.new_empty(B, nb, K)
    out[:, 0] = v0
    for b in range(1, nb):
        w = out[:, b - 1].log() + R[:, b - 1]
        w = (w - w.amax(-1, keepdim=True).clamp_min(info.min)).exp()
        w = (w.unsqueeze(-2) @ P[:, b - 1]).squeeze(-2)
        out[:, b] = w / w.sum(-1, keepdim=True).clamp_min(info.tiny)
    return out


def _stitch_backward(last, P, R, C):
    r"""
    The Rabiner-scaled backward vectors at the block ends, from ``last`` (the last
    block's end) back: :math:`\hat\beta_{b-1} = e^{R_b - C_b} \odot (P_b \hat\beta_b)`,
    with :math:`C_b = \sum_{t \in b} \log c_t` the forward normalisers of block ``b``
    (so :math:`\hat\alpha \odot \hat\beta` is the posterior), capped at the largest
    float as in :func:`~pyroem.ops.scaled.scaled_forward_backward`. In NumPy on the CPU,
    in torch elsewhere, as :func:`_stitch`.
    """
    if P.device.type != "cpu":
        return _stitch_backward_torch(last, P, R, C)
    B, nb, K = R.shape
    p, r, c = P.detach().numpy(), R.detach().numpy(), C.detach().numpy()
    out = np.empty((B, nb, K), dtype=p.dtype)
    big = _NP_LIMITS[p.dtype].max
    out[:, nb - 1] = last.detach().numpy()
    with np.errstate(divide="ignore", under="ignore", over="ignore"):
        for b in range(nb - 2, -1, -1):
            w = np.matmul(p[:, b + 1], out[:, b + 1, :, None])[..., 0]
            w = np.log(w) + (r[:, b + 1] - c[:, b + 1, None])
            np.minimum(np.exp(w), big, out=out[:, b])
    return torch.from_numpy(out)


def _stitch_backward_torch(last, P, R, C):
    """:func:`_stitch_backward`'s recursion in torch, on the tensors' own device."""
    B, nb, K = R.shape
    big = torch.finfo(P.dtype).max
    out = P.new_empty(B, nb, K)
    out[:, nb - 1] = last
    for b in range(nb - 2, -1, -1):
        w = (P[:, b + 1] @ out[:, b + 1].unsqueeze(-1)).squeeze(-1)
        w = w.log() + (R[:, b + 1] - C[:, b + 1].unsqueeze(-1))
        out[:, b] = w.exp().clamp_max(big)
    return out


def _scaled_steps(log_emit, offset, nb, L):
    r"""The scaled emissions :math:`e_t = \exp(\log b_t - m_t)` of the ``S = T - 1``
    steps, time-major ``(L, B, nb, K)``, so that every step of a loop reads and writes one
    contiguous slab; padding steps emit 1."""
    B, T, K = log_emit.shape
    S = T - 1
    if nb * L == S:  # no padding steps: one pass straight into the time-major layout
        es = log_emit.new_empty(L, B, nb, K)
        torch.sub(log_emit[:, 1:].view(B, nb, L, K), offset[:, 1:].view(B, nb, L, 1),
                  out=es.permute(1, 2, 0, 3))
        return flushed_exp_(es)
    steps = log_emit.new_zeros(B, nb * L, K)
    torch.sub(log_emit[:, 1:], offset[:, 1:], out=steps[:, :S])
    return flushed_exp_(steps.view(B, nb, L, K).permute(2, 0, 1, 3).contiguous())


def _inside_forward(x, trans, es, pads):
    r"""Phase 3a: the scaled forward recursion inside all blocks at once from their start
    vectors ``x (B, nb, K)``: ``fw (L, B, nb, K)`` and the normalisers ``scale (L, B, nb)``
    (1 on padding, where :math:`\hat\alpha` is carried over)."""
    L = es.shape[0]
    tiny = torch.finfo(es.dtype).tiny
    fw = torch.empty_like(es)
    scale = es.new_empty(es.shape[:-1])
    for l in range(L):
        a = torch.matmul(x, trans, out=fw[l]).mul_(es[l])
        c = torch.sum(a, -1, out=scale[l])
        a.div_(c.clamp_min(tiny).unsqueeze(-1))
        pad = pads[l]
        if pad is not None:
            a[pad] = x[pad]
            c[pad] = 1.0
        x = a
    return fw, scale


def _inside_backward(y, trans, es, inv, pads):
    r"""Phase 3b: the Rabiner-scaled backward recursion inside all blocks at once from
    the block ends ``y (B, nb, K)``: :math:`\hat\beta_{t-1} = A u_t` with
    :math:`u_t = e_t \odot \hat\beta_t / c_t` written over ``es`` (zero on padding), ratios
    beyond the float range capped (see :func:`~pyroem.ops.scaled._backward`).
    Returns ``bw (L, B, nb, K)`` and :math:`\hat\beta` of each block's start frame."""
    L = es.shape[0]
    big = torch.finfo(es.dtype).max
    bw = torch.empty_like(es)
    trans_t = trans.T
    if L:
        bw[L - 1] = y
    for l in range(L - 1, -1, -1):
        # beta of the frame before step l, computed in place where it is stored
        out = bw[l - 1] if l else torch.empty_like(y)
        u = es[l].mul_(bw[l]).mul_(inv[l].unsqueeze(-1)).clamp_max_(big)
        torch.matmul(u, trans_t, out=out).clamp_max_(big)
        pad = pads[l]
        if pad is not None:
            u[pad] = 0.0
            out[pad] = bw[l][pad]
        y = out
    return bw, y


def _block_posteriors(trans, a0, y0, fw, bw, u, x_start, valid, T):
    r""":math:`\gamma` ``(B, T, K)`` (frame 0 from :math:`\hat\alpha_1 \odot \hat\beta_1`,
    the others from the blocks; zero on padding) and
    :math:`\sum_t \xi_t = A \odot \sum_t \hat\alpha_{t-1} u_t^\top`, with
    :math:`\hat\alpha_{t-1}` each block's start vector for its first step."""
    L, B, nb, K = fw.shape
    g = bw.mul_(fw)
    g0 = a0 * y0
    if drifts(g.dtype):
        n = safe_reciprocal(g.sum(-1, keepdim=True))
        g.mul_(n)
        u.mul_(n)
        g0.mul_(safe_reciprocal(g0.sum(-1, keepdim=True)))
    if L:
        pairs = x_start.reshape(-1, K).T @ u[0].reshape(-1, K)
        pairs = pairs + fw[:-1].reshape(-1, K).T @ u[1:].reshape(-1, K)
        xi = torch.where(trans > 0, trans * pairs, 0.0)
    else:
        xi = trans.new_zeros(K, K)
    gamma = fw.new_empty(B, 1 + nb * L, K)
    gamma[:, 0] = g0
    inner = gamma[:, 1:].view(B, nb, L, K)
    inner.copy_(g.permute(1, 2, 0, 3))
    if valid is not None:
        inner[(~valid).nonzero(as_tuple=True)] = 0.0
    return gamma[:, :T], xi


def blocked_forward_backward(log_start, trans, log_emit, lengths, final_w, length):
    r"""
    Forward-backward in blocks of ``length`` steps (the module docstring), Rabiner-scaled;
    arguments and results as :func:`~pyroem.ops.recursions.forward_backward`
    (``final_w``: the final states' indicator in the emissions' dtype, or ``None``).
    """
    log_emit = log_emit.contiguous()
    B, T, K = log_emit.shape
    tiny = torch.finfo(log_emit.dtype).tiny
    frame_mask = torch.arange(T, device=log_emit.device) < lengths.unsqueeze(-1)
    nb, L, masks, valid = blocks(T - 1, B, K, lengths, length, log_emit.device)
    pads = padding(masks)
    offset = finite_max(log_emit, -1).unsqueeze(-1)
    log_ev = (offset.squeeze(-1).double() * frame_mask).sum(-1)
    e0 = flushed_exp_(log_emit[:, 0] - offset[:, 0])
    es = _scaled_steps(log_emit, offset, nb, L)
    a0 = log_start.exp() * e0
    c0 = a0.sum(-1)
    a0 = a0 / c0.clamp_min(tiny).unsqueeze(-1)
    log_ev = log_ev + c0.double().log()
    if nb > 1:  # 1. transfer, 2a. stitch the filtered vectors at the block boundaries
        P, R = _transfer(trans, es, pads, B, nb, L, K)
        x_start = _stitch(a0, P, R)
    else:
        x_start = a0.unsqueeze(1)
    fw, scale = _inside_forward(x_start, trans, es, pads)
    log_scale = scale.double().log()
    log_ev = log_ev + log_scale.sum((0, 2))
    last = torch.ones_like(a0)
    if final_w is not None:
        # the filtered vector at each chain's last frame (padded steps are identity)
        end = ((fw[-1] if L else x_start)[:, -1] * final_w).sum(-1)
        log_ev = log_ev + end.double().log()
        last = final_w * safe_reciprocal(end).unsqueeze(-1)
    if nb > 1:  # 2b. Rabiner-scaled backward vectors at the block ends
        C = log_scale.sum(0)
        C = torch.where(torch.isfinite(C), C, 0.0).to(log_emit.dtype)  # impossible chains stay zero
        y = _stitch_backward(last, P, R, C)
    else:
        y = last.unsqueeze(1)
    bw, y = _inside_backward(y, trans, es, safe_reciprocal(scale), pads)
    gamma, xi = _block_posteriors(trans, a0, y[:, 0], fw, bw, es, x_start, valid, T)
    return log_ev, gamma, xi
