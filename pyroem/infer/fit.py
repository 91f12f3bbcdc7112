"""Fitting a user-written model by EM (built-in models have their own ``fit``; both run
the one loop of :mod:`pyroem.infer.loop`)."""

import torch
from pyro import poutine
from pyro.distributions import Unit

from pyroem.infer import distributed
from pyroem.infer.em import EM
from pyroem.infer.loop import Convergence, EMStepper, FitRun, Objective, Progress, run_fit
from pyroem.infer.recorders import Routes
from pyroem.infer.user_batches import AutoBatchStepper, UserBatches, broadcast_store


def _plain_trace(model, args, kwargs):
    """The model traced once as written: latent sites draw samples, from a forked RNG so
    that the global one is left as it was."""
    with torch.random.fork_rng(devices=[]), poutine.block(), torch.no_grad():
        return poutine.trace(model).get_trace(*args, **kwargs)


def count_observations(model, *args, **kwargs):
    """The data items of a model (:func:`observed_values`), at least 1."""
    return max(observed_values(model, *args, **kwargs), 1)


def observed_values(model, *args, **kwargs):
    """
    The data items of a model: the observed values of its sample sites (each site's batch
    elements that its mask keeps), summed over sites; ``pyro.factor`` sites do not count.
    For a mixture over ``N`` points this is ``N``; for a chain written with
    ``pyro.markov`` it is the number of observed frames.
    """
    trace = _plain_trace(model, args, kwargs)
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
    return total


def fit_em(model, *args, guide=None, max_iter=100, tol=1e-6, hard=False,
           max_plate_nesting=None, num_items=None, progress=False, batches=None, **kwargs):
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
    :param batches: instead of ``args``, the data as a re-iterable of batches (a
        ``DataLoader``, a list): each batch is the model's positional arguments (a tuple
        or list) or a tensor (the only argument). Exact EM over batches
        (:mod:`pyroem.infer.user_batches`): one pass accumulates the closed-form
        statistics of every batch, then one M-step; the log-likelihood is summed over the
        pass. Equal to the in-memory fit to rounding. Refused (``ValueError``) when a
        parameter's M-step is numerical or it has a prior factor, with a guide, and for a
        bad batch (named; the parameters are left as before the pass).
    :returns: a :class:`~pyroem.infer.History`: ``log_likelihood`` per iteration (under
        the parameters it started from), and ``records["strategies"]``, per iteration, the
        M-step route of each parameter (``"closed-form:<Family>"`` or ``"numerical"``).
    """
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    convergence = Convergence(tol)
    if batches is not None:
        return _fit_batches(model, args, kwargs, guide, batches, convergence, max_iter,
                            hard, max_plate_nesting, progress)
    em = EM(model, guide, hard=hard, max_plate_nesting=max_plate_nesting)
    if num_items is None:
        num_items = count_observations(model, *args, **kwargs)
    method = "viterbi" if hard else "em"
    run = FitRun(method, args, kwargs, num_items)
    recorders = [Objective(), Routes(em), convergence,
                 Progress(max_iter, f"fit_em {method}", progress)]
    return run_fit(EMStepper(em), run, max_iter, recorders)


def _fit_batches(model, args, kwargs, guide, batches, convergence, max_iter, hard,
                 max_plate_nesting, progress):
    """:func:`fit_em` over a re-iterable of batches (see its ``batches``)."""
    if args or kwargs:
        raise ValueError("fit_em takes the data either as the model's arguments or as "
                         "batches=, not both")
    if guide is not None:
        raise ValueError("fit_em over batches takes no guide: a guide's q is sized for one "
                         "data set, not for a pass over batches")
    source = UserBatches(batches)
    if distributed.is_active():  # every rank starts from rank 0's values
        _start_from_rank_0(model, source)
    em = EM(model, None, hard=hard, max_plate_nesting=max_plate_nesting)
    stepper = AutoBatchStepper(em, source, lambda a: observed_values(model, *a))
    method = "viterbi" if hard else "em"
    run = FitRun(method, (), {}, 1)
    recorders = [Objective(), Routes(em), convergence,
                 Progress(max_iter, f"fit_em {method} (batches)", progress)]
    return run_fit(stepper, run, max_iter, recorders)


def _start_from_rank_0(model, source):
    """Create the model's parameters from each rank's first batch, then take rank 0's."""
    names, error = (), None
    try:
        for index, args in source:
            try:
                trace = _plain_trace(model, args, {})
            except (ValueError, RuntimeError, IndexError) as e:
                raise ValueError(f"batch {index}: {type(e).__name__}: {e}") from e
            names = [n for n, site in trace.nodes.items() if site["type"] == "param"]
            break  # (a source that yields nothing raises in UserBatches)
    except ValueError as e:
        error = e
    distributed.agree(error)
    broadcast_store(names)
