r"""
Exact EM over batches for a user's own Pyro model (:func:`~pyroem.infer.fit_em` with
``batches=``): the automatic closed-form M-step
(:class:`~pyroem.infer.mstep.AutoMStep`) split into a sum over batches.

Each closed-form rule maximises :math:`Q` from a numerator and a denominator that are
sums over positions (data items times enumerated values), pulled onto the parameter's
entries (:math:`S^\top`). Those sums are additive over batches: the pass adds them up,
batch by batch, and the rule's maximiser runs once on the totals. Raw sums are kept (the
Gaussian rules centre their moments inside a batch but hand back raw numerators, and
scatters about the *new* location), so the result equals the in-memory M-step to
rounding.

Scales are maximised after the locations, about the new locations (conditional
maximisation, as in memory). Their statistics need the E-step's weights (under the old
parameters) and the new locations, so when a location changed a second pass reads every
batch again: the E-step under the old parameters, the scatter about the new locations
from that batch's moments. A Gaussian model therefore costs two E-steps per iteration
over batches.

.. code-block:: none

    pass 1: for each batch b:  q_b = p(Z_b | X_b, eta_old)
                               s0 += pull(num, den) of phase-0 params (locations, probs)
                               ll += log p(X_b | eta_old)
            eta_0 <- maximize(s0)
    pass 2 (scales, if a location moved): for each batch b:
                               q_b under eta_old, locations of eta_0
                               s1 += pull(scatter about the new location, weight)
            eta_1 <- maximize(s1)

Refused, with an error naming the parameter, rather than approximated: a parameter on
the numerical route (no rule recognises all its uses, a ``pyro.module``'s weights, a
continuous-latent model's Gaussian M-step: L-BFGS on :math:`Q` needs the whole data set
at once), a closed form whose value breaks the parameter's constraint (in memory that
falls back to L-BFGS), and a conjugate prior written as a factor in the model (each
batch's run would count it once).
"""

import pyro
import torch
import torch.distributed as dist

from pyroem.infer import distributed
from pyroem.infer.em import ParameterSnapshot
from pyroem.infer.mstep.auto import AutoMStep, _assign, _label, pulled_sums


class NotSplittable(ValueError):
    """The model's M-step cannot be written as a sum over batches."""


class ParamSums:
    """The summed statistics of one parameter over a pass: the rule's ``key``, its
    ``Stats`` (for the solver and the argument name), the report label, ``num``, ``den``."""

    def __init__(self, entries, num, den):
        stats = entries[0][1]
        self.key, self.stats, self.label = stats.key, stats, _label(entries)
        self.phase = stats.phase
        self.num, self.den = num, den

    def add(self, other, name):
        if other.key != self.key:
            raise NotSplittable(
                f"parameter '{name}' is maximised by different rules in different batches "
                f"({self.label} and {other.label}): its statistics do not add up over batches")
        self.num = self.num + other.num
        if self.den is not None:
            self.den = self.den + other.den


def _check_splittable(leaves, stats, other):
    """Raise :class:`NotSplittable` for a parameter that the batch M-step cannot take."""
    for param in leaves.leaves:
        entries = stats.get(param, [])
        keys = {s.key for _, s in entries}
        if param in other or len(keys) > 1:
            raise NotSplittable(
                f"parameter '{param}' has no closed-form update (its M-step is numerical: "
                "L-BFGS on Q needs the whole data set at once), so EM over batches cannot be "
                "exact; fit this model in memory (fit_em(model, *args)) or give the "
                "parameter a form that an M-step rule recognises")
        if any(s.prior for _, s in entries):
            raise NotSplittable(
                f"parameter '{param}' has a conjugate prior written as a factor in the model: "
                "each batch's run of the model would count the prior once, so EM over batches "
                "is refused for it; fit this model in memory")


