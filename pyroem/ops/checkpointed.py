r"""
Checkpointed forward-backward: the E-step of one very long chain in bounded memory.

The scaled forward-backward of :mod:`pyroem.ops.scaled` keeps every filtered vector
:math:`\hat\alpha_t`, :math:`O(T K)` numbers, plus the :math:`T \times K` emission
log-densities. Cut the chain into blocks of :math:`L` steps. The forward sweep keeps only
the filtered vector at the end of each block (the *checkpoint*) and the running
:math:`\log p(x_{1:t})`; the backward sweep visits the blocks from the last to the first,
recomputes each block's :math:`\hat\alpha` from its checkpoint (and its emissions, asked
for again), and runs Rabiner's scaled backward recursion through it:

.. math::

    \hat\alpha_t = \frac{(\hat\alpha_{t-1} A) \odot e_t}{c_t}, \qquad
    \hat\beta_{t-1} = \frac{A (e_t \odot \hat\beta_t)}{c_t}, \qquad
    \gamma_t = \hat\alpha_t \odot \hat\beta_t, \qquad
    \textstyle\sum_t \xi_t = A \odot \sum_t \hat\alpha_{t-1}^\top
        \frac{e_t \odot \hat\beta_t}{c_t},

with :math:`e_t = \exp(\log b_t - m_t)`, :math:`m_t = \max_k \log b_t(k)` and
:math:`\log p(X) = \sum_t (\log c_t + m_t)`. Recomputing a block repeats the forward
sweep's arithmetic exactly, so the result is that of the unchunked recursion (to
rounding), for :math:`O(T/L \cdot K + L K)` memory instead of :math:`O(T K)` and twice the
forward work. Each block's posteriors are handed to a ``visit`` callback (which
accumulates what it needs, e.g. emission statistics) and dropped.

Every chain of the batch has the same length (one long sequence is a batch of one);
steps are Python steps acting on all chains at once, so this is the memory route, not
the fast one (:mod:`pyroem.ops.blocked`).
"""

import math

import torch


def check_block_length(block_length):
    """A positive int, else ``ValueError``."""
    if isinstance(block_length, bool) or not isinstance(block_length, int) or block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}")
    return block_length


def _block_forward(start, trans, log_emit, checkpoint):
    """The filtered vectors of one block ``(B, L, K)``, the scaled emissions ``e``, the
    normalisers ``c`` ``(B, L)`` and ``log c_t + m_t`` in float64, from ``checkpoint``
    (the filtered vector before the block; ``None``: the chain starts, from ``start``)."""
    m = log_emit.max(-1, keepdim=True).values
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf: e = 0
    e = (log_emit - m).exp()
    alphas = torch.empty_like(e)
    c = e.new_empty(e.shape[:2])
    prev = checkpoint
    for t in range(e.shape[1]):
        pred = start.expand_as(e[:, t]) if prev is None else prev @ trans
        a = pred * e[:, t]
        c[:, t] = a.sum(-1)
        prev = a / c[:, t, None].clamp_min(torch.finfo(e.dtype).tiny)
        alphas[:, t] = prev
    log_c = c.to(torch.float64).log() + m[..., 0].to(torch.float64)
    return alphas, e, c, log_c


def _block_backward(trans, alphas, e, c, beta, checkpoint):
    """Posteriors ``(B, L, K)``, the block's :math:`\\sum \\hat\\alpha_{t-1}^\\top
    (e_t \\hat\\beta_t / c_t)` ``(K, K)`` (times ``A`` by the caller) and
    :math:`\\hat\\beta` before the block, from :math:`\\hat\\beta` at its end."""
    big, tiny = torch.finfo(e.dtype).max, torch.finfo(e.dtype).tiny
    gamma = torch.empty_like(alphas)
    outer = trans.new_zeros(trans.shape)
    for t in range(e.shape[1] - 1, -1, -1):
        gamma[:, t] = alphas[:, t] * beta
        prev = alphas[:, t - 1] if t > 0 else checkpoint
        w = e[:, t] * beta / c[:, t, None].clamp_min(tiny)
        if prev is not None:
            outer += prev.mT @ w
        # capped: a ratio past the float range only multiplies zero forward mass
        beta = (w @ trans.mT).clamp_max(big)
    return gamma, outer, beta


def checkpointed_forward_backward(log_start, trans, emissions, num_steps, block_length,
                                  visit):
    r"""
    Sum-product forward-backward on ``B`` chains of ``num_steps`` steps, in blocks of
    ``block_length`` steps, keeping one filtered vector per block.

    :param torch.Tensor log_start: :math:`\log \pi`, ``(K,)``.
    :param torch.Tensor trans: :math:`A`, ``(K, K)`` probabilities.
    :param callable emissions: ``emissions(a, b)`` returns :math:`\log b_t(k)` for steps
        ``a <= t < b``, shape ``(B, b - a, K)``; called twice per block (forward sweep,
        backward sweep), so it may compute them from the data on the fly.
    :param int num_steps: :math:`T`.
    :param int block_length: :math:`L`, steps per block.
    :param callable visit: ``visit(a, b, gamma)`` with the posteriors
        :math:`\gamma_t(k) = p(z_t = k | X)` of steps ``a <= t < b``, ``(B, b - a, K)``;
        called once per block, from the last block to the first.
    :returns: ``(log_evidence (B,) float64, xi (K, K))``, ``xi`` the expected transition
        counts summed over chains and time.
    """
    check_block_length(block_length)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    start = log_start.exp()
    bounds = [(a, min(a + block_length, num_steps)) for a in range(0, num_steps, block_length)]
    checkpoints, log_evidence, prev = [], None, None
    for a, b in bounds:  # forward sweep: one filtered vector per block is kept
        checkpoints.append(prev)
        alphas, _, _, log_c = _block_forward(start, trans, emissions(a, b), prev)
        total = log_c.sum(-1)
        log_evidence = total if log_evidence is None else log_evidence + total
        prev = alphas[:, -1]
        del alphas
    beta = torch.ones_like(prev)
    outer = trans.new_zeros(trans.shape)
    for (a, b), checkpoint in zip(reversed(bounds), reversed(checkpoints)):
        alphas, e, c, _ = _block_forward(start, trans, emissions(a, b), checkpoint)
        gamma, block_outer, beta = _block_backward(trans, alphas, e, c, beta, checkpoint)
        outer += block_outer
        del alphas, e, c
        visit(a, b, gamma)
    log_evidence = torch.where(torch.isnan(log_evidence), -math.inf, log_evidence)
    return log_evidence, trans * outer
