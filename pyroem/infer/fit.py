"""Fitting a user-written model by EM (built-in models have their own ``fit``; both run
the one loop of :mod:`pyroem.infer.loop`)."""

import pyro.poutine as poutine
import torch
from pyro.distributions import Unit

from pyroem.infer.em import EM
from pyroem.infer.loop import Convergence, EMStepper, FitRun, Objective, Progress, run_fit
from pyroem.infer.recorders import Routes


def count_observations(model, *args, **kwargs):
    """
    The data items of a model: the observed values of its sample sites (each site's batch
    elements that its mask keeps), summed over sites; ``pyro.factor`` sites do not count.
    For a mixture over ``N`` points this is ``N``; for a chain written with
    ``pyro.markov`` it is the number of observed frames.
    """
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    total = 0
    for site in trace.nodes.values():
        if site["type"] != "sample" or not site["is_observed"] or isinstance(site["fn"], Unit):
            continue
        fn, value = site["fn"], site["value"]
        shape = torch.broadcast_shapes(fn.batch_shape, value.shape[:value.dim() - fn.event_dim])
        mask = site["mask"]
        if mask is None or mask is True:
            total += shape.numel()
        elif torch.is_tensor(mask):
            total += int(mask.expand(shape).sum())
    return max(total, 1)


def fit_em(model, *args, guide=None, max_iter=100, tol=1e-6, hard=False,
           max_plate_nesting=None, num_items=None, progress=False, **kwargs):
    r"""
    Run exact EM (or Viterbi training with ``hard=True``) on a Pyro model until
    :math:`\log p(X)` changes by less than ``tol`` per data item, or ``max_iter``
    iterations (then with a :class:`~pyroem.infer.loop.ConvergenceWarning`).

    The parameters are the model's ``pyro.param`` s, updated in the param store. The
    M-step route of each parameter is resolved by :class:`~pyroem.infer.EM` (its ``plan``).

    :param callable model: the Pyro model; ``args``/``kwargs`` are its arguments.
    :param callable guide: optional guide (see :class:`~pyroem.infer.EM`).
    :param int max_iter: iterations at most.
    :param float tol: stopping threshold on the change of :math:`\log p(X)` per data item.
    :param bool hard: Viterbi training.
    :param int max_plate_nesting: as in ``TraceEnum_ELBO``; guessed when ``None``.
    :param int num_items: the data items ``tol`` is per; counted by
        :func:`count_observations` when ``None``.
    :param bool progress: show a progress bar.
    :returns: a :class:`~pyroem.infer.History`: ``log_likelihood`` per iteration (under
        the parameters it started from), and ``records["strategies"]``, per iteration, the
        M-step route of each parameter (``"closed-form:<Family>"`` or ``"numerical"``).
    """
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    convergence = Convergence(tol)
    em = EM(model, guide, hard=hard, max_plate_nesting=max_plate_nesting)
    if num_items is None:
        num_items = count_observations(model, *args, **kwargs)
    method = "viterbi" if hard else "em"
    run = FitRun(method, args, kwargs, num_items)
    recorders = [Objective(), Routes(em), convergence,
                 Progress(max_iter, f"fit_em {method}", progress)]
    return run_fit(EMStepper(em), run, max_iter, recorders)
