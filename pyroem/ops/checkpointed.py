r"""
Checkpointed forward-backward: the E-step of one very long chain in bounded memory.

The forward-backward of :mod:`pyroem.ops.recursions` holds :math:`O(T K)` numbers (the
filtered vectors, the posteriors, the :math:`T \times K` emission log-densities). Cut the
chain into blocks of :math:`L` steps, :math:`[a, b)`:

- **forward sweep**: each block is run from the predicted distribution of its first
  state, :math:`p(z_a | x_{<a}) = \hat\alpha_{a-1} A`; its log-evidence is
  :math:`\log p(x_{a:b} | x_{<a})` (summed: :math:`\log p(X)`), and its last posterior,
  without future weights, is the filtered vector :math:`\hat\alpha_{b-1}`, the only thing
  kept (the *checkpoint*);
- **backward sweep**, from the last block to the first: each block is run again from its
  checkpoint, now with final weights :math:`w \propto \beta_{b-1} = p(x_{\ge b} | z_{b-1})`
  (so that its posteriors :math:`\gamma_t` and transitions :math:`\xi_t` condition on all
  the data), then

  .. math::

      \xi_{a}(i, j) = \hat\alpha_{a-1}(i) A_{ij} \frac{\gamma_a(j)}{p(z_a = j | x_{<a})},
      \qquad \beta_{a-1} \propto A \frac{\gamma_a}{p(z_a | x_{<a})}

  give the transition into the block and the weights of the block before it.

Each block runs the package's own forward-backward (compiled or scaled), so the results
are those of the unchunked recursion to rounding, for :math:`O(T/L \cdot K + L K)` memory
instead of :math:`O(T K)` and about twice the work (each block runs twice). Each block's
posteriors go to a ``visit`` callback (which accumulates what it needs, e.g. emission
statistics) and are dropped.
"""

import torch

from pyroem.ops.recursions import forward_backward


def check_block_length(block_length):
    """A positive int, else ``ValueError``."""
    if isinstance(block_length, bool) or not isinstance(block_length, int) or block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}")
    return block_length


def _predicted(checkpoint, trans):
    r""":math:`p(z_a | x_{<a}) = \hat\alpha_{a-1} A`, and its log, for one chain."""
    pred = checkpoint @ trans
    return pred, pred.log()


def _run_block(log_prior, trans, log_emit, weights=None):
    r"""The chain's forward-backward on one block (``log_emit`` ``(1, L, K)``) from the
    prior ``log_prior`` of its first state; with ``weights`` :math:`\propto p(x_{>b} |
    z_{b-1})` at the block's last step, so that its posteriors condition on the future."""
    lengths = torch.tensor([log_emit.shape[1]], device=log_emit.device)
    return forward_backward(log_prior, trans, log_emit, lengths, weights)


def _boundary(checkpoint, trans, pred, gamma_first):
    r"""The transition into a block from the step before it: :math:`\xi(i, j) =
    \hat\alpha_{a-1}(i) A_{ij} \gamma_a(j) / p(z_a = j | x_{<a})`, and the backward
    weights at the previous block's end, :math:`\hat\beta_{a-1} \propto A (\gamma_a /
    p(z_a | x_{<a}))` (scaled to a maximum of 1)."""
    ratio = torch.where(pred > 0, gamma_first / torch.where(pred > 0, pred, 1), 0)
    xi = checkpoint.unsqueeze(-1) * trans * ratio
    beta = trans @ ratio
    return xi, beta / beta.max().clamp_min(torch.finfo(beta.dtype).tiny)


def _one_chain(log_start, trans, emissions, bounds, visit_chain):
    r"""The checkpointed pass of one chain: ``(log_evidence, xi)``."""
    checkpoints, log_evidence = [], 0.0
    for a, b in bounds:  # forward sweep: one filtered vector per block is kept
        prior = log_start if not checkpoints else _predicted(checkpoints[-1], trans)[1]
        log_ev, gamma, _ = _run_block(prior, trans, emissions(a, b))
        log_evidence = log_evidence + log_ev[0].to(torch.float64)
        checkpoints.append(gamma[0, -1].clone())  # no future weights: the filtered vector
        del gamma
    xi, weights = trans.new_zeros(trans.shape), None
    for index in range(len(bounds) - 1, -1, -1):  # backward sweep, block by block
        a, b = bounds[index]
        checkpoint = checkpoints[index - 1] if index else None
        pred, prior = (None, log_start) if index == 0 else _predicted(checkpoint, trans)
        _, gamma, block_xi = _run_block(prior, trans, emissions(a, b), weights)
        xi += block_xi
        if index:
            boundary_xi, weights = _boundary(checkpoint, trans, pred, gamma[0, 0])
            xi += boundary_xi
        visit_chain(a, b, gamma)
    return log_evidence, xi


def checkpointed_forward_backward(log_start, trans, emissions, num_steps, block_length,
                                  visit):
    r"""
    Sum-product forward-backward on one chain of ``num_steps`` steps, in blocks of
    ``block_length`` steps, keeping one filtered vector per block.

    :param torch.Tensor log_start: :math:`\log \pi`, ``(K,)``.
    :param torch.Tensor trans: :math:`A`, ``(K, K)`` probabilities.
    :param callable emissions: ``emissions(a, b)`` returns :math:`\log b_t(k)` for steps
        ``a <= t < b``, shape ``(1, b - a, K)``; called twice per block (forward sweep,
        backward sweep), so it may compute them from the data on the fly.
    :param int num_steps: :math:`T`.
    :param int block_length: :math:`L`, steps per block.
    :param callable visit: ``visit(a, b, gamma)`` with the posteriors
        :math:`\gamma_t(k) = p(z_t = k | X)` of steps ``a <= t < b``, ``(1, b - a, K)``;
        called once per block, from the last block to the first.
    :returns: ``(log_evidence (1,) float64, xi (K, K))``, ``xi`` the expected transition
        counts summed over time.
    :raises ValueError: for a bad ``block_length`` or ``num_steps``, or emissions of
        another shape.
    """
    check_block_length(block_length)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    bounds = [(a, min(a + block_length, num_steps)) for a in range(0, num_steps, block_length)]

    def checked(a, b):
        log_emit = emissions(a, b)
        if log_emit.dim() != 3 or log_emit.shape[0] != 1 or log_emit.shape[1] != b - a:
            raise ValueError(f"emissions({a}, {b}) must have shape (1, {b - a}, K) (one "
                             f"chain), got {tuple(log_emit.shape)}")
        return log_emit
    log_evidence, xi = _one_chain(log_start, trans, checked, bounds, visit)
    return log_evidence.reshape(1), xi
