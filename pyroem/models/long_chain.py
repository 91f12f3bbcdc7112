r"""
One long HMM sequence in bounded memory: the E-step of :func:`fit` and the scores by
the checkpointed forward-backward of :mod:`pyroem.ops.checkpointed`.

With one sequence of :math:`T` frames and ``chunk_size`` :math:`L < T` (for HMMs
``chunk_size`` counts sequences, and frames when the data is one sequence), the pass keeps
one filtered vector per block of :math:`L` frames; each block's emission log-densities
and features are computed from its frames when needed (twice per pass) and dropped, and
each block's posteriors go straight into the emission's statistics, merged exactly
(:func:`~pyroem.distributions.merge.add_statistics`). Memory:
:math:`O(T/L \cdot K + L (K + \text{features}))` beside the data, instead of
:math:`O(T (K + \text{features}))`; the statistics, the log-likelihood and so the fit are
those of the unchunked E-step (to rounding).

Sum-product only, on a fully observed sequence without ``final_states``: Viterbi
training, ``obs_mask``/``labels``/``sample_weight`` and final states keep the sequence
whole (refused with ``chunk_size``, not approximated).
"""

from pyroem.distributions.merge import add_statistics
from pyroem.models.batching import Batches
from pyroem.ops.checkpointed import checkpointed_forward_backward


def check_long_chain(model, args, method):
    """Raise ``ValueError`` when the checkpointed route cannot take the fit."""
    if method != "em":
        raise ValueError(f"chunk_size on one sequence cuts its chain into blocks of frames "
                         f"for the sum-product E-step only; method={method!r} needs the "
                         "sequence whole (pass chunk_size=None)")
    if model.final_states is not None:
        raise ValueError("chunk_size on one sequence does not apply with final_states: the "
                         "checkpointed forward-backward has no final-state constraint (pass "
                         "chunk_size=None)")


class LongChain(Batches):
    """
    One sequence ``args = (x (1, T, ...), lengths (1,))`` for the batched fit, its
    E-step in blocks of ``frames`` frames (:meth:`statistics`). Initialisation reads the
    whole sequence, as without chunks.
    """

    def __init__(self, model, args, frames):
        super().__init__(model, chunks=(args, 1))
        self.args, self.frames = args, frames

    def statistics(self, want=True):
        """``(stats, log_evidence, num_frames)`` of one checkpointed pass (``stats``
        ``None`` when not ``want``)."""
        model = self.model
        x, lengths = self.args[:2]
        T = int(lengths[0])
        found = {"emission": None}

        def emissions(a, b):
            # a copy: the features an emission caches for the block die with it
            return _partial().emission_log_prob(model.emission, x[:, a:b].clone(), None, None)

        def visit(a, b, gamma):
            if a == 0:
                found["start"] = gamma[:, 0].sum(0)
            if want:
                s = _partial().emission_statistics(model.emission, gamma, x[:, a:b].clone(), None)
                old = found["emission"]
                found["emission"] = s if old is None else add_statistics(old, s)

        log_ev, xi = checkpointed_forward_backward(
            model.start_probs.detach().log(), model.trans_probs.detach(), emissions, T,
            self.frames, visit)
        stats = None
        if want:
            stats = {"start": found["start"], "trans": xi, **found["emission"]}
        return stats, float(log_ev.sum()), T


class LongChainStepper:
    """One EM iteration on a :class:`LongChain` for :func:`~pyroem.infer.loop.run_fit`:
    the checkpointed pass, then the transactional M-step of ``em`` (a
    :class:`~pyroem.infer.batches.StatisticsMStep`)."""

    def __init__(self, em, chain):
        self.em, self.chain = em, chain

    def step(self, run):
        stats, log_evidence, run.num_items = self.chain.statistics()
        self.em.run_m_step(stats)
        return log_evidence

    def evaluate(self, run):
        return self.chain.statistics(want=False)[1]


class LongChainScores:
    """The scores of one sequence by the checkpointed pass, computed when read:
    ``log_prob`` ``(1,)``, ``gamma`` ``(1, T, K)`` (written block by block)."""

    def __init__(self, model, args, frames):
        self.model, self.args, self.frames = model, args, frames

    def _pass(self, visit):
        model, (x, lengths) = self.model, self.args[:2]

        def emissions(a, b):
            return _partial().emission_log_prob(model.emission, x[:, a:b].clone(), None, None)
        return checkpointed_forward_backward(
            model.start_probs.detach().log(), model.trans_probs.detach(), emissions,
            int(lengths[0]), self.frames, visit)[0]

    @property
    def log_prob(self):
        return self._pass(lambda a, b, gamma: None)

    @property
    def gamma(self):
        x = self.args[0]
        out = x.new_zeros((1, x.shape[1], self.model.num_states),
                          dtype=self.model.start_probs.dtype)

        def visit(a, b, gamma):
            out[:, a:b] = gamma
        self._pass(visit)
        return out


def _partial():
    # imported when used: pyroem.models.hmm imports the models' base, which imports this
    from pyroem.models.hmm import partial
    return partial
