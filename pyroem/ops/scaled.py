r"""
The scaled sum-product recursion on one block (no blocking), state-major, and the
numerics that the blocked recursions share with it.

With :math:`e_t(k) = \exp(\log b_t(k) - m_t)`, :math:`m_t = \max_k \log b_t(k)`, the
forward pass normalises every step,

.. math::

    \hat\alpha_1 = \frac{\pi \odot e_1}{c_1}, \qquad
    \hat\alpha_t = \frac{(A^\top \hat\alpha_{t-1}) \odot e_t}{c_t}, \qquad
    \log p(x_{1:T}) = \sum_t \log c_t + \sum_t m_t,

and the backward pass uses Rabiner's scaling, dividing by the same :math:`c_t`:
:math:`\hat\beta_{t-1} = A (e_t \odot \hat\beta_t) / c_t`. Then
:math:`\gamma_t = \hat\alpha_t \odot \hat\beta_t` and
:math:`\sum_t \xi_t = A \odot \sum_t \hat\alpha_{t-1} (e_t \odot \hat\beta_t / c_t)^\top`
need no normalising pass.
"""

import math

import torch


def safe_reciprocal(c):
    """``1 / c``, and ``0`` where ``c = 0`` (impossible data keeps zero probabilities)."""
    return torch.where(c > 0, c.clamp_min(torch.finfo(c.dtype).tiny).reciprocal(), 0.0)


def finite_max(w, dim):
    """``w.amax(dim)``, with ``0`` where the maximum is not finite (a frame that no state
    can emit, or all ``-inf``): the offset taken out before exponentiating."""
    top = w.amax(dim)
    return torch.where(torch.isfinite(top), top, torch.zeros_like(top))


def flushed_exp_(x):
    r"""``x.exp_()`` in place, with results below :math:`e` times the smallest normal
    float set to zero (as flush-to-zero arithmetic makes the subnormal ones,
    :mod:`~pyroem.ops.denormals`; beside the maximum of a scaled frame, 1, they are
    nothing).

    The vectorised exp takes a slow path, about fifteen times slower, for every input
    whose result is near or below the smallest normal float (inputs below about -87 in
    float32, where scaled emissions of unlikely states often are): the inputs are clamped
    one above that threshold first and the results at most :math:`e` times the smallest
    normal float (a hair above, for the rounding of ``exp``) zeroed after, so that exact
    zeros (``-inf``) stay zero: three passes, without a mask (bench/gmm.py: the mask's
    comparison and fill were half the float32 E-step's elementwise time). Float64
    exponentiates directly.
    """
    if x.dtype == torch.float64:
        # the threshold is -707 there: rare in scaled frames, not worth two more passes
        return x.exp_()
    low = math.log(torch.finfo(x.dtype).tiny) + 1.0
    floor = math.exp(low) * (1 + 1e-5)
    return torch.nn.functional.threshold_(x.clamp_min_(low).exp_(), floor, 0.0)


def drifts(dtype):
    """Whether the posteriors must be renormalised per frame.

    Rabiner's backward divides by every :math:`c_t`: the rounding of the :math:`c_t`
    multiplies along the chain, a common factor per frame (about 1e-3 after 1e5 float32
    steps, 1e-11 in float64). Below float64 the posteriors are renormalised per frame
    (:math:`n_t = \\sum_k \\gamma_t(k)`, also the pairwise normaliser of :math:`\\xi_t`).
    """
    return dtype != torch.float64


def step_masks(lengths, T):
    """``valid (T, B)`` (frame ``t`` of chain ``b`` is data), the per-frame masks
    (``None`` where every chain has frame ``t``) and whether any frame is padding."""
    valid = torch.arange(T, device=lengths.device).unsqueeze(-1) < lengths
    partial = (~valid).any(-1).tolist()
    return valid, [valid[t] if partial[t] else None for t in range(T)], any(partial)


def _forward(log_start, trans, e, masks):
    r"""Normalised forward vectors ``fw (T, K, B)`` and normalisers ``scale (T, B)``;
    padded frames repeat the chain's last :math:`\hat\alpha` (and have :math:`c_t = 1`)."""
    T = e.shape[0]
    tiny = torch.finfo(e.dtype).tiny
    fw = torch.empty_like(e)
    scale = e.new_empty(T, e.shape[2])
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
    return fw, scale


