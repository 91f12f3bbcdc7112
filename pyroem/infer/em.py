"""Exact Expectation-Maximisation, shaped like :class:`pyro.infer.SVI`."""

import torch

from pyroem.infer.estep import exact_posterior, guess_max_plate_nesting
from pyroem.infer.mstep import AutoMStep, ClosedFormMStep
from pyroem.infer.protocols import Plan, PosteriorWriter, check_contract, owner_of


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

    Which route each part takes is resolved once, from the contract of
    :mod:`pyroem.infer.protocols`, and shown by :attr:`plan`.

    :param callable model: a Pyro model; when it is a bound method of an object that
        implements :class:`~pyroem.infer.protocols.EStepProvider` or
        :class:`~pyroem.infer.protocols.ClosedFormProvider`, those are used.
    :param callable guide: optional; when its owner implements
        :class:`~pyroem.infer.protocols.PosteriorWriter` the E-step writes q into it.
    :param bool hard: Viterbi (hard-assignment) EM.
    :param int max_plate_nesting: as in ``TraceEnum_ELBO``; guessed when ``None``.
    :param m_step: an M-step strategy (a callable ``m_step(posterior, *args, **kwargs)``);
        resolved from the model when ``None``.
    :raises TypeError: when the model provides half of a protocol.
    """

    def __init__(self, model, guide=None, *, hard=False, max_plate_nesting=None, m_step=None):
        self.model = model
        self.guide = guide
        self.hard = hard
        self.max_plate_nesting = max_plate_nesting
        own_e_step, closed = check_contract(model, m_step)
        self._e_step = None if own_e_step is None else own_e_step.e_step
        if m_step is not None:
            route = "given"
        elif closed is not None:
            m_step, route = ClosedFormMStep(closed), f"closed form of {type(closed).__name__}"
        else:
            m_step, route = AutoMStep(model, max_plate_nesting=max_plate_nesting), "automatic"
        self.m_step = m_step
        writer = owner_of(guide)
        self._write = writer.write_posterior if isinstance(writer, PosteriorWriter) else None
        self.plan = Plan(
            e_step="exact enumeration" if own_e_step is None
            else f"e_step of {type(own_e_step).__name__}",
            write="none" if self._write is None
            else f"write_posterior of {type(writer).__name__}",
            m_step=route,
            params=getattr(m_step, "strategies", None) if closed is not None else None)

    def _posterior(self, *args, **kwargs):
        if self._e_step is not None:
            return self._e_step(*args, hard=self.hard, **kwargs)
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(self.model, args, kwargs)
        return exact_posterior(self.model, *args, hard=self.hard,
                               max_plate_nesting=self.max_plate_nesting, **kwargs)

    def e_step(self, *args, **kwargs):
        """The exact posterior under the current parameters (a
        :class:`~pyroem.infer.posteriors.Posterior`); writes it into the guide when the
        guide's owner can take it."""
        posterior = self._posterior(*args, **kwargs)
        if self._write is not None:
            self._write(posterior, *args, **kwargs)
        return posterior

    def run_m_step(self, posterior, *args, **kwargs):
        """The M-step given ``posterior``; updates :attr:`plan` ``.params``."""
        self.m_step(posterior, *args, **kwargs)
        strategies = getattr(self.m_step, "strategies", None)
        if strategies:
            self.plan.params = dict(strategies)

    def step(self, *args, **kwargs):
        r"""
        One E-step and one M-step.

        :returns: :math:`-\log p(X | \eta_{old})` (with ``hard=True``,
            :math:`-\log p(X, \hat Z | \eta_{old})`), the loss under the parameters
            the step started from, comparable with ``TraceEnum_ELBO``'s loss.
        :rtype: float
        """
        with torch.no_grad():
            posterior = self.e_step(*args, **kwargs)
        self.run_m_step(posterior, *args, **kwargs)
        return -float(posterior.log_evidence)

    def resolve(self, *args, **kwargs):
        """The :attr:`plan` with every parameter's route, found without changing any
        parameter (for the automatic M-step this traces the model with the data)."""
        if not self.plan.params and hasattr(self.m_step, "routes"):
            with torch.no_grad():
                posterior = self._posterior(*args, **kwargs)
            self.plan.params = self.m_step.routes(posterior, *args, **kwargs)
        return self.plan

    def evaluate_loss(self, *args, **kwargs):
        r""":math:`-\log p(X|\eta)` under the current parameters, without updating them."""
        with torch.no_grad():
            return -float(self._posterior(*args, **kwargs).log_evidence)
