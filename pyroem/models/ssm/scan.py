r"""
Linear recurrences along time whose matrices are shared by a batch,

.. math::

    x_t = F_t x_{t-1} + u_t \quad \text{(vectors)}, \qquad
    X_t = F_t X_{t-1} F_t^\top + U_t \quad \text{(matrices, a congruence)}, \qquad
    x_{-1} = 0, \quad t = 0, \dots, T - 1.

The Kalman filter's means (:math:`F_t = (I - K_t C) A`), the RTS smoother's means
(:math:`F_t = J_t`, run backwards) and the smoother's covariances (a congruence with
:math:`J_t`) are recurrences of this kind once the gains are known.

A plain loop costs :math:`T` Python steps. Cut into ``nb`` blocks of ``L`` steps
(:math:`L \approx \sqrt T`), the recurrence takes :math:`2L + nb` steps:

1. **inside**: every block runs the recurrence from a zero state, all blocks at once,
   and accumulates its transfer matrices :math:`\Phi_{n,k} = F_{n,k} \cdots F_{n,0}`;
2. **stitch**: the exact state at each block's end,
   :math:`c_n = \ell_{n,L-1} + \Phi_{n,L-1} c_{n-1}` (``nb`` steps);
3. **correct**: :math:`x_{n,k} = \ell_{n,k} + \Phi_{n,k} c_{n-1}` (resp.
   :math:`\Phi_{n,k} c_{n-1} \Phi_{n,k}^\top`), one vectorised operation.

The result equals the plain loop's up to rounding (the sums are associated differently).
"""

import math

import torch

#: below this many steps a plain loop is used
MIN_BLOCKED_STEPS = 64


def _apply(F, x, congruence):
    """:math:`F x` for vectors ``x (..., B, S)`` or :math:`F X F^\\top` for matrices
    ``X (..., B, S, S)``; ``F (..., S, S)`` is shared by the ``B`` axis."""
    if congruence:
        F = F.unsqueeze(-3)
        return F @ x @ F.mT
    return x @ F.mT


def _plain(F, u, congruence):
    out = [u[0]]
    for t in range(1, u.shape[0]):
        out.append(_apply(F[t], out[-1], congruence) + u[t])
    return torch.stack(out)


def auto_block_length(num_steps):
    """Steps per block: about :math:`\\sqrt T`, or ``num_steps`` (one block, a plain loop)
    for short recurrences."""
    if num_steps < MIN_BLOCKED_STEPS:
        return max(1, num_steps)
    return math.ceil(math.sqrt(num_steps))


def linear_recurrence(F, u, congruence=False, block_length=None):
    r"""
    Solve :math:`x_t = F_t x_{t-1} + u_t` (or the congruence
    :math:`X_t = F_t X_{t-1} F_t^\top + U_t`) from :math:`x_{-1} = 0`, time-major.

    :param torch.Tensor F: ``(T, S, S)``, shared by the batch (``F[0]`` is not used).
    :param torch.Tensor u: ``(T, B, S)`` (vectors) or ``(T, B, S, S)`` (``congruence``).
    :param bool congruence: matrices ``X_t`` instead of vectors.
    :param int block_length: steps per block (``None``: :func:`auto_block_length`; ``T``
        or more: a plain loop).
    :returns: ``x`` of ``u``'s shape.
    """
    T = u.shape[0]
    L = auto_block_length(T) if block_length is None else max(1, int(block_length))
    if L >= T:
        return _plain(F, u, congruence)
    nb = -(-T // L)
    pad = nb * L - T
    if pad:
        eye = torch.eye(F.shape[-1], dtype=F.dtype, device=F.device)
        F = torch.cat([F, eye.expand(pad, *F.shape[1:])])
        u = torch.cat([u, u.new_zeros((pad,) + u.shape[1:])])
    # block-major (L, nb, ...): step k of every block is one contiguous slice
    Fb = F.reshape(nb, L, *F.shape[1:]).transpose(0, 1).contiguous()
    ub = u.reshape(nb, L, *u.shape[1:]).transpose(0, 1).contiguous()
    local, phi = [ub[0]], [Fb[0]]
    for k in range(1, L):
        local.append(_apply(Fb[k], local[-1], congruence) + ub[k])
        phi.append(Fb[k] @ phi[-1])
    local, phi = torch.stack(local), torch.stack(phi)  # (L, nb, B, ...), (L, nb, S, S)
    carry = [local[-1, 0]]
    for n in range(1, nb - 1):
        carry.append(_apply(phi[-1, n], carry[-1], congruence) + local[-1, n])
    before = torch.stack([torch.zeros_like(carry[0])] + carry)  # state before block n
    x = local + _apply(phi, before.expand_as(local), congruence)
    return x.transpose(0, 1).reshape((nb * L,) + u.shape[1:])[:T]
