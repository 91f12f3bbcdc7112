r"""
A data-driven start for a linear-Gaussian state-space model (``init="pca"``).

:math:`C` takes the leading eigenvectors :math:`U` of the (uncentred) second moment of
the frames (the model has no offset: a state carries the data's mean), the states are
estimated by projection, :math:`\hat z_t = U^\top x_t`, and the rest is least squares
on those estimates:

- :math:`A` regresses :math:`\hat z_{t+1}` on :math:`\hat z_t` within the sequences
  (ridge :math:`10^{-3}` of the average state power), :math:`Q` is the covariance of
  its residuals;
- :math:`R` is the covariance of :math:`x_t - C \hat z_t` plus a tenth of the average
  frame variance (the projection explains all of :math:`x` when :math:`S \ge O`);
- :math:`\mu_0` is the mean of the first :math:`\hat z`, :math:`P_0` the covariance of
  all of them.

With more states than observed dimensions (:math:`S > O`) the extra columns of
:math:`C` are small random numbers drawn from ``generator``. :math:`Q` and :math:`P_0`
get a floor of :math:`10^{-2}` of the average state variance on their diagonal, so the
start is positive definite.
"""

import torch


def _floored(cov, floor):
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
    return 0.5 * (cov + cov.T) + floor * eye


def _covariance(rows):
    centred = rows - rows.mean(0)
    return centred.T @ centred / max(rows.shape[0], 1)


def _transitions(z, lengths):
    """``(previous, next)`` state estimates of every transition within a sequence."""
    t = torch.arange(z.shape[1] - 1)
    pair = t < (lengths.unsqueeze(-1) - 1)
    return z[:, :-1][pair], z[:, 1:][pair]


def pca_start(x, lengths, state_dim, generator):
    """
    Starting parameters from the data (see the module docstring).

    :param torch.Tensor x: padded data ``(B, T, O)`` (padding zero).
    :param torch.Tensor lengths: ``(B,)``, at least one sequence of two frames.
    :param int state_dim: ``S``.
    :param torch.Generator generator: for the extra columns of :math:`C` when ``S > O``.
    :returns: ``{attribute name: float64 tensor}``.
    """
    x = x.double()
    B, T, O = x.shape
    S = state_dim
    frames = x[torch.arange(T) < lengths.unsqueeze(-1)]
    _, vectors = torch.linalg.eigh(frames.T @ frames / frames.shape[0])
    k = min(S, O)
    scale = float(_covariance(frames).diagonal().mean().clamp_min(1e-12))
    C = torch.zeros(O, S, dtype=torch.float64)
    C[:, :k] = vectors[:, -k:].flip(-1)
    if S > O:
        extra = torch.randn(O, S - O, generator=generator, dtype=torch.float64)
        C[:, k:] = 0.1 * extra
    z = x @ C[:, :k]
    z = torch.cat([z, z.new_zeros(B, T, S - k)], -1)
    prev, nxt = _transitions(z, lengths)
    gram = prev.T @ prev
    ridge = 1e-3 * float(gram.diagonal().mean().clamp_min(1e-12))
    A = torch.linalg.solve(gram + ridge * torch.eye(S, dtype=torch.float64), prev.T @ nxt).T
    states = z[torch.arange(T) < lengths.unsqueeze(-1)]
    state_scale = float(_covariance(states).diagonal().mean().clamp_min(1e-12 * scale))
    resid = frames - states @ C.T
    return {
        "transition_matrix": A,
        "observation_matrix": C,
        "transition_cov": _floored(_covariance(nxt - prev @ A.T), 1e-2 * state_scale),
        "observation_cov": _floored(_covariance(resid), 0.1 * scale),
        "initial_mean": z[:, 0].mean(0),
        "initial_cov": _floored(_covariance(states), 1e-2 * state_scale),
    }
