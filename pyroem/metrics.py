r"""Detection metrics for verification scores: DET curve, EER, minDCF, and for calibrated
log-likelihood ratios the actual DCF and :math:`C_\text{llr}`.

A trial with score :math:`s` is accepted at threshold :math:`\theta` when
:math:`s \ge \theta`. Over targets (same speaker) and non-targets,

.. math::

    P_\text{miss}(\theta) = \frac{\#\{\text{targets} < \theta\}}{N_\text{tar}}, \qquad
    P_\text{fa}(\theta) = \frac{\#\{\text{non-targets} \ge \theta\}}{N_\text{non}},

evaluated at every distinct score and at :math:`+\infty` (accept nothing): the operating
points of the (step) DET curve, from :math:`(P_\text{fa}, P_\text{miss}) = (1, 0)` to
:math:`(0, 1)`.
"""

import numpy as np


def _scores(x, name):
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def det_curve(target_scores, nontarget_scores):
    """
    Operating points of the DET curve.

    :param target_scores: scores of same-speaker trials (array or tensor).
    :param nontarget_scores: scores of different-speaker trials.
    :returns: ``(p_fa, p_miss, thresholds)`` as numpy arrays of equal length: ``p_fa``
        decreasing from 1 to 0, ``p_miss`` increasing from 0 to 1; the last threshold is
        ``inf``.
    :raises ValueError: on empty or non-finite scores.
    """
    tar = np.sort(_scores(target_scores, "target_scores"))
    non = np.sort(_scores(nontarget_scores, "nontarget_scores"))
    thresholds = np.append(np.unique(np.concatenate([tar, non])), np.inf)
    p_miss = np.searchsorted(tar, thresholds, side="left") / tar.size
    p_fa = 1.0 - np.searchsorted(non, thresholds, side="left") / non.size
    return p_fa, p_miss, thresholds


def eer(target_scores, nontarget_scores):
    r"""
    Equal error rate: where the DET curve crosses :math:`P_\text{miss} = P_\text{fa}`,
    interpolating linearly between the two consecutive operating points that enclose
    the crossing (an operating point on the diagonal gives its value exactly).

    :returns: the EER as a fraction in ``[0, 1]``.
    """
    p_fa, p_miss, _ = det_curve(target_scores, nontarget_scores)
    diff = p_miss - p_fa  # increases from -1 to 1
    i = int(np.searchsorted(diff, 0.0, side="left"))  # first point with p_miss >= p_fa
    if diff[i] == 0.0:
        return float(p_miss[i])
    # the segment from point i-1 (diff < 0) to point i (diff > 0)
    alpha = -diff[i - 1] / (diff[i] - diff[i - 1])
    return float(p_miss[i - 1] + alpha * (p_miss[i] - p_miss[i - 1]))


def min_dcf(target_scores, nontarget_scores, p_target=0.01, c_miss=1.0, c_fa=1.0):
    r"""
    Minimum normalised detection cost over all thresholds,

    .. math::

        \min_\theta \frac{C_\text{miss} P_\text{tar} P_\text{miss}(\theta)
        + C_\text{fa} (1 - P_\text{tar}) P_\text{fa}(\theta)}
        {\min(C_\text{miss} P_\text{tar},\; C_\text{fa} (1 - P_\text{tar}))},

    normalised by the cost of the best trivial system (accept all or reject all), as in
    the NIST speaker recognition evaluations.

    :param float p_target: prior of a target trial (e.g. ``0.01`` or ``0.001``).
    :param float c_miss: cost of a miss.
    :param float c_fa: cost of a false alarm.
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target!r}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError("c_miss and c_fa must be > 0")
    p_fa, p_miss, _ = det_curve(target_scores, nontarget_scores)
    cost = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    return float(cost.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


def actual_dcf(llr_target, llr_nontarget, p_target=0.01, c_miss=1.0, c_fa=1.0):
    r"""
    Actual normalised detection cost of calibrated log-likelihood ratios: the cost at the
    Bayes threshold :math:`\theta = \log\frac{C_\text{fa}(1 - P_\text{tar})}
    {C_\text{miss} P_\text{tar}}` (accept when :math:`\ell \ge \theta`), normalised as
    :func:`min_dcf`. It equals :func:`min_dcf` only for well-calibrated scores; the
    difference is the calibration loss at that operating point.
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target!r}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError("c_miss and c_fa must be > 0")
    tar = _scores(llr_target, "llr_target")
    non = _scores(llr_nontarget, "llr_nontarget")
    theta = np.log(c_fa * (1 - p_target) / (c_miss * p_target))
    cost = c_miss * p_target * np.mean(tar < theta) + c_fa * (1 - p_target) * np.mean(non >= theta)
    return float(cost / min(c_miss * p_target, c_fa * (1 - p_target)))


