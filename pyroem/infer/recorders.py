r"""
Optional recorders of a fit (see :mod:`pyroem.infer.loop`): the exact decomposition
:math:`\log p(X) = \mathrm{ELBO}(q) + \mathrm{KL}(q \| p(Z|X))` around each step, the exact
evidence of a Viterbi iterate, and the M-step route of every parameter. Their work is
diagnostics: it runs with the fit's clock paused.
"""

from pyroem.infer.decompose import decompose
from pyroem.infer.loop import Recorder


class EMDecomposition(Recorder):
    r"""
    Records, per EM (or Viterbi) iteration, the :class:`~pyroem.infer.Decomposition` of
    the guide's q after the E-step (``records["e_step"]``: KL = 0 for EM) and after the
    M-step (``records["m_step"]``), and the exact :math:`\log p(X)` the iteration started
    from (``records["log_evidence"]``; for Viterbi the true evidence, not
    :math:`\log p(X, \hat Z)`).
    """

    def __init__(self, model, guide, max_plate_nesting, hard=False):
        self.model, self.guide = model, guide
        self.max_plate_nesting = max_plate_nesting
        self.hard = hard

    def _decompose(self, run, log_evidence=None):
        return decompose(self.model, self.guide, *run.args, log_evidence=log_evidence,
                         max_plate_nesting=self.max_plate_nesting, **run.kwargs)

    def after_e_step(self, run, posterior):
        with run.clock.paused():
            d = self._decompose(run, None if self.hard else posterior.log_evidence)
            run.history.record("e_step", d)
            run.history.record("log_evidence", d.log_evidence)

    def after_m_step(self, run):
        with run.clock.paused():
            run.history.record("m_step", self._decompose(run))


class SVIDecomposition(Recorder):
    r"""Records, per SVI step, the exact :math:`\log p(X)` before it
    (``records["log_evidence"]``) and, with ``full=True``, the decomposition after it
    (``records["step"]``)."""

    def __init__(self, model, guide, max_plate_nesting, full=True):
        self.model, self.guide = model, guide
        self.max_plate_nesting = max_plate_nesting
        self.full = full

    def after_iteration(self, run, objective):
        run.history.record("log_evidence", objective)
        if self.full:
            with run.clock.paused():
                run.history.record("step", decompose(
                    self.model, self.guide, *run.args,
                    max_plate_nesting=self.max_plate_nesting, **run.kwargs))


class ExactEvidence(Recorder):
    r"""Records the exact :math:`\log p(X)` each iteration starts from
    (``records["log_evidence"]``), from ``exact``, a soft :class:`~pyroem.infer.EM` of
    the same model: what a Viterbi fit does not compute itself."""

    def __init__(self, exact):
        self.exact = exact

    def before_iteration(self, run):
        with run.clock.paused():
            run.history.record("log_evidence",
                               -self.exact.evaluate_loss(*run.args, **run.kwargs))


class Routes(Recorder):
    """Records ``em.plan.params`` after each iteration (``records["strategies"]``): the
    M-step route each parameter took (the automatic M-step may change a route when a
    closed-form value breaks a constraint)."""

    def __init__(self, em):
        self.em = em

    def after_iteration(self, run, objective):
        run.history.record("strategies", dict(self.em.plan.params))
