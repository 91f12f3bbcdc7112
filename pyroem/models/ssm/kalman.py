r"""
The Kalman filter and the Rauch-Tung-Striebel smoother of a linear-Gaussian state-space
model, as pure functions of its parameters and a padded batch of sequences,

.. math::

    z_1 \sim \mathcal N(\mu_0, P_0), \qquad
    z_t = A z_{t-1} + w_t, \; w_t \sim \mathcal N(0, Q), \qquad
    x_t = C z_t + v_t, \; v_t \sim \mathcal N(0, R)

(the first state emits the first observation, as in pykalman and dynamax). They know
nothing of models: :class:`~pyroem.models.LinearGaussianSSM` calls them.

**Covariances are shared.** The covariances of the filter,
:math:`P_{t|t-1}`, :math:`P_{t|t}`, the gains :math:`K_t` and the innovation
covariances :math:`S_t = C P_{t|t-1} C^\top + R`, do not depend on the data: one
recursion (the Riccati recursion) serves every sequence of the batch. Once
:math:`P_{t|t-1}` stops changing (to a few units of rounding) it has reached the steady
state of a time-invariant model, and the rest is filled with the constant; long sequences
therefore cost few covariance steps. The smoother's covariances depend on a sequence's
length only: they are computed once per distinct length.

**The means are linear recurrences** once the gains are known,
:math:`m_{t|t} = (I - K_t C) A\, m_{t-1|t-1} + K_t x_t` forwards and
:math:`m_{t|T} = J_t m_{t+1|T} + (I - J_t A) m_{t|t}` backwards, solved in
:math:`O(\sqrt T)` Python steps by :func:`~pyroem.models.ssm.scan.linear_recurrence`.

**Numerics**: the filtered covariance is the Joseph form
:math:`(I - K C) P (I - K C)^\top + K R K^\top` (positive semi-definite by
construction), every covariance is symmetrised, inverses are Cholesky solves, the
smoothed covariance is :math:`\Sigma_t + J_t P_{t+1|T} J_t^\top` with the conditional
covariance :math:`\Sigma_t = (I - J_t A) P_{t|t} (I - J_t A)^\top + J_t Q J_t^\top`
(a sum of positive semi-definite terms), and the log-likelihood is summed in float64.
"""

import math
from typing import NamedTuple

import torch

from pyroem.models.ssm.scan import linear_recurrence

#: the covariance recursion checks for its steady state every this many steps
STEADY_CHECK = 16


class LinearGaussian(NamedTuple):
    """The parameters of the model (tensors of one dtype)."""

    transition_matrix: torch.Tensor  # A (S, S)
    observation_matrix: torch.Tensor  # C (O, S)
    transition_cov: torch.Tensor  # Q (S, S)
    observation_cov: torch.Tensor  # R (O, O)
    initial_mean: torch.Tensor  # mu_0 (S,)
    initial_cov: torch.Tensor  # P_0 (S, S)


class Covariances(NamedTuple):
    """The data-independent part of the filter, ``T`` steps (shared by all sequences)."""

    predicted: torch.Tensor  # P_{t|t-1} (T, S, S)
    filtered: torch.Tensor  # P_{t|t} (T, S, S)
    gain: torch.Tensor  # K_t (T, S, O)
    innovation_tril: torch.Tensor  # chol(S_t) (T, O, O)
    steady: int  # first step from which all are constant (T: not reached)


class Filtered(NamedTuple):
    r"""The Kalman filter of a padded batch.

    :ivar mean: :math:`m_{t|t}` ``(B, T, S)`` (zero on padding).
    :ivar cov: :class:`Covariances` of every step (shared by the sequences).
    :ivar log_prob: :math:`\log p(x_{1:T_b})` per sequence ``(B,)``.
    """

    mean: torch.Tensor
    cov: Covariances
    log_prob: torch.Tensor


