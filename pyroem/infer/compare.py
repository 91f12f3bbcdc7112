"""EM, Viterbi training and SVI side by side, from the same starting parameters."""

import copy
import warnings

from pyroem.infer.loop import ConvergenceWarning

METHODS = ("em", "viterbi", "svi")


def compare(model, *data, methods=METHODS, max_iter=100, tol=0.0, init=None, seed=0, lr=0.05,
            record_decomposition=True, progress=False):
    r"""
    Run several fitting methods on one built-in model from the **same** initial
    parameters and return their histories, aligned by iteration and wall-clock seconds.

    The initial parameters are drawn once (``model.initialize(*data, init=init,
    seed=seed)``, as :meth:`~pyroem.models.EMModel.fit` starts); each method then starts
    from that state (``load_state_dict``) with ``fit(..., init="given")``, and the model
    is left as it was (its state and fit results restored). Every history carries, besides
    ``log_likelihood`` (the
    method's own objective: :math:`\log p(X, \hat Z)` for Viterbi) and ``seconds`` (the
    method's time only; each method is warmed up first by one throw-away iteration),
    ``records["log_evidence"]``: the exact :math:`\log p(X|\eta_t)`
    at the start of each iteration, so the three methods are compared on one objective.

    :param model: a built-in model (:class:`~pyroem.models.EMModel`: ``initialize``,
        ``fit``, ``state_dict``, ``load_state_dict``), or a callable with no arguments
        returning one; it is left unchanged.
    :param data: the data, as for ``fit``.
    :param tuple methods: any of ``"em"``, ``"viterbi"``, ``"svi"``.
    :param int max_iter: iterations of each method.
    :param float tol: as in ``fit`` (``0`` runs all ``max_iter``).
    :param str init: the model's initialisation (its ``default_init`` when ``None``);
        ``"given"`` starts from the parameters as set.
    :param int seed: seed of the initialisation.
    :param float lr: Adam's learning rate for SVI.
    :param bool record_decomposition: record the full ELBO/KL decomposition per iteration
        (see ``fit``); ``records["log_evidence"]`` is recorded either way.
    :returns: ``{method: History}`` in the order of ``methods``.
    """
    if callable(model) and not hasattr(model, "fit"):
        model = model()
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown!r}; expected a non-empty subset of {METHODS}")
    saved = _snapshot(model)
    try:
        model.initialize(*data, init=init, seed=seed)
        start = copy.deepcopy(model.state_dict())
        return {method: _run(model, start, data, method, max_iter, tol, lr,
                             record_decomposition, progress) for method in methods}
    finally:
        _restore(model, saved)


def _run(model, start, data, method, max_iter, tol, lr, record_decomposition, progress):
    """One method's history from the starting state ``start``."""
    # One throw-away iteration first: one-off costs of a process (imports of torch's
    # optimiser and contraction machinery, seconds on a first call) are not the method's.
    model.load_state_dict(start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(*data, method=method, init="given", max_iter=1, lr=lr)
    model.load_state_dict(start)
    hist = model.fit(*data, method=method, init="given", max_iter=max_iter, tol=tol, lr=lr,
                     record_decomposition=record_decomposition or (
                         "log_evidence" if method == "viterbi" else False),
                     progress=progress)
    if "log_evidence" not in hist.records:  # EM's objective is log p(X) itself
        hist.records["log_evidence"] = list(hist.log_likelihood)
    return hist


_RESULTS = ("history", "converged", "num_iters")


def _snapshot(model):
    """The model's state and fit results, to leave it as it was."""
    return (copy.deepcopy(model.state_dict()),
            {name: getattr(model, name) for name in _RESULTS if hasattr(model, name)})


def _restore(model, saved):
    state, results = saved
    model.load_state_dict(state)
    for name in _RESULTS:
        if name in results:
            setattr(model, name, results[name])
        elif hasattr(model, name):
            delattr(model, name)
