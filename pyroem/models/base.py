"""The base class of the built-in models: ``fit`` through the one loop of
:mod:`pyroem.infer.loop`, ``initialize``, an explicit state (:mod:`pyroem.models.state`)."""

import contextlib
import functools
import math

import pyro
import torch
from pyro.nn import PyroModule, pyro_method

from pyroem.infer import distributed
from pyroem.infer.em import EM
from pyroem.infer.loop import (
    Convergence,
    EMStepper,
    FitRun,
    Objective,
    Progress,
    SVIStepper,
    run_fit,
)
from pyroem.infer.recorders import EMDecomposition, ExactEvidence, SVIDecomposition
from pyroem.models import checkpoint
from pyroem.models.batching import Batches, batches_of
from pyroem.models.checks import check_option, check_positive_int, check_seed, make_generator
from pyroem.models.raw import DetachedReads
from pyroem.models.scaling import ScalableFitting
from pyroem.models.state import ModelState

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


class EMModel(ScalableFitting, ModelState, DetachedReads, PyroModule):
    """
    Base class of the built-in models: a :class:`~pyro.nn.PyroModule` with ``model``,
    ``guide`` and the EM contract of :mod:`pyroem.infer.protocols` (a closed-form
    M-step, ``expected_statistics`` and ``maximize``; the guide's ``write_posterior``;
    optionally its own ``e_step``), plus :meth:`fit`, :meth:`initialize` and an explicit
    state (:class:`~pyroem.models.state.ModelState`: ``config``, ``state_dict``,
    ``load_state_dict``).

    Subclasses implement ``_prepare(*data, dtype=None)`` (validate, return the model's
    arguments), ``_check_fit(args)``, ``_num_items(args)``,
    ``_initialize(args, init, generator)`` and ``num_parameters``, and store every
    constructor argument under its own name.

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

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        checkpoint.MODEL_CLASSES[cls.__name__] = cls  # pyroem.load finds it by name

    def save(self, path):
        """Write a checkpoint (configuration and model parameters; not the guide's q, not
        the data) to ``path``: ``.npz`` (numpy's archive) or else ``torch.save``. Load it
        with :meth:`load` or :func:`pyroem.load`; see :mod:`pyroem.models.checkpoint`."""
        checkpoint.save(self, path)

    @classmethod
    def load(cls, path):
        """The model saved at ``path`` by :meth:`save`, refusing a file that is not a
        pyroem checkpoint or holds another model class."""
        return checkpoint.load(path, expected=cls)

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    #: the partial-observation keywords (``obs_mask``, ``labels``, ``sample_weight``) that
    #: ``fit``, ``initialize`` and ``prepare`` accept (see :mod:`pyroem.models.partial`)
    partial_observation = ()

    def _partial(self, **partial):
        """The partial-observation keywords that are given, refusing those the model does
        not support (before anything changes)."""
        given = {k: v for k, v in partial.items() if v is not None}
        for name in given:
            if name not in self.partial_observation:
                supported = ", ".join(self.partial_observation) or "none"
                raise ValueError(f"{type(self).__name__} does not take {name}= (partial "
                                 f"observation it supports: {supported})")
        return given

    def _data(self, *data, **partial):
        """Validated model arguments in the model's dtype (for scoring)."""
        return self._prepare(*data, dtype=self.dtype, **self._partial(**partial))

    def prepare(self, *data, obs_mask=None, labels=None, sample_weight=None):
        """The arguments of :meth:`model` and :meth:`guide` for ``data`` (and the partial
        observation, where the model supports it: ``obs_mask``, ``labels``,
        ``sample_weight``; see :mod:`pyroem.models.partial`), validated and in the
        model's dtype, so that ``EM(m.model, m.guide).step(*m.prepare(x))``,
        ``decompose`` and Pyro's ``SVI`` can be run by hand."""
        return self._data(*data, obs_mask=obs_mask, labels=labels, sample_weight=sample_weight)

    # ------------------------------------------------------------------ starting values
    def _to_data_dtype(self, args):
        # float data set the dtype (a model computes in its data's dtype); integer data
        # (symbols) keep the model's
        if args[0].is_floating_point() and args[0].dtype != self.dtype:
            self.to(args[0].dtype)

    def initialize(self, *data, init=None, seed=None, obs_mask=None, labels=None,
                   sample_weight=None):
        """
        Set the parameters to starting values computed from ``data``, as ``fit`` does
        before its first iteration (the model takes the data's floating dtype).

        :param str init: one of :attr:`inits` (``default_init`` when ``None``;
            ``"given"`` keeps the parameters as set).
        :param int seed: seed of the initialisation (a fresh one when ``None``).
        :param obs_mask, labels, sample_weight: partial observation, as in :meth:`fit`.
        :returns: ``self``.
        :raises ValueError: on bad data or options; the parameters are then unchanged.
        """
        init = self.default_init if init is None else init
        check_option("init", init, self.inits)
        seed = check_seed(seed)
        args = self._prepare(*data, **self._partial(obs_mask=obs_mask, labels=labels,
                                                     sample_weight=sample_weight))
        self._check_fit(args)
        with self._transaction():
            self._to_data_dtype(args)
            self._initialize(args, init, make_generator(seed))
        return self

    @contextlib.contextmanager
    def _transaction(self):
        """Restore the whole state (parameters, dtype, guide) if the block raises."""
        saved = self.snapshot()
        try:
            yield saved
        except BaseException:
            self.load_state_dict(saved)
            raise

    # ------------------------------------------------------------------ fitting
    def fit(self, *data, method="em", max_iter=100, tol=1e-4, init=None, num_restarts=1,
            seed=None, progress=False, lr=0.05, record_decomposition=False, obs_mask=None,
            labels=None, sample_weight=None, chunk_size=None):
        r"""
        Fit the parameters to ``data``.

        :param str method: ``"em"`` (exact EM), ``"viterbi"`` (hard-assignment EM) or
            ``"svi"`` (Pyro's SVI with Adam on the same model and guide).
        :param int max_iter: iterations at most; reaching it unconverged warns with a
            :class:`~pyroem.infer.loop.ConvergenceWarning` (unless ``tol=0``).
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
            :func:`~pyroem.infer.decompose` in ``history.records`` (``"e_step"`` and
            ``"m_step"`` for EM and Viterbi, ``"step"`` for SVI) and ``"log_evidence"``,
            the exact :math:`\log p(X)` each iteration started from; about two extra
            E-steps per iteration, not counted in ``history.seconds``. Off by default;
            ``"log_evidence"`` records only that (:class:`~pyroem.infer.recorders.EMDecomposition`).
        :param obs_mask: bool, the data's shape, True = observed (Pyro's name): the
            values it marks missing are never read (they may hold NaN) and the fit is
            exact EM on the observed part (:mod:`pyroem.models.partial`).
        :param labels: known latents, ``-1`` where unknown (per point; per frame for an
            HMM, padded like the data): clamped in the E-step; the initialisation starts
            from the labelled points.
        :param sample_weight: a weight ``>= 0`` per point (per sequence for an HMM, per
            embedding for PLDA): the objective is :math:`\sum_n w_n \log p(x_n)`.
        :param int chunk_size: rows per chunk of the E-step and statistics (``None``:
            whole within the memory budget). Chunks, batches (``data`` a ``DataLoader``
            or a list of batches) and ``torch.distributed`` shards all run exact EM, one
            M-step per pass (:mod:`pyroem.models.scaling`); the partial observation
            applies to in-memory data, which is then not chunked.
        :returns: the :class:`~pyroem.infer.History` of the kept run; also sets
            ``history``, ``converged`` and ``num_iters``.
        :raises ValueError: on bad data or options; the parameters are then unchanged
            (as after any error during the fit).
        """
        init, max_iter, num_restarts, seed = self._fit_options(
            method, init, max_iter, num_restarts, tol, seed, lr, record_decomposition)
        partial = self._partial(obs_mask=obs_mask, labels=labels, sample_weight=sample_weight)
        if partial:
            args = self._partial_fit_arguments(data, partial, chunk_size)
            self._check_fit_options(args, method, record_decomposition)
        else:
            args = self._fit_arguments(data, chunk_size, method, init, record_decomposition)
        options = dict(method=method, max_iter=max_iter, tol=tol, progress=progress, lr=lr,
                       record_decomposition=record_decomposition)
        with self._transaction():
            self._batch_dtype(args)
            best = self._best_of_restarts(args, init, num_restarts, seed, options)
        self.history, self.converged, self.num_iters = best, best.converged, best.num_iters
        return best

    def _fit_options(self, method, init, max_iter, num_restarts, tol, seed, lr,
                     record_decomposition):
        """``fit``'s options checked before anything changes: ``(init, max_iter,
        num_restarts, seed)`` with their defaults filled in."""
        check_option("method", method, METHODS)
        if record_decomposition not in (True, False, "log_evidence"):
            raise ValueError("record_decomposition must be True, False or 'log_evidence', "
                             f"got {record_decomposition!r}")
        init = self.default_init if init is None else init
        check_option("init", init, self.inits)
        max_iter = check_positive_int("max_iter", max_iter)
        num_restarts = 1 if init == "given" else check_positive_int("num_restarts", num_restarts)
        Convergence(tol)  # checks tol before anything changes
        seed = check_seed(seed)
        if method == "svi" and not (isinstance(lr, (int, float)) and not isinstance(lr, bool)
                                    and lr > 0):
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
        return init, max_iter, num_restarts, seed

    def _partial_fit_arguments(self, data, partial, chunk_size):
        """Prepared in-memory arguments with the partial observation (not chunked)."""
        if chunk_size is not None or batches_of(self, data) is not None \
                or distributed.is_active():
            raise ValueError("obs_mask, labels and sample_weight apply to in-memory data in "
                             "one process: not with batches, a DataLoader, chunk_size or "
                             "torch.distributed")
        args = self._prepare(*data, **partial)
        self._check_fit(args)
        return args

    def _check_fit_options(self, args, method, record_decomposition):
        """Refuse a combination of options and data that the model cannot fit (before
        anything changes); nothing by default."""

    def _best_of_restarts(self, args, init, num_restarts, seed, options):
        """Run each restart from the same state, then keep the state of the run with the
        highest final objective; returns that run's history."""
        start = self.snapshot() if num_restarts > 1 else None
        best_state, best = None, None
        for restart in range(num_restarts):
            if restart:
                self.load_state_dict(start)
            restart_seed = None if seed is None else int(seed) + restart
            self._start(args, init, make_generator(restart_seed))
            hist = self._fit_once(args, seed=restart_seed, **options)
            hist.restart = restart
            if best is None or hist.final_log_likelihood > best.final_log_likelihood:
                best = hist
                best_state = self.snapshot() if num_restarts > 1 else None
        if best_state is not None:
            self.load_state_dict(best_state)
        return best

    def _fit_once(self, args, method, max_iter, tol, progress, lr, record_decomposition,
                  seed):
        """One run of ``method`` from the current parameters, through the one loop."""
        if isinstance(args, Batches):
            return self._fit_batches_once(args, method, max_iter, tol, progress)
        run = FitRun(method, args, num_items=self._num_items(args))
        recorders = [Objective(), Convergence(tol),
                     Progress(max_iter, f"{type(self).__name__} {method}", progress)]
        if method == "svi":
            # SVI's Monte Carlo draws (continuous latents) use the global RNG: with a seed
            # they are reproducible too, without disturbing the caller's stream
            with torch.random.fork_rng(enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                return run_fit(self._svi_stepper(args, lr), run, max_iter,
                               self._svi_recorders(record_decomposition) + recorders)
        em = EM(self.model, self.guide, hard=(method == "viterbi"),
                max_plate_nesting=self.max_plate_nesting)
        extra = self._em_recorders(em, record_decomposition)
        hist = run_fit(EMStepper(em, extra), run, max_iter, extra + recorders)
        # Which M-step route each parameter took, per iteration (constant here).
        hist.records["strategies"] = [dict(em.plan.params)] * hist.num_iters
        return hist

    def _em_recorders(self, em, record_decomposition):
        if record_decomposition is True:
            return [EMDecomposition(self.model, self.guide, self.max_plate_nesting, em.hard)]
        if record_decomposition and em.hard:
            return [ExactEvidence(EM(self.model, max_plate_nesting=self.max_plate_nesting))]
        return []

    def _svi_recorders(self, record_decomposition):
        if not record_decomposition:
            return []
        return [SVIDecomposition(self.model, self.guide, self.max_plate_nesting,
                                 full=record_decomposition is True)]

    def _svi_stepper(self, args, lr):
        svi = pyro.infer.SVI(self._svi_model(), self.guide, pyro.optim.Adam({"lr": lr}),
                             self._svi_elbo())
        exact = EM(self.model, self.guide, max_plate_nesting=self.max_plate_nesting)
        # The guide's q must exist (and be sized for the data) before SVI collects params.
        self.guide(*args)
        # Start q at the exact posterior of the starting parameters, so that SVI starts
        # where EM does (ELBO = log p(X)); a uniform q would first pull every component
        # to the data mean and undo a good initialisation. (The exact evaluations of
        # the loop do not write q.)
        with torch.no_grad():
            exact.e_step(*args)
        return SVIStepper(svi, exact)

    def _svi_model(self):
        """The model that ``fit(method="svi")`` trains (``self.model``; a model may give an
        equivalent one that is faster to differentiate)."""
        return self.model

    def _svi_elbo(self):
        """The ELBO that ``fit(method="svi")`` optimises (discrete latents enumerated;
        a model with continuous latents returns e.g. ``Trace_ELBO()``)."""
        return pyro.infer.TraceEnum_ELBO(max_plate_nesting=self.max_plate_nesting)

    # scoring helpers shared by the models
    def bic(self, *data):
        r"""Bayesian information criterion :math:`-2 \log p(X) + p \log N` (lower is better)."""
        args = self._data(*data)
        penalty = self.num_parameters * math.log(self._num_items(args))
        return float(-2 * self.log_prob(*data).sum() + penalty)

    def aic(self, *data):
        r"""Akaike information criterion :math:`-2 \log p(X) + 2p` (lower is better)."""
        return float(-2 * self.log_prob(*data).sum() + 2 * self.num_parameters)