class Smoothed(NamedTuple):
    r"""The RTS smoother of a padded batch; covariances per distinct length.

    :ivar mean: :math:`m_{t|T}` ``(B, T, S)`` (zero on padding).
    :ivar cov: :math:`P_{t|T}` ``(G, T, S, S)`` for the ``G`` distinct lengths (zero on
        padding).
    :ivar cross: :math:`\mathrm{Cov}(z_{t+1}, z_t | x)` ``(G, T - 1, S, S)``.
    :ivar group: ``(B,)`` index of each sequence's length among the distinct ones.
    :ivar gain: :math:`J_t = P_{t|t} A^\top P_{t+1|t}^{-1}` ``(T - 1, S, S)``.
    :ivar cond_cov: :math:`\Sigma_t = \mathrm{Cov}(z_t | z_{t+1}, x_{1:t})`
        ``(T - 1, S, S)``.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    cross: torch.Tensor
    group: torch.Tensor
    gain: torch.Tensor
    cond_cov: torch.Tensor


def symmetrize(m):
    return 0.5 * (m + m.mT)


def _check_info(info, what):
    if bool(info.any()):
        raise ValueError(f"the {what} is not positive definite: the noise covariances are "
                         "(numerically) singular; give transition_cov and observation_cov "
                         "positive definite values (reg_covar adds a floor after each M-step)")


def _steady(history, P, tol):
    """Has ``P`` changed by at most ``tol`` (relative) over the last ``STEADY_CHECK`` steps?"""
    if tol is None or len(history) <= STEADY_CHECK or len(history) % STEADY_CHECK:
        return False
    change = (P - history[-STEADY_CHECK]).abs().max()
    return bool(change <= tol * P.abs().max())


def filter_covariances(params, num_steps, steady_tol="auto"):
    r"""
    The Riccati recursion: :math:`P_{1|0} = P_0`,
    :math:`S_t = C P_{t|t-1} C^\top + R`, :math:`K_t = P_{t|t-1} C^\top S_t^{-1}`,
    :math:`P_{t|t} = (I - K_t C) P_{t|t-1} (I - K_t C)^\top + K_t R K_t^\top`,
    :math:`P_{t+1|t} = A P_{t|t} A^\top + Q`.

    :param LinearGaussian params: the model.
    :param int num_steps: ``T``.
    :param steady_tol: stop once :math:`P_{t|t-1}` changed by at most this (relative to
        its largest entry) over :data:`STEADY_CHECK` steps, and fill in the constant;
        ``"auto"``: 16 units of rounding of the dtype; ``None``: never.
    :returns: :class:`Covariances`.
    :raises ValueError: when an innovation covariance is not positive definite.
    """
    A, C, Q, R, _, P = params
    if steady_tol == "auto":
        steady_tol = 16 * torch.finfo(P.dtype).eps
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    chol_r = torch.linalg.cholesky_ex(R)[0]
    pred, filt, gains, trils, infos = [], [], [], [], []
    for _ in range(num_steps):
        pred.append(P)
        CP = C @ P
        tril, info = torch.linalg.cholesky_ex(torch.addmm(R, CP, C.T))
        gain = torch.cholesky_solve(CP, tril).T  # P C^T S^-1
        ikc = torch.addmm(eye, gain, C, alpha=-1)
        kl = gain @ chol_r
        Pf = symmetrize(torch.addmm(ikc @ P @ ikc.T, kl, kl.T))
        filt.append(Pf)
        gains.append(gain)
        trils.append(tril)
        infos.append(info)
        P = symmetrize(torch.addmm(Q, A @ Pf, A.T))
        if _steady(pred, P, steady_tol):
            break
    _check_info(torch.stack(infos), "innovation covariance C P C^T + R")
    steady = len(pred)
    rest = num_steps - steady
    out = [torch.stack(v) for v in (pred, filt, gains, trils)]
    if rest:
        # P_{t+1|t} = P here: the rest of the recursion repeats the last step
        out = [torch.cat([v, v[-1:].expand((rest,) + v.shape[1:])]) for v in out]
    return Covariances(*out, steady)


def _innovation_log_prob(params, cov, x, pred_mean, lengths):
    """:math:`\\log N(x_t; C m_{t|t-1}, S_t)` summed over each sequence's frames, float64."""
    C = params.observation_matrix
    err = x - pred_mean @ C.T  # (T, B, O)
    white = torch.linalg.solve_triangular(cov.innovation_tril, err.mT, upper=False)  # (T, O, B)
    log_det = cov.innovation_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (T,)
    O = x.shape[-1]
    per_step = -0.5 * white.square().sum(-2) - log_det.unsqueeze(-1) \
        - 0.5 * O * math.log(2 * math.pi)  # (T, B)
    mask = torch.arange(x.shape[0], device=x.device).unsqueeze(-1) < lengths
    return torch.where(mask, per_step, 0).double().sum(0)


