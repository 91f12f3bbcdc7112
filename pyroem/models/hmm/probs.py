r"""
Probability vectors of the chain and of the discrete emissions (rows of ``start_probs``,
``trans_probs``, ``emission_probs``, mixture ``weights``): checks when a user sets them,
the MAP update under a Dirichlet prior, and logarithms that keep structural zeros.
"""

import math

import torch
from pyro.nn import PyroParam


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


def map_probs(counts, concentration, old):
    r"""
    MAP estimate of probability rows (the last dim) from expected counts :math:`n` under
    a Dirichlet prior of concentration :math:`\alpha`:

    .. math:: p_j \propto \max(n_j + \alpha_j - 1, 0),

    kept zero where ``old`` is zero (structural zeros: a left-to-right chain stays
    left-to-right); a row without any mass keeps its old value. :math:`\alpha = 1` is
    maximum likelihood.
    """
    # (alpha - 1) first: counts + 1 - 1 would round tiny counts to zero
    w = (counts + (concentration.to(counts) - 1)).clamp_min(0) * (old > 0)
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), old)


def check_probs(value, shape, name, dtype):
    """``value`` as a ``dtype`` tensor of probability rows of ``shape`` (finite,
    non-negative, rows summing to one up to rounding, then renormalised exactly)."""
    value = torch.as_tensor(value, dtype=dtype)
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all() or (value < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    if not torch.allclose(value.sum(-1), value.new_ones(())):
        raise ValueError(f"the rows of {name} must sum to 1")
    return value / value.sum(-1, keepdim=True)


def safe_log(p):
    """``log p`` with ``log 0 = -inf`` and a zero (not NaN) gradient at structural zeros
    (``p.log()`` would back-propagate ``1 / 0``)."""
    positive = p > 0
    return torch.where(positive, p.clamp_min(torch.finfo(p.dtype).tiny).log(), -math.inf)


class CheckedProbs:
    """
    Mixin of a :class:`~pyro.nn.PyroModule` whose probability parameters are checked
    (:func:`check_probs`) when a user sets them: ``m.trans_probs = A`` raises
    ``ValueError`` on a wrong shape or rows that do not sum to one.

    A class lists those parameters in ``probability_params`` and gives their shapes with
    :meth:`_probs_shape`. Updates of the M-step go through :meth:`_set_internal`, which
    skips the check (its rows sum to one by construction, and it runs every iteration).
    """

    probability_params = ()

    def _probs_shape(self, name):
        raise NotImplementedError

    def __setattr__(self, name, value):
        if name in self.probability_params and not isinstance(value, PyroParam) \
                and not self.__dict__.get("_internal", False):
            value = check_probs(value, self._probs_shape(name), name, self.dtype)
        super().__setattr__(name, value)

    def _set_internal(self, **values):
        """Set parameters without the user-facing checks (M-step results)."""
        self._internal = True
        try:
            for k, v in values.items():
                setattr(self, k, v)
        finally:
            self._internal = False
