"""Exact Expectation-Maximisation, shaped like :class:`pyro.infer.SVI`."""

import torch

from pyroem.infer.auto_mstep import AutoMStep
from pyroem.infer.estep import exact_posterior, guess_max_plate_nesting
from pyroem.infer.mstep import ClosedFormMStep, find_closed_form  # noqa: F401


class EM:
    r"""
    Exact EM (or, with ``hard=True``, Viterbi training) on a Pyro model.

    Each :meth:`step` performs

    - an **E-step**: :math:`q(Z) := p(Z | X, \eta_{old})`, the exact posterior, so that
      :math:`\mathrm{KL}(q \| p(Z|X)) = 0` and the ELBO equals :math:`\log p(X|\eta_{old})`;
      for discrete latents it comes from :func:`~pyroem.infer.estep.exact_posterior`
      (backprop through Pyro's enumeration), a model with continuous conjugate latents
      supplies its own ``e_step``;
    - an **M-step**: :math:`\eta_{new} = \arg\max_\eta Q(q, \eta)` with
      :math:`Q(q, \eta) = E_q[\log p(X, Z | \eta)]`, so :math:`\log p(X|\eta)` never falls.

    With ``hard=True`` ``q`` is a point mass at :math:`\hat Z = \arg\max_Z p(Z|X)` and
    the monotone quantity is :math:`\log p(X, \hat Z | \eta)`.

    :param callable model: a Pyro model; when it is a bound method of an object that
        implements the closed-form protocol (``expected_statistics`` and ``maximize``,
        see :class:`~pyroem.infer.mstep.ClosedFormMStep`) that M-step is used.
    :param callable guide: optional; if it is a bound method of an object with
        ``write_posterior(posterior, *args, **kwargs)`` the E-step writes q into it.
    :param bool hard: Viterbi (hard-assignment) EM.
    :param int max_plate_nesting: as in ``TraceEnum_ELBO``; guessed when ``None``.
    :param m_step: an M-step strategy (a callable ``m_step(posterior, *args, **kwargs)``);
        found from the model when ``None``.
    """

    def __init__(self, model, guide=None, *, hard=False, max_plate_nesting=None, m_step=None):
        self.model = model
        self.guide = guide
        self.hard = hard
        self.max_plate_nesting = max_plate_nesting
        owner = getattr(model, "__self__", None)
        self._e_step = getattr(owner, "e_step", None)
        if m_step is None:
            # Strategy 1 (the model's own closed form), else 2 + 3 (automatic).
            m_step = find_closed_form(model)
            if m_step is None and self._e_step is None:
                m_step = AutoMStep(model, max_plate_nesting=max_plate_nesting)
        self.m_step = m_step
        self._write = getattr(getattr(guide, "__self__", None), "write_posterior", None)

    def e_step(self, *args, **kwargs):
        """The exact posterior under the current parameters (a
        :class:`~pyroem.infer.estep.Posterior`); writes it into the guide when it can."""
        if self._e_step is not None:
            posterior = self._e_step(*args, hard=self.hard, **kwargs)
        else:
            if self.max_plate_nesting is None:
                self.max_plate_nesting = guess_max_plate_nesting(self.model, args, kwargs)
            posterior = exact_posterior(self.model, *args, hard=self.hard,
                                        max_plate_nesting=self.max_plate_nesting, **kwargs)
        if self._write is not None:
            self._write(posterior, *args, **kwargs)
        return posterior

    def step(self, *args, **kwargs):
        r"""
        One E-step and one M-step.

        :returns: :math:`-\log p(X | \eta_{old})` (with ``hard=True``,
            :math:`-\log p(X, \hat Z | \eta_{old})`), the loss under the parameters
            the step started from, comparable with ``TraceEnum_ELBO``'s loss.
        :rtype: float
        """
        if self.m_step is None:
            raise NotImplementedError(
                "No M-step for this model: give EM an m_step, or make the model a bound "
                "method of an object with expected_statistics() and maximize()."
            )
        with torch.no_grad():
            posterior = self.e_step(*args, **kwargs)
        self.m_step(posterior, *args, **kwargs)
        return -float(posterior.log_evidence)

    def evaluate_loss(self, *args, **kwargs):
        r""":math:`-\log p(X|\eta)` under the current parameters, without updating them."""
        with torch.no_grad():
            if self._e_step is not None:
                return -float(self._e_step(*args, hard=self.hard, **kwargs).log_evidence)
            if self.max_plate_nesting is None:
                self.max_plate_nesting = guess_max_plate_nesting(self.model, args, kwargs)
            return -float(exact_posterior(self.model, *args, hard=self.hard,
                                          max_plate_nesting=self.max_plate_nesting,
                                          **kwargs).log_evidence)