def _backward(trans, e, inv, masks, last):
    r"""
    Rabiner-scaled backward vectors ``bw (T, K, B)`` from :math:`\hat\beta_T` = ``last``;
    :math:`u_t = e_t \odot \hat\beta_t / c_t` is written over ``e[t]`` (not needed after
    that step) and returned as ``u = e[1:]``, zero on padding.

    :math:`\hat\beta_t(k) = p(x_{t+1:T} | z_t = k) / p(x_{t+1:T} | x_{1:t})` may
    overflow where a state unlikely in the past explains the future much better
    (float32, sparse transitions). Such ratios are capped at the largest float: they only
    ever multiply (numerically) zero forward probabilities, and capping keeps
    ``0 * inf = NaN`` out of the structural zeros of :math:`A` and of :math:`\gamma`.
    """
    T = e.shape[0]
    bw = torch.empty_like(e)
    bw[T - 1] = last
    u = e[1:]
    trans = trans.contiguous()
    big = torch.finfo(e.dtype).max
    for t in range(T - 1, 0, -1):
        ut = u[t - 1].mul_(bw[t]).mul_(inv[t]).clamp_max_(big)
        torch.mm(trans, ut, out=bw[t - 1]).clamp_max_(big)
        if masks[t] is not None:
            ut.masked_fill_(~masks[t], 0.0)
            bw[t - 1].copy_(torch.where(masks[t], bw[t - 1], bw[t]))
    return bw, u


def _posteriors(trans, fw, bw, u, valid, padded):
    r""":math:`\gamma_t = \hat\alpha_t \odot \hat\beta_t` (written over ``bw``, zero on
    padding) and :math:`\sum_t \xi_t = A \odot \sum_t \hat\alpha_{t-1} u_t^\top`."""
    gamma = bw.mul_(fw)
    if drifts(gamma.dtype):
        n = safe_reciprocal(gamma.sum(1, keepdim=True))
        gamma.mul_(n)
        u.mul_(n[1:])
    pairs = torch.bmm(fw[:-1], u.transpose(1, 2)).sum(0)
    xi = torch.where(trans > 0, trans * pairs, 0.0)  # pairs may be inf where A is zero
    if padded:
        gamma.mul_(valid.unsqueeze(1))
    return gamma, xi


def scaled_forward_backward(log_start, trans, lt, lengths, final_w):
    r"""
    Forward-backward on state-major emissions ``lt (T, K, B)`` (:math:`\log b_t(k)` of
    chain ``b``), in one block (the module docstring).

    Everything is state-major, ``(T, K, B)``: a step is then one wide product
    ``(K, K) @ (K, B)`` (about twice as fast as ``(B, K) @ (K, K)``), sums over states run
    down contiguous rows, and Gaussian emissions and their moments are batched products
    in that layout too (:func:`~pyroem.models.gaussian_emission.state_major_log_prob`).

    :param final_w: ``(K,)`` indicator of the allowed final states in the emissions'
        dtype, or ``None``: then :math:`\hat\beta_T = \mathbb 1_F / \sum_F \hat\alpha_T`
        (so that :math:`\gamma_T` sums to one) and :math:`\log p` gains
        :math:`\log \sum_F \hat\alpha_T`.
    :returns: ``(log_evidence (B,), gamma (T, K, B), xi (K, K))``; ``log_evidence`` is
        float64.
    """
    T, K, B = lt.shape
    valid, masks, padded = step_masks(lengths, T)
    offset = finite_max(lt, 1)
    log_ev = (offset.double() * valid).sum(0)
    # one pass, from whatever layout the caller's emissions have
    e = flushed_exp_(torch.sub(lt, offset.unsqueeze(1), out=lt.new_empty(T, K, B)))
    fw, scale = _forward(log_start, trans, e, masks)
    log_ev += scale.double().log().sum(0)
    inv = safe_reciprocal(scale)  # 0 where c_t = 0: alpha, beta and gamma stay zero
    if final_w is None:
        last = 1.0
    else:
        end = final_w @ fw[T - 1]  # fw[T - 1] is each chain's last alpha
        log_ev += end.double().log()
        last = final_w.unsqueeze(-1) * safe_reciprocal(end)
    bw, u = _backward(trans, e, inv, masks, last)
    gamma, xi = _posteriors(trans, fw, bw, u, valid, padded)
    return log_ev, gamma, xi
