"""A fit loop for user-written models (the built-in models have ``fit`` methods)."""

import math
import time

import torch

from pyroem.infer.em import EM
from pyroem.infer.history import History


def fit_em(model, *args, guide=None, max_iter=100, tol=1e-6, hard=False,
           max_plate_nesting=None, **kwargs):
    r"""
    Run exact EM (or Viterbi training with ``hard=True``) on a Pyro model until the
    log-likelihood changes by less than ``tol`` (absolute) or ``max_iter`` iterations.

    The parameters are the model's ``pyro.param`` s, updated in the param store. The M-step
    is the model's own closed form when it has one, otherwise the automatic closed form
    with the numerical fallback (:class:`~pyroem.infer.auto_mstep.AutoMStep`).

    :param callable model: the Pyro model; ``args``/``kwargs`` are its arguments.
    :param callable guide: optional guide (see :class:`~pyroem.infer.EM`).
    :param int max_iter: iterations at most.
    :param float tol: stopping threshold on the change of :math:`\log p(X)`.
    :param bool hard: Viterbi training.
    :param int max_plate_nesting: as in ``TraceEnum_ELBO``; guessed when ``None``.
    :returns: a :class:`~pyroem.infer.History`: ``log_likelihood`` per iteration (under
        the parameters it started from), and ``records["strategies"]``, per iteration, the
        M-step strategy of each parameter (``"closed-form:<Family>"`` or ``"numerical"``).
    """
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    em = EM(model, guide, hard=hard, max_plate_nesting=max_plate_nesting)
    hist = History(method="viterbi" if hard else "em")
    start, prev = time.perf_counter(), None
    for _ in range(max_iter):
        ll = -em.step(*args, **kwargs)
        hist.log_likelihood.append(ll)
        hist.seconds.append(time.perf_counter() - start)
        hist.record("strategies", dict(getattr(em.m_step, "strategies", {})))
        hist.num_iters += 1
        if math.isnan(ll):
            raise FloatingPointError(f"log-likelihood became NaN at iteration {hist.num_iters}")
        if prev is not None and abs(ll - prev) < tol:
            hist.converged = True
            break
        prev = ll
    with torch.no_grad():
        hist.final_log_likelihood = -em.evaluate_loss(*args, **kwargs)
    return hist