def kalman_filter(params, x, lengths, steady_tol="auto", block_length=None):
    r"""
    The Kalman filter of a padded batch of sequences.

    :param LinearGaussian params: the model.
    :param torch.Tensor x: ``(B, T, O)``, padded (padding is never read).
    :param torch.Tensor lengths: ``(B,)``.
    :param steady_tol: see :func:`filter_covariances`.
    :param int block_length: of :func:`~pyroem.models.ssm.scan.linear_recurrence`.
    :returns: :class:`Filtered`; ``log_prob`` in the data's dtype (summed in float64).
    """
    A, C = params.transition_matrix, params.observation_matrix
    T = x.shape[1]
    cov = filter_covariances(params, T, steady_tol)
    xt = x.transpose(0, 1)  # time-major (T, B, O)
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    ikc = eye - cov.gain @ C  # (T, S, S)
    u = xt @ cov.gain.mT  # K_t x_t (T, B, S)
    u[0] += ikc[0] @ params.initial_mean
    mean = linear_recurrence(ikc @ A, u, block_length=block_length)  # m_{t|t}
    pred_mean = torch.cat([params.initial_mean.expand_as(mean[:1]), mean[:-1] @ A.T])
    log_prob = _innovation_log_prob(params, cov, xt, pred_mean, lengths)
    mask = (torch.arange(T, device=x.device).unsqueeze(-1) < lengths).unsqueeze(-1)
    mean = torch.where(mask, mean, 0).transpose(0, 1)
    return Filtered(mean, cov, log_prob.to(x.dtype))


def _smoother_gains(params, cov):
    r""":math:`J_t` and :math:`\Sigma_t` for :math:`t = 1..T-1`, ``(T - 1, S, S)`` each."""
    A, Q = params.transition_matrix, params.transition_cov
    tril, info = torch.linalg.cholesky_ex(cov.predicted[1:])
    _check_info(info, "predicted state covariance A P A^T + Q")
    gain = torch.cholesky_solve(A @ cov.filtered[:-1], tril).mT  # P_{t|t} A^T P_{t+1|t}^-1
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    ija = eye - gain @ A
    cond = ija @ cov.filtered[:-1] @ ija.mT + gain @ Q @ gain.mT
    return gain, symmetrize(cond)


def _ends(lengths, T):
    """Masks ``(T, n)``: before the last frame, at the last frame."""
    t = torch.arange(T, device=lengths.device).unsqueeze(-1)
    return t < lengths - 1, t == lengths - 1


def rts_smoother(params, filtered, lengths, block_length=None):
    r"""
    The Rauch-Tung-Striebel smoother from :func:`kalman_filter`'s result:

    .. math::

        m_{t|T} = m_{t|t} + J_t (m_{t+1|T} - A m_{t|t}), \qquad
        P_{t|T} = \Sigma_t + J_t P_{t+1|T} J_t^\top, \qquad
        \mathrm{Cov}(z_{t+1}, z_t | x) = P_{t+1|T} J_t^\top,

    from :math:`m_{T_b|T_b} , P_{T_b|T_b}` at each sequence's last frame.

    :returns: :class:`Smoothed`.
    """
    A = params.transition_matrix
    cov = filtered.cov
    T, S = filtered.mean.shape[1:]
    gain, cond = _smoother_gains(params, cov)
    eye = torch.eye(S, dtype=A.dtype, device=A.device)
    F = torch.cat([eye.unsqueeze(0), gain.flip(0)])  # backwards: F[s] = J_{T-1-s}
    # means: u_t = (I - J_t A) m_{t|t} before the end, m_{t|t} at it, 0 after
    mf = filtered.mean.transpose(0, 1)
    inner, last = _ends(lengths, T)
    u = torch.cat([mf[:-1] - mf[:-1] @ (gain @ A).mT, mf[-1:]])
    u = torch.where(inner.unsqueeze(-1), u, torch.where(last.unsqueeze(-1), mf, 0))
    mean = linear_recurrence(F, u.flip(0), block_length=block_length).flip(0)
    # covariances, once per distinct length
    distinct, group = torch.unique(lengths, return_inverse=True)
    inner, last = (m[..., None, None] for m in _ends(distinct, T))
    U = torch.cat([cond, cov.filtered[-1:]]).unsqueeze(1)
    U = torch.where(inner, U, torch.where(last, cov.filtered.unsqueeze(1), 0))
    V = linear_recurrence(F, U.flip(0), congruence=True, block_length=block_length).flip(0)
    V = symmetrize(V).transpose(0, 1)  # (G, T, S, S)
    cross = V[:, 1:] @ gain.mT
    return Smoothed(mean.transpose(0, 1), V, cross, group, gain, cond)
