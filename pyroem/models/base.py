"""The fit loop shared by the built-in models."""

import copy
import math
import time

import pyro
import torch
from pyro.nn import PyroModule
from tqdm.auto import tqdm

from pyroem.infer.em import EM
from pyroem.infer.history import History
from pyroem.models.checks import check_option, check_positive_int

METHODS = ("em", "viterbi", "svi")


class EMModel(PyroModule):
    """
    Base class of the built-in models: a :class:`~pyro.nn.PyroModule` with ``model``,
    ``guide`` and the closed-form EM protocol (``expected_statistics``, ``maximize``,
    ``write_posterior``), plus :meth:`fit`.

    Subclasses implement ``_prepare(*data, dtype=None)`` (validate, return the model's
    arguments), ``_check_fit(args)``, ``_num_items(args)``,
    ``_initialize(args, init, generator)`` and ``num_parameters``.
    """

    #: plates the model nests (``max_plate_nesting`` of ``TraceEnum_ELBO``)
    max_plate_nesting = 1
    #: accepted values of ``fit(init=...)``
    inits = ("given",)
    default_init = "given"

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def _data(self, *data):
        """Validated model arguments in the model's dtype (for scoring)."""
        return self._prepare(*data, dtype=self.dtype)

    def fit(self, *data, method="em", max_iter=100, tol=1e-4, init=None, num_restarts=1,
            seed=None, progress=False, lr=0.05):
        r"""
        Fit the parameters to ``data``.

        :param str method: ``"em"`` (exact EM), ``"viterbi"`` (hard-assignment EM) or
            ``"svi"`` (Pyro's SVI with ``TraceEnum_ELBO`` and Adam on the same model and
            guide).
        :param int max_iter: iterations at most.
        :param float tol: stop when the objective changes by less than ``tol`` per data
            item between iterations (``0`` runs all ``max_iter``).
        :param str init: how to start (``self.inits``; ``"given"`` starts from the
            parameters as set).
        :param int num_restarts: independent initialisations; the run with the highest
            final objective is kept.
        :param int seed: seed of the initialisation (restart ``r`` uses ``seed + r``).
        :param bool progress: show a progress bar.
        :param float lr: Adam's learning rate for ``method="svi"``.
        :returns: the :class:`~pyroem.infer.History` of the kept run; also sets
            ``history``, ``converged`` and ``num_iters``.
        :raises ValueError: on bad data or options; the parameters are then unchanged.
        """
        check_option("method", method, METHODS)
        init = self.default_init if init is None else init
        check_option("init", init, self.inits)
        max_iter = check_positive_int("max_iter", max_iter)
        num_restarts = check_positive_int("num_restarts", num_restarts)
        if not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {tol!r}")
        args = self._prepare(*data)
        self._check_fit(args)
        if init == "given":
            num_restarts = 1
        best, best_hist = None, None
        for restart in range(num_restarts):
            # Work on a copy: a failure leaves the user's model untouched.
            # float data set the dtype; integer data (symbols) keep the model's
            work = copy.deepcopy(self).to(args[0].dtype if args[0].is_floating_point() else self.dtype)
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(int(seed) + restart)
            work._initialize(args, init, generator)
            if method == "svi":
                hist = work._run_svi(args, max_iter, tol, progress, lr)
            else:
                hist = work._run_em(args, method, max_iter, tol, progress)
            hist.restart = restart
            if best is None or hist.final_log_likelihood > best_hist.final_log_likelihood:
                best, best_hist = work, hist
        self.__dict__.update(best.__dict__)
        self.history = best_hist
        self.converged = best_hist.converged
        self.num_iters = best_hist.num_iters
        return best_hist

    def _run_em(self, args, method, max_iter, tol, progress):
        em = EM(self.model, self.guide, hard=(method == "viterbi"),
                max_plate_nesting=self.max_plate_nesting)
        return self._loop(em.step, em.evaluate_loss, args, method, max_iter, tol, progress)

    def _run_svi(self, args, max_iter, tol, progress, lr):
        elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=self.max_plate_nesting)
        svi = pyro.infer.SVI(self.model, self.guide, pyro.optim.Adam({"lr": lr}), elbo)
        em = EM(self.model, max_plate_nesting=self.max_plate_nesting)
        # The guide's q must exist (and be sized for the data) before SVI collects params.
        self.guide(*args)

        def step(*a):
            loss = em.evaluate_loss(*a)  # exact -log p(X) under the parameters before the step
            svi.step(*a)
            return loss

        return self._loop(step, em.evaluate_loss, args, "svi", max_iter, tol, progress)

    def _loop(self, step, evaluate, args, method, max_iter, tol, progress):
        hist = History(method=method)
        n = self._num_items(args)
        start = time.perf_counter()
        prev = None
        bar = tqdm(range(max_iter), disable=not progress, desc=f"{type(self).__name__} {method}")
        for _ in bar:
            ll = -step(*args)
            hist.log_likelihood.append(ll)
            hist.seconds.append(time.perf_counter() - start)
            hist.num_iters += 1
            if math.isnan(ll):
                raise FloatingPointError(f"log-likelihood became NaN at iteration {hist.num_iters}")
            bar.set_postfix(ll_per_item=ll / n)
            if prev is not None and abs(ll - prev) < tol * n:
                hist.converged = True
                break
            prev = ll
        hist.final_log_likelihood = -evaluate(*args)
        return hist

    # scoring helpers shared by the models
    def bic(self, *data):
        r"""Bayesian information criterion :math:`-2 \log p(X) + p \log N` (lower is better)."""
        args = self._data(*data)
        return float(-2 * self.log_prob(*data).sum() + self.num_parameters * math.log(self._num_items(args)))

    def aic(self, *data):
        r"""Akaike information criterion :math:`-2 \log p(X) + 2p` (lower is better)."""
        return float(-2 * self.log_prob(*data).sum() + 2 * self.num_parameters)
