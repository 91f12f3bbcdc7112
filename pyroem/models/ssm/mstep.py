r"""
The closed-form M-step of a linear-Gaussian state-space model (Shumway and Stoffer,
1982; Ghahramani and Hinton, 1996), from expected sufficient statistics that are sums
over sequences and frames (so additive over batches of sequences).

With the smoothed moments :math:`E[z_t] = m_t`,
:math:`E[z_t z_t^\top] = P_{t|T} + m_t m_t^\top` and
:math:`E[z_{t+1} z_t^\top] = \mathrm{Cov}(z_{t+1}, z_t|x) + m_{t+1} m_t^\top`, summed
over the sequences :math:`b` and their frames:

.. math::

    \Gamma = \sum_{b,t} E[z_t z_t^\top], \quad
    \Gamma_- = \Gamma - \sum_b E[z_{T_b} z_{T_b}^\top], \quad
    \Gamma_+ = \Gamma - \sum_b E[z_1 z_1^\top], \quad
    \Xi = \sum_{b,\, t < T_b} E[z_{t+1} z_t^\top],

    \Lambda = \sum_{b,t} x_t E[z_t]^\top, \quad \Omega = \sum_{b,t} x_t x_t^\top, \quad
    s = \sum_b E[z_1], \quad \Gamma_1 = \sum_b E[z_1 z_1^\top].

The maximiser of :math:`Q` is

.. math::

    C = \Lambda \Gamma^{-1}, \quad
    R = \tfrac1N (\Omega - C \Lambda^\top - \Lambda C^\top + C \Gamma C^\top), \quad
    A = \Xi \Gamma_-^{-1}, \quad
    Q = \tfrac1{N - B} (\Gamma_+ - A \Xi^\top - \Xi A^\top + A \Gamma_- A^\top),

    \mu_0 = s / B, \quad
    P_0 = \tfrac1B (\Gamma_1 - \mu_0 s^\top - s \mu_0^\top + B \mu_0 \mu_0^\top)

(:math:`N` frames, :math:`B` sequences). The covariances are written for any :math:`C`,
:math:`A`, :math:`\mu_0`: a parameter that is not trained keeps its value and the
covariance next to it is the maximiser given it. The statistics are accumulated and the
M-step solved in float64 whatever the data's dtype.
"""

import torch

from pyroem.models.ssm.kalman import symmetrize

LETTERS = "acqrmp"
NAMES = {"a": "transition_matrix", "c": "observation_matrix", "q": "transition_cov",
         "r": "observation_cov", "m": "initial_mean", "p": "initial_cov"}


def expected_statistics(posterior, x, lengths):
    """The sums of the module docstring (float64), from a
    :class:`~pyroem.models.ssm.StatePosterior` and the padded data ``(B, T, O)``."""
    m = posterior.loc.double()
    xd = x.double()
    B = m.shape[0]
    cov_sum, cross_sum = (c.double() for c in posterior.summed_covariance())
    first, last = m[:, 0], m[torch.arange(B), lengths - 1]
    return {
        "num_sequences": torch.tensor(float(B), dtype=torch.float64),
        "num_frames": lengths.sum().double(),
        "zz": cov_sum.sum(0) + torch.einsum("bti,btj->ij", m, m),
        "first_m": first.sum(0),
        "first_zz": cov_sum[0] + first.T @ first,
        "last_zz": posterior.last_covariance_sum().double() + last.T @ last,
        "cross": cross_sum.sum(0) + torch.einsum("bti,btj->ij", m[:, 1:], m[:, :-1]),
        "xz": torch.einsum("bto,bts->os", xd, m),
        "xx": torch.einsum("bto,btp->op", xd, xd),
    }


def _solve_right(num, gram, what):
    r""":math:`N G^{-1}` for a symmetric positive definite :math:`G` (Cholesky)."""
    tril, info = torch.linalg.cholesky_ex(symmetrize(gram))
    if bool(info.any()):
        raise ValueError(f"the expected second moment of the states ({what}) is singular: "
                         "the M-step is undefined (too few frames, or degenerate states)")
    return torch.cholesky_solve(num.T, tril).T


def _regularized(cov, reg_covar):
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return symmetrize(cov) + reg_covar * eye


def maximize(stats, current, params=LETTERS, reg_covar=0.0):
    r"""
    The closed-form maximiser of :math:`Q` (module docstring).

    :param dict stats: from :func:`expected_statistics` (possibly summed over batches).
    :param current: the :class:`~pyroem.models.ssm.kalman.LinearGaussian` parameters
        (those not trained are kept, and used by the others' updates).
    :param str params: letters of the trained parameters (``a`` :math:`A`, ``c``
        :math:`C`, ``q`` :math:`Q`, ``r`` :math:`R`, ``m`` :math:`\mu_0`, ``p``
        :math:`P_0`).
    :param float reg_covar: added to the diagonal of the new covariances.
    :returns: ``{attribute name: float64 tensor}`` of the trained parameters.
    """
    A, C, _, _, mu, _ = (p.double() for p in current)
    N, B = stats["num_frames"], stats["num_sequences"]
    out = {}
    if "c" in params:
        C = out["observation_matrix"] = _solve_right(stats["xz"], stats["zz"], "all frames")
    if "r" in params:
        lam_ct = stats["xz"] @ C.T
        r = stats["xx"] - lam_ct - lam_ct.T + C @ stats["zz"] @ C.T
        out["observation_cov"] = _regularized(r / N, reg_covar)
    zz_prev = stats["zz"] - stats["last_zz"]
    if "a" in params:
        A = out["transition_matrix"] = _solve_right(stats["cross"], zz_prev, "transitions")
    if "q" in params:
        xi_at = stats["cross"] @ A.T
        q = stats["zz"] - stats["first_zz"] - xi_at - xi_at.T + A @ zz_prev @ A.T
        out["transition_cov"] = _regularized(q / (N - B), reg_covar)
    s = stats["first_m"]
    if "m" in params:
        mu = out["initial_mean"] = s / B
    if "p" in params:
        p = stats["first_zz"] - torch.outer(mu, s) - torch.outer(s, mu) + B * torch.outer(mu, mu)
        out["initial_cov"] = _regularized(p / B, reg_covar)
    return out
