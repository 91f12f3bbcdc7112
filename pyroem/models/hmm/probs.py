r"""
Probability vectors of the chain and of the discrete emissions (rows of ``start_probs``,
``trans_probs``, ``emission_probs``, mixture ``weights``): the check when a user sets
them (:func:`~pyroem.models.checks.check_simplex`, through
:class:`~pyroem.models.checks.CheckedParams`), the MAP update under a Dirichlet prior,
and logarithms that keep structural zeros.
"""

import math

import torch

from pyroem.models.checks import check_simplex


def concentration(value, shape, name):
    """A Dirichlet concentration (scalar or array) as a ``shape`` tensor, checked
    finite and non-negative."""
    value = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if not torch.isfinite(value).all() or (value < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    try:
        return value.expand(shape).clone()
    except RuntimeError:
        raise ValueError(f"{name} must broadcast to shape {shape}, got {tuple(value.shape)}") from None


def map_probs(counts, concentration, old, support=None):
    r"""
    MAP estimate of probability rows (the last dim) from expected counts :math:`n` under
    a Dirichlet prior of concentration :math:`\alpha`:

    .. math:: p_j \propto \max(n_j + \alpha_j - 1, 0),

    kept zero where ``old`` is zero (structural zeros: a left-to-right chain stays
    left-to-right); a row without any mass keeps its old value. :math:`\alpha = 1` is
    maximum likelihood.

    :param old: the current probabilities, or a function that returns them (called only
        when a row has no mass).
    :param support: ``old > 0`` where the caller has it (e.g. from the logarithms that a
        ``PyroParam`` on the simplex stores: no softmax to read them).

    The fused iteration of small Gaussian HMMs computes the same update in C
    (``pyroem/ops/kernels/gaussian_hmm_step.c``, ``map_row``): a change here goes there
    too (tests/test_fused_step.py compares the two).
    """
    if support is None:
        support = old > 0
    # (alpha - 1) first: counts + 1 - 1 would round tiny counts to zero
    w = (counts + (concentration.to(counts) - 1)).clamp_min_(0).masked_fill_(~support, 0)
    total = w.sum(-1, keepdim=True)
    if bool((total > 0).all()):  # the usual case: every row has mass
        return w.div_(total)
    old = old() if callable(old) else old
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), old)


def check_probs(value, shape, name, dtype):
    """``value`` as a ``dtype`` tensor of probability rows of ``shape`` (finite,
    non-negative, rows summing to one within a tolerance, then renormalised exactly):
    :func:`~pyroem.models.checks.check_simplex`."""
    return check_simplex(value, name, shape, dtype)


def safe_log(p):
    """``log p`` with ``log 0 = -inf`` and a zero (not NaN) gradient at structural zeros
    (``p.log()`` would back-propagate ``1 / 0``)."""
    positive = p > 0
    return torch.where(positive, p.clamp_min(torch.finfo(p.dtype).tiny).log(), -math.inf)


class EmissionProbsMStep:
    r"""The M-step of emission probabilities ``emission_probs (K, M)`` over ``M``
    outcomes (categorical symbols, multinomial counts), letter ``e``: :math:`E_{km}
    \propto` the expected counts ``stats["emission"]`` (zeros stay zero)."""

    def maximize(self, stats, params):
        if "e" in params:
            old = self.emission_probs.detach()
            self._set_internal(emission_probs=map_probs(stats["emission"], old.new_ones(()), old))

    def num_parameters(self, params):
        return self.num_states * (self.num_symbols - 1) if "e" in params else 0
