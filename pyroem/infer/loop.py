r"""
The one fit loop. Exact EM, Viterbi training and SVI, on built-in and user models, all
iterate through :func:`run_fit`:

.. code-block:: none

    for each iteration:                      # at most max_iter
        recorders.before_iteration
        objective = stepper.step(run)        # EM: E-step, hooks, M-step, hooks
        recorders.after_iteration(objective) # history, convergence, progress, ...
        stop when a recorder says so
    final objective under the final parameters

A *stepper* runs one iteration of a method and returns its objective (``log p(X)`` under
the parameters the iteration started from; :math:`\log p(X, \hat Z)` for Viterbi). A
*recorder* watches the fit through hooks; the history, the convergence test, the
progress bar and the optional decomposition are recorders. Time spent in diagnostics
runs inside ``run.clock.paused()`` and is not counted in ``history.seconds``.
"""

import contextlib
import math
import os
import sys
import time
import warnings

import torch
from tqdm import tqdm

from pyroem.infer.history import History

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller_level():
    """The ``stacklevel`` of a warning that points at the first frame outside pyroem
    (the user's call of ``fit``, whichever wrapper it went through)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


class ConvergenceWarning(UserWarning):
    """A fit reached ``max_iter`` before its objective changed by less than ``tol`` per
    data item (scikit-learn's convention; the fit's ``converged`` is ``False``)."""


class Clock:
    """Wall-clock seconds since creation, not counting time spent in :meth:`paused`."""

    def __init__(self):
        self.start = time.perf_counter()
        self.excluded = 0.0

    def __call__(self):
        return time.perf_counter() - self.start - self.excluded

    @contextlib.contextmanager
    def paused(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t0


class FitRun:
    """What the stepper and the recorders of one fit share.

    :ivar History history: the record being written.
    :ivar Clock clock: the fit's clock.
    :ivar tuple args: the model's arguments (``kwargs`` its keyword arguments).
    :ivar int num_items: data items, the unit of ``tol``.
    :ivar bool stop: set by a recorder to end the fit after this iteration.
    :ivar bool completed: whether the loop ran to its end without an error.
    """

    def __init__(self, method, args, kwargs=None, num_items=1):
        self.history = History(method=method)
        self.clock = Clock()
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.num_items = num_items
        self.stop = False
        self.completed = False


class Recorder:
    """A watcher of a fit; each hook does nothing unless overridden."""

    def start(self, run):
        pass

    def before_iteration(self, run):
        pass

    def after_e_step(self, run, posterior):
        pass

    def after_m_step(self, run):
        pass

    def after_iteration(self, run, objective):
        pass

    def finish(self, run):
        """Called once the fit has ended, also when it raised (``run.completed``)."""


class Objective(Recorder):
    """The history proper: the objective and the seconds of each iteration."""

    def after_iteration(self, run, objective):
        hist = run.history
        hist.log_likelihood.append(objective)
        hist.seconds.append(run.clock())
        hist.num_iters += 1
        if math.isnan(objective):
            raise FloatingPointError(f"log-likelihood became NaN at iteration {hist.num_iters}")


class Convergence(Recorder):
    r"""Stop once :math:`|\ell_t - \ell_{t-1}| < \mathrm{tol} \cdot N` (``N`` data items);
    warn with :class:`ConvergenceWarning` when ``max_iter`` ends the fit first
    (``tol = 0`` asks for exactly ``max_iter`` iterations: no warning then)."""

    def __init__(self, tol):
        if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {tol!r}")
        self.tol = float(tol)
        self.previous = None

    def after_iteration(self, run, objective):
        if self.previous is not None and abs(objective - self.previous) < self.tol * run.num_items:
            run.history.converged = True
            run.stop = True
        self.previous = objective

    def finish(self, run):
        if run.completed and not run.history.converged and self.tol > 0:
            warnings.warn(
                f"{run.history.method} did not converge in {run.history.num_iters} iterations "
                f"(tol={self.tol:g} per item): increase max_iter or tol",
                ConvergenceWarning, stacklevel=_caller_level())


class Progress(Recorder):
    """A tqdm bar with the objective per item (shown only for fits over a second)."""

    #: seconds between postfix updates (tqdm's own default refresh interval): formatting
    #: the postfix on every iteration was a tenth of a tiny problem's iteration
    interval = 0.1

    def __init__(self, max_iter, desc, enabled=True):
        self.bar = tqdm(total=max_iter, disable=not enabled, delay=1.0, desc=desc)
        self.shown = -math.inf
        self.last = None

    def after_iteration(self, run, objective):
        self.bar.update()
        if self.bar.disable:
            return
        self.last = objective / run.num_items
        now = time.monotonic()
        if now - self.shown >= self.interval:
            self.shown = now
            self.bar.set_postfix(ll_per_item=self.last, refresh=False)

    def finish(self, run):
        if self.last is not None and not self.bar.disable:
            self.bar.set_postfix(ll_per_item=self.last, refresh=False)
        self.bar.close()


class EMStepper:
    """One iteration of :class:`~pyroem.infer.EM`: E-step, ``after_e_step`` hooks, M-step,
    ``after_m_step`` hooks; the objective is the E-step's ``log_evidence``."""

    def __init__(self, em, recorders=()):
        self.em = em
        self.recorders = recorders

    def step(self, run):
        if not self.recorders:  # nothing looks between the steps: EM.step, fused or not
            return -self.em.step(*run.args, **run.kwargs)
        with torch.no_grad():
            posterior = self.em.e_step(*run.args, **run.kwargs)
        for rec in self.recorders:
            rec.after_e_step(run, posterior)
        self.em.run_m_step(posterior, *run.args, **run.kwargs)
        for rec in self.recorders:
            rec.after_m_step(run)
        return float(posterior.log_evidence)

    def evaluate(self, run):
        return -self.em.evaluate_loss(*run.args, **run.kwargs)


class SVIStepper:
    r"""One step of :class:`pyro.infer.SVI`; the objective is the exact
    :math:`\log p(X|\eta)` before the step (from ``exact``, an :class:`~pyroem.infer.EM`
    of the same model, its time not counted), and ``records["loss"]`` SVI's own loss."""

    def __init__(self, svi, exact):
        self.svi = svi
        self.exact = exact

    def step(self, run):
        with run.clock.paused():
            objective = self.evaluate(run)
        run.history.record("loss", self.svi.step(*run.args, **run.kwargs))
        return objective

    def evaluate(self, run):
        return -self.exact.evaluate_loss(*run.args, **run.kwargs)


def run_fit(stepper, run, max_iter, recorders):
    """
    Iterate ``stepper`` at most ``max_iter`` times, the recorders watching.

    :param stepper: has ``step(run) -> objective`` and ``evaluate(run) -> objective``.
    :param FitRun run: the fit's shared state.
    :param int max_iter: iterations at most.
    :param list recorders: :class:`Recorder` s, called in order.
    :returns: ``run.history``, with ``final_log_likelihood`` under the final parameters.
    """
    for rec in recorders:
        rec.start(run)
    try:
        for _ in range(max_iter):
            for rec in recorders:
                rec.before_iteration(run)
            objective = stepper.step(run)
            for rec in recorders:
                rec.after_iteration(run, objective)
            if run.stop:
                break
        run.history.final_log_likelihood = stepper.evaluate(run)
        run.completed = True
    finally:
        for rec in recorders:
            rec.finish(run)
    return run.history
