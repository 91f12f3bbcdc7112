r"""
Exact EM over batches: one pass over the data accumulates the expected sufficient
statistics of every batch, then one M-step.

Because the statistics are additive (merged about a common origin,
:func:`~pyroem.distributions.merge.add_statistics`), the M-step after a pass equals the
M-step of the whole data set in memory, and the pass's summed log-evidence is
:math:`\log p(X | \eta_{old})`: EM over batches *is* EM, not an approximation of it.

.. code-block:: none

    for each pass:                                 # one iteration of the fit loop
        s, ll, n = 0, 0, 0
        for each batch X_b:
            q_b = p(Z_b | X_b, eta)                # the exact E-step of the batch
            s  <- s (+) E_q_b[T(X_b, Z_b)]          # merged about one origin
            ll <- ll + log p(X_b | eta)
        s, ll, n <- all-reduce(s, ll, n)           # under torch.distributed only
        eta <- argmax_eta Q(s)                     # one M-step

Memory is that of one batch (plus the statistics), so a data set that does not fit in
memory is read batch by batch (a ``DataLoader``, a memory map), and an in-memory data set
is cut into chunks of ``chunk_size`` rows so that no intermediate grows with ``N``.
"""

import torch

from pyroem.distributions.merge import add_statistics
from pyroem.infer.mstep.closed_form import ClosedFormMStep


class StatisticsMStep(ClosedFormMStep):
    """The closed-form M-step from statistics already accumulated: called as
    ``m_step(stats)``, it runs ``owner.maximize(stats)`` (through
    :meth:`~pyroem.infer.EM.run_m_step`, so it is transactional: a failed M-step
    restores every parameter)."""

    def __call__(self, stats, *args, **kwargs):
        self.owner.maximize(stats)
        return stats


class PassResult:
    """What one pass over the batches gives: merged ``stats`` (``None`` when not asked
    for), the summed ``log_evidence`` and ``num_items``."""

    def __init__(self, stats, log_evidence, num_items):
        self.stats = stats
        self.log_evidence = log_evidence
        self.num_items = num_items


def accumulate(em, owner, batches, statistics=True, merge=add_statistics):
    r"""
    One pass: the exact E-step of every batch, its statistics merged.

    :param em: an :class:`~pyroem.infer.EM` of the owner's model (built without a guide:
        the guide's q is sized for one data set, not for a pass).
    :param owner: the closed-form provider (``expected_statistics``, ``_num_items``).
    :param batches: an iterable of prepared argument tuples.
    :param bool statistics: also compute the statistics (not for an evaluation pass).
    :returns: a :class:`PassResult`.
    """
    total, log_evidence, num_items = None, 0.0, 0
    for args in batches:
        with torch.no_grad():
            posterior = em.e_step(*args)
            if statistics:
                stats = owner.expected_statistics(posterior, *args)
                total = stats if total is None else merge(total, stats)
                del stats
        log_evidence += float(posterior.log_evidence)
        num_items += owner._num_items(args)
        # drop the batch's trace (and through it the data features cached for the
        # batch) before the next batch is read: one batch's memory at a time
        del posterior, args
    return PassResult(total, log_evidence, num_items)


class BatchEMStepper:
    """
    One iteration of EM over batches for :func:`~pyroem.infer.loop.run_fit`: a pass of
    :func:`accumulate`, the optional ``reduce`` (all-reduce across processes), one M-step.
    The objective is the pass's summed log-evidence; ``run.num_items`` is set from the
    pass (the unit of ``tol``).

    :param em: an :class:`~pyroem.infer.EM` whose ``m_step`` is a :class:`StatisticsMStep`.
    :param owner: the model.
    :param batches: a re-iterable of prepared argument tuples.
    :param reduce: ``None`` or a callable ``(PassResult, error) -> PassResult`` that
        combines the passes of all processes and raises everywhere when one failed
        (:func:`pyroem.infer.distributed.reduce_pass`).
    """

    def __init__(self, em, owner, batches, reduce=None):
        if not isinstance(em.m_step, StatisticsMStep):
            raise TypeError("BatchEMStepper needs an EM whose m_step is a StatisticsMStep")
        self.em = em
        self.owner = owner
        self.batches = batches
        self.reduce = reduce

    def _pass(self, statistics):
        if self.reduce is None:
            return accumulate(self.em, self.owner, self.batches, statistics)
        # across processes a failing rank reports to the reduce instead of raising
        # alone, which would leave the other ranks waiting in a collective
        try:
            result, error = accumulate(self.em, self.owner, self.batches, statistics), None
        except ValueError as e:
            result, error = PassResult(None, 0.0, 0), e
        return self.reduce(result, error)

    def step(self, run):
        result = self._pass(statistics=True)
        run.num_items = result.num_items
        self.em.run_m_step(result.stats)
        return result.log_evidence

    def evaluate(self, run):
        return self._pass(statistics=False).log_evidence