class AutoBatchMStep:
    """
    The statistics of :class:`~pyroem.infer.mstep.AutoMStep` accumulated over batches.

    :param em: an :class:`~pyroem.infer.EM` of the user's model (automatic M-step, no
        guide).
    """

    def __init__(self, em):
        if not isinstance(em.m_step, AutoMStep):
            raise NotSplittable(
                f"EM over batches needs the automatic closed-form M-step; this model's "
                f"M-step is {em.plan.m_step!r}, which cannot be split over batches")
        self.em = em
        self.auto = em.m_step
        self.seen = set()  # the model's parameters (their routes are reported)

    def batch_sums(self, posterior, args, phase, load_new=None):
        """``{param: ParamSums}`` of one batch for the parameters of ``phase`` (0, 1, or
        ``None`` for both). Phase-1 statistics read the locations from the param store:
        ``load_new()`` puts the new parameters there once the batch's statistics under
        the old ones are taken (without it, the store's values are the batch's own)."""
        if not isinstance(self.em.m_step, AutoMStep):  # the Gaussian route took over
            raise NotSplittable(
                "this model has continuous latent variables: its M-step is numerical (exact Q "
                "under the Gaussian posterior, maximised by L-BFGS over the whole data set), "
                "so EM over batches cannot be exact; fit it in memory")
        with torch.no_grad():
            _, leaves, stats, other = self.auto._analyse(posterior, args, {})
            _check_splittable(leaves, stats, other)
            self.seen |= set(leaves.leaves)
            if load_new is not None:
                load_new()
            sums = {}
            for param, entries in stats.items():
                p = entries[0][1].phase
                if phase is None or p == phase:
                    num, den = pulled_sums(entries)
                    sums[param] = ParamSums(entries, num, den)
        return sums

    def maximize(self, totals, phase):
        """Solve and assign the parameters of ``phase`` from the pass's ``totals``;
        returns ``(routes, changed)``."""
        routes, changed = {}, False
        for param, sums in totals.items():
            if sums.phase != phase:
                continue
            old = pyro.param(param).detach()
            with torch.no_grad():
                new = sums.stats.solver.maximize(sums.stats.arg, sums.num, sums.den, old)
            reason = _assign(param, new)
            if reason is not None:
                raise NotSplittable(
                    f"the {sums.label} update of parameter '{param}' {reason}; in memory it "
                    "would fall back to the numerical M-step, which cannot be split over "
                    "batches (the parameters were left as before the pass)")
            routes[param], changed = sums.label, True
        return routes, changed


def merge_sums(totals, sums):
    """Add one batch's ``{param: ParamSums}`` into ``totals`` (in place)."""
    for param, s in sums.items():
        if param in totals:
            totals[param].add(s, param)
        else:
            totals[param] = s


def batch_arguments(index, batch):
    """A batch as the model's positional arguments: a tuple or list is the arguments
    (a ``DataLoader`` over a ``TensorDataset`` yields lists), a tensor the only one."""
    if torch.is_tensor(batch):
        return (batch,)
    if isinstance(batch, (list, tuple)):
        return tuple(batch)
    raise ValueError(f"batch {index}: expected the model's arguments (a tuple or list) or a "
                     f"tensor, got {type(batch).__name__}")


def _layout(args):
    """What must agree between batches: each argument's kind, and a tensor's dtype and
    number of dims (sizes may differ: items, sequence lengths)."""
    return tuple((str(a.dtype), a.dim()) if torch.is_tensor(a) else type(a).__name__
                 for a in args)


class UserBatches:
    """
    A re-iterable of ``(index, args)``, one per batch of ``source``, each checked as it
    is read against the first batch (number of arguments, dtypes, dims): an error names
    the batch. A ``source`` that yields nothing is an error at the end of the pass.
    """

    def __init__(self, source):
        if torch.is_tensor(source) or not hasattr(source, "__iter__"):
            raise ValueError(f"batches must be a re-iterable of batches (a list, a DataLoader), "
                             f"got {type(source).__name__}")
        if iter(source) is source:
            raise ValueError(f"batches must be re-iterable (a list, a DataLoader), got a "
                             f"one-shot {type(source).__name__}: EM passes over the data once "
                             "per iteration")
        self.source = source
        self.layout = None

    def __iter__(self):
        count = 0
        for index, batch in enumerate(self.source):
            args = batch_arguments(index, batch)
            layout = _layout(args)
            if self.layout is None:
                self.layout = layout
            elif layout != self.layout:
                raise ValueError(
                    f"batch {index}: its arguments {layout} differ from the first batch's "
                    f"{self.layout} (kind, dtype and number of dims of each argument); convert "
                    "the batches to one layout")
            yield index, args
            count += 1
        if count == 0:
            raise ValueError(f"the batches ({type(self.source).__name__}) yielded nothing: "
                             "fit_em needs at least one batch")


def _signature(totals):
    """What every rank's pass must agree on: each parameter's rule, phase and layout."""
    return tuple(sorted((p, s.label, s.phase, tuple(s.num.shape)) for p, s in totals.items()))


