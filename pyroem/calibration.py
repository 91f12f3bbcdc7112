r"""
Score normalisation and calibration for verification back-ends.

**Symmetric normalisation (s-norm).** A raw score :math:`s(e, t)` of enrolment :math:`e`
against test :math:`t` is normalised with the statistics of each side's scores against a
cohort of impostors :math:`C`,

.. math::

    \tilde s(e, t) = \frac12 \Big(\frac{s(e, t) - \mu_e}{\sigma_e}
                     + \frac{s(e, t) - \mu_t}{\sigma_t}\Big),

where :math:`\mu_e, \sigma_e` are the mean and standard deviation of :math:`s(e, c)` over
:math:`c \in C` (and likewise :math:`\mu_t, \sigma_t` of :math:`s(c, t)`). *Adaptive*
s-norm takes them over the ``top_k`` highest cohort scores of each side only (the
impostors closest to it).

**Linear calibration.** :class:`LinearCalibration` maps scores to log-likelihood ratios
:math:`\ell = a s + b` by prior-weighted logistic regression on a development set of
target and non-target scores: it minimises

.. math::

    \frac{\pi}{N_\text{tar}} \sum_\text{tar} \log(1 + e^{-(\ell + \lambda)})
    + \frac{1 - \pi}{N_\text{non}} \sum_\text{non} \log(1 + e^{\ell + \lambda}),
    \qquad \lambda = \log\frac{\pi}{1 - \pi},

the cross-entropy at the effective prior :math:`\pi` (Brümmer's objective, whose value at
:math:`\pi = 1/2`, divided by :math:`\log 2`, is :math:`C_\text{llr}`), by Newton's method
(two parameters, convex). Its quality is measured by :func:`pyroem.metrics.cllr` and
:func:`pyroem.metrics.actual_dcf`.
"""

import math

import torch


def _matrix(scores, name):
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.dim() != 2 or 0 in scores.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or inf")
    return scores


def _cohort_stats(cohort, top_k, name):
    """Mean and standard deviation of each row of cohort scores (over its ``top_k``
    largest when given)."""
    if top_k is not None:
        if not (isinstance(top_k, int) and 2 <= top_k):
            raise ValueError(f"top_k must be an int >= 2 or None, got {top_k!r}")
        if top_k > cohort.shape[1]:
            raise ValueError(f"top_k={top_k} is larger than the cohort ({cohort.shape[1]} "
                             f"scores per row of {name})")
        cohort = cohort.topk(top_k, dim=1).values
    if cohort.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 cohort scores per row")
    std = cohort.std(dim=1)
    if (std <= 0).any():
        raise ValueError(f"{name}: a row's cohort scores are all equal (zero spread)")
    return cohort.mean(dim=1), std


def snorm(scores, enroll_cohort, test_cohort, top_k=None):
    r"""
    Symmetric score normalisation (s-norm; adaptive s-norm with ``top_k``).

    :param scores: raw scores, ``(K, M)``: enrolment ``k`` against test ``m``.
    :param enroll_cohort: ``(K, C)``: each enrolment against the ``C`` cohort items.
    :param test_cohort: ``(M, C')``: each test item against the cohort.
    :param int top_k: the cohort statistics over each row's ``top_k`` largest scores
        (adaptive s-norm); ``None`` uses the whole cohort.
    :returns: the normalised ``(K, M)`` scores (float64).
    :raises ValueError: on mismatched shapes, NaN/inf, a cohort too small for ``top_k``.
    """
    scores = _matrix(scores, "scores")
    enroll_cohort = _matrix(enroll_cohort, "enroll_cohort")
    test_cohort = _matrix(test_cohort, "test_cohort")
    if enroll_cohort.shape[0] != scores.shape[0]:
        raise ValueError(f"enroll_cohort has {enroll_cohort.shape[0]} rows for "
                         f"{scores.shape[0]} enrolments")
    if test_cohort.shape[0] != scores.shape[1]:
        raise ValueError(f"test_cohort has {test_cohort.shape[0]} rows for "
                         f"{scores.shape[1]} test items")
    mu_e, sd_e = _cohort_stats(enroll_cohort, top_k, "enroll_cohort")
    mu_t, sd_t = _cohort_stats(test_cohort, top_k, "test_cohort")
    return 0.5 * ((scores - mu_e[:, None]) / sd_e[:, None]
                  + (scores - mu_t[None, :]) / sd_t[None, :])


def _scores(x, name):
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    if x.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def weighted_cross_entropy(llr_tar, llr_non, p_target=0.5):
    r"""The prior-weighted cross-entropy (nats) that :class:`LinearCalibration` minimises,
    of already calibrated log-likelihood ratios (see the module's formula)."""
    tar, non = _scores(llr_tar, "llr_tar"), _scores(llr_non, "llr_non")
    shift = math.log(p_target / (1 - p_target))
    return float(p_target * torch.nn.functional.softplus(-(tar + shift)).mean()
                 + (1 - p_target) * torch.nn.functional.softplus(non + shift).mean())


class LinearCalibration:
    r"""
    Scores to calibrated log-likelihood ratios, :math:`\ell = a s + b`, fitted by
    prior-weighted logistic regression (see the module's docstring).

    :param float p_target: the effective target prior :math:`\pi` of the objective.
    :ivar float scale: :math:`a`, after :meth:`fit`.
    :ivar float offset: :math:`b`, after :meth:`fit`.
    """

    def __init__(self, p_target=0.5):
        if not 0 < p_target < 1:
            raise ValueError(f"p_target must be in (0, 1), got {p_target!r}")
        self.p_target = p_target
        self.scale = self.offset = None

    def fit(self, target_scores, nontarget_scores, max_iter=100, tol=1e-12):
        """Fit :math:`a, b` on development scores by Newton's method; returns ``self``."""
        tar = _scores(target_scores, "target_scores")
        non = _scores(nontarget_scores, "nontarget_scores")
        s = torch.cat([tar, non])
        y = torch.cat([torch.ones_like(tar), torch.zeros_like(non)])
        w = torch.cat([torch.full_like(tar, self.p_target / len(tar)),
                       torch.full_like(non, (1 - self.p_target) / len(non))])
        design = torch.stack([s, torch.ones_like(s)], dim=1)
        shift = math.log(self.p_target / (1 - self.p_target))
        theta = torch.zeros(2, dtype=torch.float64)
        for _ in range(max_iter):
            p = torch.sigmoid(design @ theta + shift)
            grad = design.T @ (w * (p - y))
            hess = (design * (w * p * (1 - p))[:, None]).T @ design
            step = torch.linalg.solve(hess + 1e-12 * torch.eye(2, dtype=torch.float64), grad)
            theta = theta - step
            if float(step.abs().max()) < tol:
                break
        self.scale, self.offset = float(theta[0]), float(theta[1])
        return self

    def transform(self, scores):
        """Calibrated log-likelihood ratios of ``scores`` (any shape)."""
        if self.scale is None:
            raise ValueError("LinearCalibration is not fitted: call fit(target, nontarget)")
        return self.scale * torch.as_tensor(scores, dtype=torch.float64) + self.offset
