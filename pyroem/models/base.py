"""The fit loop shared by the built-in models."""

import contextlib
import copy
import functools
import math
import time

import pyro
import torch
from pyro.nn import PyroModule, pyro_method
from tqdm import tqdm

from pyroem.infer.em import EM
from pyroem.infer.history import History
from pyroem.models.checks import check_option, check_positive_int

METHODS = ("em", "viterbi", "svi")


def model_method(fn):
    """
    Decorate a built-in model's ``model``/``guide``: like :func:`pyro.nn.pyro_method`
    (parameters appear as param sites, so ``SVI`` trains them), with
    ``module_local_params=True`` so that the parameters live in the module and two
    models never share a parameter through Pyro's global param store by name.
    """
    method = pyro_method(fn)

    @functools.wraps(fn)
    def wrapped(self, *args, **kwargs):
        with pyro.settings.context(module_local_params=True):
            return method(self, *args, **kwargs)

    return wrapped


class _Clock:
    """Wall-clock seconds since creation, not counting time spent in :meth:`paused`
    (diagnostics such as the exact log-likelihood of an SVI iterate are not part of the
    method being timed)."""

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


class EMModel(PyroModule):
    """
    Base class of the built-in models: a :class:`~pyro.nn.PyroModule` with ``model``,
    ``guide`` and the closed-form EM protocol (``expected_statistics``, ``maximize``,
    ``write_posterior``), plus :meth:`fit`.

    Subclasses implement ``_prepare(*data, dtype=None)`` (validate, return the model's
    arguments), ``_check_fit(args)``, ``_num_items(args)``,
    ``_initialize(args, init, generator)`` and ``num_parameters``.

    A subclass's ``model`` and ``guide`` are wrapped so that their parameters are
    ``pyro.param`` sites in a param-store scope of their own: ``pyro.infer.SVI(m.model,
    m.guide, ...)`` then trains the module's parameters in place, and two models never
    share values through the global param store.
    """

    def __init__(self, name=""):
        # Parameters live in the module, not in Pyro's global param store (see
        # model_method); the module's context must be created in that mode.
        with pyro.settings.context(module_local_params=True):
            super().__init__(name)

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
            seed=None, progress=False, lr=0.05, record_decomposition=False):
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
        :param int seed: seed of the initialisation (restart ``r`` uses ``seed + r``) and,
            for SVI, of its Monte Carlo draws (the global RNG is left as it was).
        :param bool progress: show a progress bar.
        :param float lr: Adam's learning rate for ``method="svi"`` (whose guide's q
            starts at the exact posterior under the starting parameters).
        :param bool record_decomposition: also record, per iteration, the exact
            decomposition :math:`\log p(X) = \mathrm{ELBO}(q) + \mathrm{KL}(q \| p(Z|X))`
            of :func:`~pyroem.infer.decompose` (a
            :class:`~pyroem.infer.Decomposition`) in ``history.records``: for EM and
            Viterbi ``"e_step"`` (after each E-step) and ``"m_step"`` (after each M-step),
            for SVI ``"step"`` (after each step); and ``"log_evidence"``, the exact
            :math:`\log p(X)` each iteration started from (for Viterbi the true
            evidence, not :math:`\log p(X, \hat Z)`). It costs about two extra E-steps
            per iteration, which ``history.seconds`` does not count. Off by default.
            ``"log_evidence"`` records only ``"log_evidence"`` (for Viterbi one extra
            exact E-step per iteration; EM's and SVI's objective is that value already).
        :returns: the :class:`~pyroem.infer.History` of the kept run; also sets
            ``history``, ``converged`` and ``num_iters``.
        :raises ValueError: on bad data or options; the parameters are then unchanged.
        """
        check_option("method", method, METHODS)
        if record_decomposition not in (True, False, "log_evidence"):
            raise ValueError("record_decomposition must be True, False or 'log_evidence', "
                             f"got {record_decomposition!r}")
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
                # SVI's Monte Carlo draws (continuous latents) use the global RNG: with a
                # seed they are reproducible too, without disturbing the caller's stream
                with torch.random.fork_rng(enabled=seed is not None):
                    if seed is not None:
                        torch.manual_seed(int(seed) + restart)
                    hist = work._run_svi(args, max_iter, tol, progress, lr, record_decomposition)
            else:
                hist = work._run_em(args, method, max_iter, tol, progress, record_decomposition)
            hist.restart = restart
            if best is None or hist.final_log_likelihood > best_hist.final_log_likelihood:
                best, best_hist = work, hist
        # Take over the fitted copy's whole state; drop attributes it no longer has (e.g. a
        # plain ``q_probs = None`` that became a PyroParam would otherwise shadow it).
        for key in set(self.__dict__) - set(best.__dict__):
            del self.__dict__[key]
        self.__dict__.update(best.__dict__)
        self.history = best_hist
        self.converged = best_hist.converged
        self.num_iters = best_hist.num_iters
        return best_hist

    def _run_em(self, args, method, max_iter, tol, progress, record_decomposition=False):
        em = EM(self.model, self.guide, hard=(method == "viterbi"),
                max_plate_nesting=self.max_plate_nesting)
        if record_decomposition is True:
            hist = self._loop_recording(em, args, method, max_iter, tol, progress)
        elif record_decomposition and em.hard:
            hist = self._loop_evidence(em, args, method, max_iter, tol, progress)
        else:
            hist = self._loop(em.step, em.evaluate_loss, args, method, max_iter, tol, progress)
        # Which M-step strategy each parameter used, per iteration (constant here).
        hist.records["strategies"] = [getattr(em.m_step, "strategies", {})] * hist.num_iters
        return hist

    def _loop_evidence(self, em, args, method, max_iter, tol, progress):
        """The Viterbi loop with the exact log p(X) each iteration starts from recorded
        (one soft E-step, not counted in ``seconds``)."""
        hist, clock = History(method=method), _Clock()
        exact = EM(self.model, max_plate_nesting=self.max_plate_nesting)  # as in _run_svi

        def step(*a):
            with clock.paused():
                hist.record("log_evidence", -exact.evaluate_loss(*a))
            return em.step(*a)

        return self._loop(step, em.evaluate_loss, args, method, max_iter, tol, progress,
                          hist=hist, clock=clock)

    def _loop_recording(self, em, args, method, max_iter, tol, progress):
        """The EM loop with the exact decomposition recorded after each E- and M-step."""
        from pyroem.infer.decompose import decompose  # infer does not import models

        hist, clock = History(method=method), _Clock()

        def step(*a):
            with torch.no_grad():
                posterior = em.e_step(*a)  # writes q = p(Z|X, eta_old) into the guide
            with clock.paused():
                known = None if em.hard else posterior.log_evidence
                d = decompose(self.model, self.guide, *a, log_evidence=known,
                              max_plate_nesting=self.max_plate_nesting)
                hist.record("e_step", d)
                hist.record("log_evidence", d.log_evidence)
            em.m_step(posterior, *a)
            with clock.paused():
                hist.record("m_step", decompose(self.model, self.guide, *a,
                                                max_plate_nesting=self.max_plate_nesting))
            return -float(posterior.log_evidence)

        return self._loop(step, em.evaluate_loss, args, method, max_iter, tol, progress,
                          hist=hist, clock=clock)

    def _run_svi(self, args, max_iter, tol, progress, lr, record_decomposition=False):
        svi = pyro.infer.SVI(self._svi_model(), self.guide, pyro.optim.Adam({"lr": lr}),
                             self._svi_elbo())
        em = EM(self.model, max_plate_nesting=self.max_plate_nesting)
        # The guide's q must exist (and be sized for the data) before SVI collects params.
        self.guide(*args)
        write = getattr(self, "write_posterior", None)
        if write is not None:
            # Start q at the exact posterior of the starting parameters, so that SVI starts
            # where EM does (ELBO = log p(X)); a uniform q would first pull every component
            # to the data mean and undo a good initialisation.
            with torch.no_grad():
                write(em.e_step(*args), *args)
        hist, clock = History(method="svi"), _Clock()
        if record_decomposition is True:
            from pyroem.infer.decompose import decompose  # infer does not import models

        def step(*a):
            # The exact -log p(X) under the parameters before the step is a diagnostic,
            # not part of SVI: its time is not counted.
            with clock.paused():
                loss = em.evaluate_loss(*a)
                if record_decomposition:
                    hist.record("log_evidence", -loss)
            hist.record("loss", svi.step(*a))  # -ELBO before the step (exact: q enumerated)
            if record_decomposition is True:
                with clock.paused():
                    hist.record("step", decompose(self.model, self.guide, *a,
                                                  max_plate_nesting=self.max_plate_nesting))
            return loss

        return self._loop(step, em.evaluate_loss, args, "svi", max_iter, tol, progress,
                          hist=hist, clock=clock)

    def _svi_model(self):
        """The model that ``fit(method="svi")`` trains (``self.model``; a model may give an
        equivalent one that is faster to differentiate)."""
        return self.model

    def _svi_elbo(self):
        """The ELBO that ``fit(method="svi")`` optimises (discrete latents enumerated;
        a model with continuous latents returns e.g. ``Trace_ELBO()``)."""
        return pyro.infer.TraceEnum_ELBO(max_plate_nesting=self.max_plate_nesting)

    def _loop(self, step, evaluate, args, method, max_iter, tol, progress, hist=None, clock=None):
        hist = History(method=method) if hist is None else hist
        clock = _Clock() if clock is None else clock
        n = self._num_items(args)
        prev = None
        # delay: a bar appears only for fits that take more than a second
        bar = tqdm(range(max_iter), disable=not progress, delay=1.0,
                   desc=f"{type(self).__name__} {method}")
        for _ in bar:
            ll = -step(*args)
            hist.log_likelihood.append(ll)
            hist.seconds.append(clock())
            hist.num_iters += 1
            if math.isnan(ll):
                raise FloatingPointError(f"log-likelihood became NaN at iteration {hist.num_iters}")
            bar.set_postfix(ll_per_item=ll / n, refresh=False)
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