def reduce_across_ranks(totals, log_evidence, num_items, error=None):
    """Under ``torch.distributed``: every rank's pass summed (statistics, log-evidence,
    items), identical on all ranks; a rank that failed (``error``) or whose statistics
    differ in layout makes every rank raise an error naming it. Without a process group
    the arguments are returned as they are (``error`` raised)."""
    if not distributed.is_active():
        if error is not None:
            raise error
        return totals, log_evidence, num_items
    distributed.agree(error, None if error is not None else _signature(totals))
    device = next((s.num.device for s in totals.values()), torch.device("cpu"))
    device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    scalars = torch.tensor([log_evidence, float(num_items)], dtype=torch.float64, device=device)
    dist.all_reduce(scalars)
    for param in sorted(totals):
        s = totals[param]
        for attr in ("num", "den"):
            value = getattr(s, attr)
            if value is not None:
                total = value.detach().clone().contiguous()
                dist.all_reduce(total)
                setattr(s, attr, total)
    return totals, float(scalars[0]), round(float(scalars[1]))


def broadcast_store(names):
    """Rank 0's values of the param store's ``names`` on every rank (the starting values
    of a fit across processes); the ranks must agree on the names first."""
    params = pyro.get_param_store()._params
    distributed.agree(None, tuple((n, tuple(params[n].shape), str(params[n].dtype))
                                  for n in sorted(names)))
    with torch.no_grad():
        for name in sorted(names):
            buffer = params[name].detach().clone().contiguous()
            dist.broadcast(buffer, src=0)
            params[name].copy_(buffer)


def _named(index, error):
    """``error`` as a ``ValueError`` naming the batch (a refusal is raised as it is)."""
    if isinstance(error, NotSplittable):
        return error
    return ValueError(f"batch {index}: {type(error).__name__}: {error}")


class AutoBatchStepper:
    """
    One iteration of EM over batches for a user's model, for
    :func:`~pyroem.infer.loop.run_fit`: a pass of E-steps accumulating the statistics,
    the closed-form M-step on the totals (a second pass for the scales when a location
    moved). The objective is the pass's summed log-evidence.

    :param em: an :class:`~pyroem.infer.EM` of the model (automatic M-step, no guide).
    :param UserBatches batches: the batches.
    :param count: ``count(args) -> int``, the observed items of a batch.
    """

    def __init__(self, em, batches, count):
        self.em, self.batches, self.count = em, batches, count
        self.mstep = AutoBatchMStep(em)

    def _e_step(self, index, args):
        try:
            if any(torch.is_tensor(a) and a.numel() == 0 for a in args):
                raise ValueError("the batch is empty (a tensor argument has no elements)")
            num_items = self.count(args)
            if num_items == 0:
                raise ValueError("the batch is empty (no observed value)")
            with torch.no_grad():
                return self.em.e_step(*args), num_items
        except (ValueError, RuntimeError, IndexError) as e:
            raise _named(index, e) from e

    def _first_pass(self, statistics):
        totals, log_evidence, num_items, error = {}, 0.0, 0, None
        try:
            for index, args in self.batches:
                posterior, n = self._e_step(index, args)
                if statistics:
                    self.mstep.auto.max_plate_nesting = self.em.max_plate_nesting
                    merge_sums(totals, self.mstep.batch_sums(posterior, args, None))
                log_evidence += float(posterior.log_evidence)
                num_items += n
                del posterior  # one batch's trace at a time
        except ValueError as e:
            # across processes a failing rank reports to the others instead of leaving
            # them waiting in a collective
            error = e
        return reduce_across_ranks(totals, log_evidence, num_items, error)

    def _scale_pass(self, old):
        """Phase-1 totals: each batch's E-step under ``old`` parameters, the scatter
        about the new locations (the current values, restored at the end)."""
        new, totals, error = ParameterSnapshot(), {}, None
        try:
            for index, args in self.batches:
                old.restore()
                posterior, _ = self._e_step(index, args)
                merge_sums(totals, self.mstep.batch_sums(posterior, args, 1,
                                                         new.restore))
                del posterior
        except ValueError as e:
            error = e
        finally:
            new.restore()
        return reduce_across_ranks(totals, 0.0, 0, error)[0]

    def _m_step(self, totals):
        old = ParameterSnapshot()
        routes, changed = self.mstep.maximize(totals, 0)
        later = {p: s for p, s in totals.items() if s.phase == 1}
        if later and changed:
            later = self._scale_pass(old)
        routes.update(self.mstep.maximize(later, 1)[0])
        for name in self.mstep.seen - set(routes):
            routes[name] = "unused"
        return dict(sorted(routes.items()))

    def step(self, run):
        totals, log_evidence, run.num_items = self._first_pass(statistics=True)
        saved = self.em._snapshot()
        try:
            routes = self._m_step(totals)
        except BaseException:
            saved.restore()  # the parameters from before the pass, bit for bit
            raise
        self.em.plan.params = routes
        return log_evidence

    def evaluate(self, run):
        return self._first_pass(statistics=False)[1]