def cllr(llr_target, llr_nontarget):
    r"""
    The log-likelihood-ratio cost (Brümmer and du Preez, 2006), in bits:

    .. math::

        C_\text{llr} = \frac{1}{2 \log 2} \Big(\frac{1}{N_\text{tar}}
        \sum_\text{tar} \log(1 + e^{-\ell}) + \frac{1}{N_\text{non}}
        \sum_\text{non} \log(1 + e^{\ell})\Big).

    0 for perfect, 1 for an uninformative system (every :math:`\ell = 0`); above 1 for
    scores worse than that (e.g. badly calibrated).
    """
    tar = _scores(llr_target, "llr_target")
    non = _scores(llr_nontarget, "llr_nontarget")
    return float((np.logaddexp(0, -tar).mean() + np.logaddexp(0, non).mean()) / (2 * np.log(2)))


def plot_det(target_scores, nontarget_scores, path=None, ax=None, label=None,
             limits=(0.001, 0.5), title=None):
    r"""
    Plot the DET curve on normal-deviate (probit) axes and mark the EER.

    Uses :class:`matplotlib.figure.Figure` directly (no pyplot), so it works headless.

    :param path: write the figure to this file (format from the extension).
    :param ax: a matplotlib ``Axes`` to draw into (else a new figure is made).
    :param str label: legend label of the curve (the EER is appended).
    :param limits: the range of both error probabilities shown.
    :param str title: the title (default: a DET-curve title, unless ``ax`` has one).
    :returns: the ``Axes``.
    """
    from statistics import NormalDist

    from matplotlib.figure import Figure

    probit = np.vectorize(NormalDist().inv_cdf)
    lo, hi = limits
    if not 0 < lo < hi < 1:
        raise ValueError(f"limits must satisfy 0 < low < high < 1, got {limits!r}")
    p_fa, p_miss, _ = det_curve(target_scores, nontarget_scores)
    rate = eer(target_scores, nontarget_scores)
    if ax is None:
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
    # 0 and 1 have no probit: clip them to just outside the plotted range
    clip = lambda p: probit(np.clip(p, lo / 2, 1 - lo / 2))
    text = f"EER {100 * rate:.2f}%" if label is None else f"{label} (EER {100 * rate:.2f}%)"
    ax.plot(clip(p_fa), clip(p_miss), label=text)
    ax.plot(clip(rate), clip(rate), "o", color=ax.lines[-1].get_color())
    ticks = [t for t in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.5, 0.8, 0.9)
             if lo <= t <= hi]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(probit(ticks))
        axis.set_ticklabels([f"{100 * t:g}" for t in ticks])
    ax.set_xlim(probit(lo), probit(hi))
    ax.set_ylim(probit(lo), probit(hi))
    ax.set_xlabel("false alarm probability (%)")
    ax.set_ylabel("miss probability (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    if title is not None or not ax.get_title():
        ax.set_title(title or "DET curve (the EER marked on each)")
    if path is not None:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    return ax
