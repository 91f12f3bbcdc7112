r"""
Fitting beyond memory and beyond one process, for the built-in models: exact EM over
batches and chunks, online EM (``partial_fit``) and ``torch.distributed``. A mixin of
:class:`~pyroem.models.EMModel`; the machinery is in :mod:`pyroem.infer.batches`,
:mod:`pyroem.infer.online` and :mod:`pyroem.infer.distributed`.

``fit`` takes the batched route when

- the data is a re-iterable of batches (:mod:`pyroem.models.batching`);
- the data is in memory but its cached features would exceed the memory budget
  (``chunk_size``): it is cut into chunks of rows (mixtures only);
- a ``torch.distributed`` process group is initialised: each rank's data is its shard.

The batched route is exact EM: the same iterates as the in-memory fit (to rounding), the
statistics of every batch merged about one origin before one M-step per pass. It does
not write the guide's q (which holds one row per data item of one in-memory data set).
"""

import warnings

import torch

from pyroem.infer import distributed
from pyroem.infer.batches import BatchEMStepper, StatisticsMStep, accumulate
from pyroem.infer.em import EM
from pyroem.infer.loop import Convergence, FitRun, Objective, Progress, run_fit
from pyroem.infer.online import OnlineStatistics
from pyroem.models.batching import Batches, batches_of
from pyroem.models.checks import check_option, check_seed, make_generator
from pyroem.models.long_chain import (
    LongChain,
    LongChainScores,
    LongChainStepper,
    check_long_chain,
)

#: the default memory budget (bytes) of a mixture's cached data features: beyond it, fit
#: and scoring work through chunks of rows whose features fit in ``CHUNK_BYTES``
CACHE_BUDGET_BYTES = 256 * 2**20
#: the features of one chunk (bytes) when the budget is exceeded
CHUNK_BYTES = 16 * 2**20


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer (rows) or None (automatic), "
                         f"got {chunk_size!r}")
    return chunk_size


def _check_in_memory_only(method, record_decomposition):
    if method == "svi" or record_decomposition:
        raise ValueError(f"{'method=svi' if method == 'svi' else 'record_decomposition'} "
                         "needs the data in memory in one piece; batches, chunks and "
                         "several processes run exact EM or Viterbi only (pass "
                         "chunk_size=N to keep a data set whole)")


class ScalableFitting:
    """Mixin of :class:`~pyroem.models.EMModel`: batches, chunks, ``partial_fit``,
    ``torch.distributed`` (see the module docstring)."""

    #: how a batch of this family looks (``"matrix"``, ``"sequences"``), ``None`` when
    #: the family takes no batches
    batch_kind = None

    def _feature_width(self):
        """Numbers per data row in the cached features (``None``: not chunked)."""
        return

    def _chunk_rows(self, args, chunk_size):
        """Rows per chunk for in-memory ``args`` (points of a mixture, sequences of an
        HMM), or ``None`` to keep them whole."""
        chunk_size = _check_chunk_size(chunk_size)
        width = self._feature_width()
        if width is None or self.batch_kind not in ("matrix", "sequences"):
            if chunk_size is not None:
                warnings.warn(f"chunk_size has no effect on {type(self).__name__}: its "
                              "E-step caches no per-row features that chunks would bound; "
                              "the data are processed whole", UserWarning, stacklevel=4)
            return None
        n = args[0].shape[0]
        if chunk_size is None:
            # bytes of features per row: a point, or a padded sequence of T frames
            per_row = width * args[0].element_size() * (
                args[0].shape[1] if self.batch_kind == "sequences" else 1)
            if n * per_row <= CACHE_BUDGET_BYTES:
                return None
            chunk_size = max(1, CHUNK_BYTES // per_row)
        return chunk_size if chunk_size < n else None

    def _long_chain_frames(self, args, chunk_size):
        """Frames per block of the checkpointed E-step (:mod:`pyroem.models.long_chain`)
        when ``args`` is one HMM sequence longer than ``chunk_size`` (or, with ``None``,
        whose features exceed the budget), else ``None``."""
        chunk_size = _check_chunk_size(chunk_size)
        if self.batch_kind != "sequences" or args[0].shape[0] != 1 or len(args) > 2:
            return None
        T = int(args[1][0])
        if chunk_size is None:
            width = self._feature_width()
            if width is None or T * width * args[0].element_size() <= CACHE_BUDGET_BYTES:
                return None
            chunk_size = max(1, CHUNK_BYTES // (width * args[0].element_size()))
        return chunk_size if chunk_size < T else None

    def _scored_in_chunks(self, args, chunk_size, fn):
        """``fn(e_step(*chunk))`` over chunks of ``chunk_size`` sequences (rows) of the
        prepared ``args``, concatenated along the first dim: memory bounded by a chunk's
        E-step. ``None``: the budget's default, as in :meth:`fit` (whole when the cached
        features stay under :data:`CACHE_BUDGET_BYTES`)."""
        frames = self._long_chain_frames(args, chunk_size)
        if frames is not None and self.final_states is None:
            return fn(LongChainScores(self, args, frames))
        chunk_size = _check_chunk_size(chunk_size)
        n = args[0].shape[0]
        if n == 1 and chunk_size is not None and chunk_size < args[0].shape[1]:
            warnings.warn("chunk_size does not cut this sequence into blocks of frames "
                          "(obs_mask, labels or final_states need it whole): it is scored "
                          "in one piece", UserWarning, stacklevel=3)
        rows = self._chunk_rows(args, None) if chunk_size is None else chunk_size
        if rows is None or rows >= n:
            return fn(self.e_step(*args))
        # copies, not views: features cached per chunk die with it
        return torch.cat([fn(self.e_step(*(a[start:start + rows].clone() if torch.is_tensor(a)
                                           else a for a in args)))
                          for start in range(0, n, rows)])

    def _fit_arguments(self, data, chunk_size, method, init, record_decomposition):
        """``fit``'s data as prepared arguments (a tuple) or as :class:`Batches`."""
        source = batches_of(self, data)
        summarise = getattr(self, "_summarised_arguments", None)
        if summarise is not None and (source is not None or distributed.is_active()):
            # the data enter EM through a summary that one pass accumulates (PLDA)
            _check_in_memory_only(method, record_decomposition)
            _check_chunk_size(chunk_size)
            args = summarise(source if source is not None else [tuple(data)])
            self._check_fit(args)
            return args
        if source is None and self.batch_kind is None:
            if distributed.is_active():
                warnings.warn(f"{type(self).__name__} has no distributed fit: under the "
                              "initialised torch.distributed process group each rank fits "
                              "its own data only", UserWarning, stacklevel=4)
            args = self._prepare(*data)
            self._check_fit(args)
            return args
        if source is None:
            args = self._prepared_shard(data)
            frames = self._long_chain_frames(args, chunk_size)
            if frames is not None and not distributed.is_active():
                _check_in_memory_only(method, record_decomposition)
                check_long_chain(self, args, method)
                self._check_fit(args)
                return LongChain(self, args, frames)
            rows = self._chunk_rows(args, chunk_size)
            if rows is None and not distributed.is_active():
                self._check_fit(args)
                return args
            batches = Batches(self, chunks=(args, rows or args[0].shape[0]))
        else:
            _check_chunk_size(chunk_size)
            batches = Batches(self, source)
        _check_in_memory_only(method, record_decomposition)
        return batches

    def _signature(self):
        """What every rank must agree on: the model's class and configuration."""
        return type(self).__name__, repr(self.config())

    def _prepared_shard(self, data):
        """``self._prepare(*data)``; under torch.distributed every rank first learns
        whether any rank's shard was refused, and all raise naming that rank."""
        if not distributed.is_active():
            return self._prepare(*data)
        args, error = None, None
        try:
            args = self._prepare(*data)
        except ValueError as e:
            error = e
        distributed.agree(error, self._signature())
        return args

    def _start(self, args, init, generator):
        """Starting values: from the data, or for batches from the first batch (on rank
        0 under torch.distributed, then broadcast)."""
        if not isinstance(args, Batches):
            self._initialize(args, init, generator)
            return
        error = None
        try:
            # in-memory data (chunked, or a rank's shard) start from all of it, as
            # without chunks; a stream of batches from its first batch
            first = args.chunks[0] if args.chunks is not None else args.first()
            if init != "given" and distributed.rank() == 0:
                self._check_fit(first)
                self._initialize(first, init, generator)
        except ValueError as e:
            if not distributed.is_active():
                raise
            error = e
        if distributed.is_active():
            distributed.agree(error, self._signature() + (str(self.dtype),))
            distributed.broadcast_parameters(self)

    def _batch_dtype(self, args):
        """Set the model's dtype from the data (the first batch's for batches)."""
        self._to_data_dtype(args.first() if isinstance(args, Batches) else args)

    def _fit_batches_once(self, batches, method, max_iter, tol, progress):
        """One run of exact EM (or Viterbi) over ``batches`` through the one loop."""
        em = EM(self.model, None, hard=(method == "viterbi"),
                max_plate_nesting=self.max_plate_nesting, m_step=StatisticsMStep(self))
        reduce = distributed.reduce_pass if distributed.is_active() else None
        run = FitRun(method, (), num_items=1)
        recorders = [Objective(), Convergence(tol),
                     Progress(max_iter, f"{type(self).__name__} {method} (batches)", progress)]
        stepper = (LongChainStepper(em, batches) if isinstance(batches, LongChain)
                   else BatchEMStepper(em, self, batches, reduce))
        hist = run_fit(stepper, run, max_iter, recorders)
        hist.records["strategies"] = [dict(em.plan.params)] * hist.num_iters
        return hist

    # ------------------------------------------------------------------ online EM
    def partial_fit(self, *batch, init=None, seed=None, kappa=0.6, t0=0.0):
        r"""
        One step of online EM (Cappé and Moulines, 2009; :mod:`pyroem.infer.online`) on
        one batch: the exact E-step of the batch, the running average of the statistics
        per item :math:`s \leftarrow (1 - \rho_t) s + \rho_t \bar s_t` with
        :math:`\rho_t = (t + t_0)^{-\kappa}`, then the M-step from :math:`s`.

        :param batch: one batch, as ``fit`` takes data (e.g. ``(n, D)`` for a mixture;
            sequences, or padded sequences and lengths, for an HMM).
        :param str init: how a model that has been neither fitted nor partially fitted
            starts, from this first batch (as in ``fit``); later calls ignore it.
        :param int seed: seed of that initialisation; later calls ignore it.
        :param float kappa: step-size exponent in (0.5, 1].
        :param float t0: step-size offset >= 0.
        :returns: ``self``; ``online_log_likelihood`` holds each batch's
            :math:`\log p(X_t | \eta_{t-1})`.
        :raises ValueError: on a bad batch or option; nothing changes then.
        """
        if self.batch_kind not in ("matrix", "sequences"):
            raise ValueError(f"{type(self).__name__} has no partial_fit (online EM is for "
                             "mixtures and HMMs); fit it on a list or DataLoader of batches")
        online = getattr(self, "_online", None)
        schedule = OnlineStatistics(kappa, t0)  # checks kappa and t0
        first = online is None
        if first:
            init = self.default_init if init is None else init
            check_option("init", init, self.inits)
            seed = check_seed(seed)
        raw = batch[0] if len(batch) == 1 else tuple(batch)
        args = Batches(self).prepare(0 if first else online.t, raw, check_dtype=not first)
        with self._transaction():
            if first:
                self._to_data_dtype(args)
                if init != "given" and getattr(self, "history", None) is None:
                    self._check_fit(args)
                    self._initialize(args, init, make_generator(seed))
                online = schedule
            else:
                online.kappa, online.t0 = schedule.kappa, schedule.t0
            self._online_step(online, args)
        self._online = online
        return self

    def _online_step(self, online, args):
        em = EM(self.model, None, max_plate_nesting=self.max_plate_nesting,
                m_step=StatisticsMStep(self))
        result = accumulate(em, self, [args])
        stats = online.proposal(result.stats, result.num_items)
        em.run_m_step(stats)
        online.commit(stats)
        self.online_log_likelihood = getattr(self, "online_log_likelihood", []) + [
            result.log_evidence]


def chunked(x, rows):
    """Row chunks of ``x`` (copies, so that features cached per chunk die with it)."""
    for start in range(0, x.shape[0], rows):
        yield x[start:start + rows].clone()


def cat_chunks(fn, x, rows):
    """``fn`` applied to row chunks of ``x``, concatenated (``rows=None``: in one go)."""
    if rows is None or rows >= x.shape[0]:
        return fn(x)
    return torch.cat([fn(c) for c in chunked(x, rows)])
