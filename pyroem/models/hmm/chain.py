r"""
The chain of a hidden Markov model,

.. math::

    z_1 \sim \mathrm{Cat}(\pi), \quad z_t | z_{t-1} \sim \mathrm{Cat}(A_{z_{t-1}}), \quad
    x_t | z_t \sim p(x | \theta_{z_t}),

composed with an emission (:mod:`~pyroem.models.hmm.emissions`) that supplies
:math:`p(x | \theta_k)`. The chain owns the start, transition and final states, the
sequence data (lengths, padding), the Pyro model, the E-step (the recursions of
:mod:`~pyroem.ops.recursions`), its part of the M-step, decoding and sampling.
"""

import functools
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroParam

from pyroem.infer.posteriors import ChainPosterior
from pyroem.models import partial as po
from pyroem.models import raw
from pyroem.models.base import EMModel, model_method
from pyroem.models.checks import (
    CheckedParams,
    check_option,
    check_positive_int,
    check_simplex,
)
from pyroem.models.hmm import partial as hp
from pyroem.models.hmm.guide import MarkovChainGuide
from pyroem.models.hmm.probs import concentration, map_probs, safe_log
from pyroem.models.hmm.sampling import ChainSampling
from pyroem.models.hmm.sequences import unpack, unpack_scalar
from pyroem.models.simplex import simplex
from pyroem.ops.recursions import forward_backward_symbols

DECODERS = ("viterbi", "map")


def chain_factors(log_start, trans, log_emit, symbols, lengths, log_final):
    """The arguments of :func:`~pyroem.models.hmm.guide.posterior_chain` from an E-step's
    values, computed when the guide's q is read (``log_emit`` is a symbol table that
    ``symbols`` index, unless ``symbols`` is ``None``); a picklable function, as the
    guide keeps it."""
    log_emit = log_emit if symbols is None else log_emit[symbols]
    return log_start, safe_log(trans), log_emit, lengths, log_final


class emission_attribute:
    """An attribute of a model that lives on its emission (``m.means`` is
    ``m.emission.means``): read and set there, with the emission's own checks."""

    def __init__(self, doc=None):
        self.__doc__ = doc

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj.emission, self.name)

    def __set__(self, obj, value):
        setattr(obj.emission, self.name, value)


class HiddenMarkovModel(MarkovChainGuide, ChainSampling, CheckedParams, EMModel):
    r"""
    Base class of the hidden Markov models: the chain (start and transition
    probabilities, final states, data handling, E-step, decoding, sampling) composed with
    an emission, a :class:`~pyroem.models.hmm.emissions.Emission` attached as
    ``self.emission`` by the family's model class right after this constructor (e.g.
    :class:`~pyroem.models.GaussianHMM`), whose parameters it exposes as its own.

    EM's closed-form M-step for the chain is

    .. math::

        \pi_k \propto \max\Big(\sum_b \gamma_{b,1}(k) + \alpha^\pi_k - 1, 0\Big), \qquad
        A_{ij} \propto \max\Big(\sum_{b,t} \xi_{b,t}(i, j) + \alpha^A_{ij} - 1, 0\Big),

    the MAP estimate under Dirichlet priors of concentrations ``start_concentration``
    and ``trans_concentration`` (``1``, the default, gives maximum likelihood). A
    probability that is zero stays zero (a left-to-right topology stays left-to-right).
    The emission's M-step maximises its own term of :math:`Q` given :math:`\gamma`.

    :param int num_states: ``K``.
    :param str params: the parameters that ``fit`` trains, one letter each (as hmmlearn):
        ``s`` start, ``t`` transitions and the emission's letters; the others stay as
        set (frozen). Default: all.
    :param start_concentration: Dirichlet concentration of ``start_probs``, scalar or ``(K,)``.
    :param trans_concentration: Dirichlet concentration of each row of ``trans_probs``,
        scalar or ``(K, K)``.
    :param final_states: ``None`` (any state may end a sequence) or the allowed final
        states (a ``(K,)`` bool mask or a list of state indices): then
        :math:`p(X) = \sum_{k \in F} \alpha_T(k)`.
    :param int block_length: steps per block of the vectorised recursion on long
        sequences (``None``: about :math:`\sqrt T` when that pays).

    Data: one sequence, a list of sequences of different lengths, or a padded batch with
    its ``lengths`` (``fit(x)``, ``fit([x1, x2])``, ``fit(x_padded, lengths)``). Results
    per frame (``posterior``, ``decode``) come back in the same form.

    Notes:

    - ``fit`` uses the vectorised :meth:`e_step`; the ``pyro.markov`` :meth:`model` gives the
      same posteriors under :func:`~pyroem.infer.exact_posterior`. There, each padded
      (masked) latent step sums to ``num_states`` under enumeration, so its
      ``log_evidence`` exceeds :math:`\log p(X)` by ``log(num_states)`` per padded frame
      (``log(num_states * num_components)`` for :class:`~pyroem.models.GMMHMM`); equal
      lengths have no padding.
    - ``method="viterbi"`` and ``decode(algorithm="viterbi")`` maximise over state paths
      with the emission densities as they are (a :class:`~pyroem.models.GMMHMM` sums its
      mixture, as hmmlearn); ``log_prob`` of a path is then :math:`\max_z \log p(x, z)`.
    - The log-likelihood that ``fit`` records is :math:`\log p(X)`; with Dirichlet
      concentrations other than 1 EM is monotone in :math:`\log p(X) + \log p(\pi, A)`.
    - The :meth:`guide` is a Markov chain per sequence
      (:class:`~pyroem.models.hmm.guide.MarkovChainGuide`): the E-step writes the exact
      posterior into it, and ``fit(method="svi")`` trains it with the model on the exact
      ELBO (:class:`~pyroem.models.hmm.guide.MarkovChainELBO`).
    """

    inits = ("given",)
    #: fit takes a list or DataLoader of batches, each a list of sequences or a
    #: (padded, lengths) pair (pyroem.models.batching)
    batch_kind = "sequences"
    default_init = "given"
    checked_params = ("start_probs", "trans_probs")

    def __init__(self, num_states, params=None, start_concentration=1.0,
                 trans_concentration=1.0, final_states=None, block_length=None):
        super().__init__()
        self.num_states = K = check_positive_int("num_states", num_states)
        self.params = params  # checked against the emission's letters when it is attached
        self.start_concentration = concentration(start_concentration, (K,), "start_concentration")
        self.trans_concentration = concentration(trans_concentration, (K, K), "trans_concentration")
        self.start_probs = PyroParam(torch.full((K,), 1.0 / K), constraint=simplex)
        self.trans_probs = PyroParam(torch.full((K, K), 1.0 / K), constraint=simplex,
                                     event_dim=1)
        self.final_states = final_states
        if block_length is not None:
            block_length = check_positive_int("block_length", block_length)
        self.block_length = block_length

    # ------------------------------------------------------------------ parameters
    def _check_param(self, name, value):
        K = self.num_states
        return check_simplex(value, name, (K,) if name == "start_probs" else (K, K), self.dtype)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "emission":
            self.params = self._params  # the emission's letters are known now

    @property
    def params(self):
        """The letters of the parameters that ``fit`` trains (``s``, ``t`` and the
        emission's)."""
        return self._params

    @params.setter
    def params(self, value):
        if "emission" in self._modules:
            letters = "st" + self.emission.letters
            value = letters if value is None else value
            if not isinstance(value, str) or any(c not in letters for c in value):
                raise ValueError(f"params must be a string of letters from {letters!r}, "
                                 f"got {value!r}")
        self._params = value

    @property
    def final_states(self):
        """``(K,)`` bool mask of the allowed final states, or ``None`` (all allowed)."""
        return self._final_states

    @final_states.setter
    def final_states(self, value):
        if value is None:
            self._final_states = None
            return
        value = torch.as_tensor(value)
        K = self.num_states
        if value.dtype != torch.bool:
            idx = value.long().reshape(-1)
            if idx.numel() == 0 or idx.min() < 0 or idx.max() >= K:
                raise ValueError(f"final_states must be state indices in [0, {K}) or a (K,) bool mask")
            value = torch.zeros(K, dtype=torch.bool).index_fill_(0, idx, True)
        if value.shape != (K,) or not value.any():
            raise ValueError(f"final_states must be a ({K},) bool mask with at least one True")
        self._final_states = value

    # ------------------------------------------------------------------ the Pyro model
    @model_method
    def model(self, x, lengths, obs_mask=None, labels=None, sample_weight=None):
        r"""
        The chain as a Pyro program: a plate over the ``B`` sequences, ``pyro.markov``
        over time, ``z_t`` enumerated, ``x_t`` observed by the emission; frames beyond a
        sequence's length are masked out, and with ``final_states`` a factor
        :math:`\log \mathbb 1_F(z_T)` ends each sequence.

        :param x: padded data ``(B, T, ...)`` (as from :meth:`prepare`).
        :param lengths: ``(B,)``.
        :param obs_mask, labels, sample_weight: as :meth:`prepare` returns them (masked
            emissions, labelled states clamped, a scale per sequence; see ``hmm.partial``).
        """
        self.emission.check(x, lengths)
        B, T = x.shape[:2]
        start, trans, emission = self.start_probs, self.trans_probs, self.emission
        log_final = None
        if self.final_states is not None:
            log_final = torch.zeros(self.num_states, dtype=start.dtype).masked_fill(
                ~self.final_states, -math.inf)
        with pyro.plate("sequences", B, dim=-1), po.weight_scale(sample_weight):
            z = None
            for t in pyro.markov(range(T)):
                with poutine.mask(mask=lengths > t):
                    probs = start if z is None else trans[z]
                    z = pyro.sample(f"z_{t}", dist.Categorical(probs),
                                    infer={"enumerate": "parallel"})
                    hp.observe_step(emission, t, z, x, obs_mask, labels)
                if log_final is not None:
                    with poutine.mask(mask=lengths == t + 1):
                        pyro.factor(f"final_{t}", log_final[z])

    @model_method
    def marginal_model(self, x, lengths, obs_mask=None, labels=None, sample_weight=None):
        r"""
        The chain with the states summed out: :math:`\log p(X)` (the forward recursion in
        log space, masked beyond each sequence's length, differentiable in every
        parameter) as one ``pyro.factor``: the same objective as :meth:`model` under
        ``TraceEnum_ELBO`` with no guide (the exact evidence), without tracing a Pyro site
        per frame. (``fit(method="svi")`` trains the Markov-chain :meth:`guide` with
        :class:`~pyroem.models.hmm.guide.MarkovChainELBO` instead.)
        """
        self.emission.check(x, lengths)
        log_emit = hp.emission_log_prob(self.emission, x, obs_mask, labels, grad=True)
        log_trans = safe_log(self.trans_probs)
        alpha = safe_log(self.start_probs) + log_emit[:, 0]
        for t in range(1, x.shape[1]):
            step = (alpha.unsqueeze(-1) + log_trans).logsumexp(-2) + log_emit[:, t]
            alpha = torch.where((lengths > t).unsqueeze(-1), step, alpha)
        if self.final_states is not None:
            alpha = alpha.masked_fill(~self.final_states, -math.inf)
        weight = 1.0 if sample_weight is None else sample_weight
        pyro.factor("log_evidence", (weight * alpha.logsumexp(-1)).sum())

    # ------------------------------------------------------------------ EM
    def e_step(self, x, lengths, obs_mask=None, labels=None, sample_weight=None, hard=False):
        r"""
        Vectorised exact E-step (forward-backward, or Viterbi with ``hard=True``).

        :returns: a :class:`~pyroem.infer.posteriors.ChainPosterior`: ``gamma (B, T, K)``
            (zero on padding; one-hot for ``hard``), ``start (K,)`` (expected initial
            states), ``trans (K, K)`` (expected transitions, summed :math:`\xi`),
            ``log_prob (B,)`` per sequence and their sum ``log_evidence`` (each
            sequence's multiplied by its ``sample_weight``).
        :raises ValueError: on data other than :meth:`prepare` returns.
        """
        emission = raw.child(self, "emission")
        emission.check(x, lengths)
        with torch.no_grad():
            # each parameter read once (pyroem.models.raw: no attribute round trips)
            start, trans = raw.value(self, "start_probs"), raw.value(self, "trans_probs")
            log_start = start.log()
            plain = not hard and obs_mask is None and labels is None and sample_weight is None
            table = emission.log_prob_table() if plain else None
            if table is not None:  # symbols: the recursion looks their rows up
                log_prob, gamma, xi = forward_backward_symbols(
                    log_start, trans, table, x, lengths, self.final_states, self.block_length)
            else:
                log_emit = hp.emission_log_prob(emission, x, obs_mask, labels)
                log_prob, gamma, xi = hp.run_chain(self, log_emit, lengths, hard, sample_weight,
                                                   (log_start, trans))
        posterior = ChainPosterior(log_prob, gamma, gamma[:, 0].sum(0), xi)
        # what the guide's chain is computed from when next read (see MarkovChainGuide), at
        # the parameters of this E-step (a sequence's posterior chain does not depend on its
        # weight), computed then: from a symbol table, the (B, T, K) log-densities only then
        emitted = (table, x) if table is not None else (log_emit, None)
        posterior.chain_factors = None if hard else functools.partial(
            chain_factors, log_start, trans, *emitted, lengths, self._log_final(start.dtype))
        return posterior

    def expected_statistics(self, posterior, x, lengths, obs_mask=None, *partial):
        """Additive statistics: ``start``, ``trans`` and the emission's statistics."""
        emission = raw.child(self, "emission")
        emission.check(x, lengths)
        stats = {"start": posterior.start, "trans": posterior.trans}
        stats.update(hp.emission_statistics(emission, posterior.gamma, x, obs_mask))
        return stats

    def maximize(self, stats):
        """M-step of the trained parameters (see the class docstring)."""
        values = {}
        params = self.params
        for letter, name, key, prior in (("s", "start_probs", "start", self.start_concentration),
                                         ("t", "trans_probs", "trans", self.trans_concentration)):
            if letter in params:  # structural zeros read off the stored logarithms
                values[name] = map_probs(stats[key], prior, lambda n=name: raw.value(self, n),
                                         raw.support(self, name))
        raw.child(self, "emission").maximize(stats, params)
        for name, value in values.items():  # valid by construction: no setter checks
            raw.assign(self, name, value)

    # ------------------------------------------------------------------ fitting hooks
    partial_observation = ("obs_mask", "labels", "sample_weight")  # hmm/partial.py
    def _prepare(self, x, lengths=None, obs_mask=None, labels=None, sample_weight=None,
                 dtype=None):
        return hp.prepare(self, x, lengths, obs_mask, labels, sample_weight, dtype)[0]

    def _check_fit(self, args):
        hp.check_observed(*args)
        n = self._num_items(args)
        if n < self.num_states:
            raise ValueError(f"fit needs at least num_states={self.num_states} frames, got {n}")

    def _num_items(self, args):
        return hp.num_frames(*args)

    def _check_fit_options(self, args, method, record_decomposition):
        po.check_decomposition(len(args) == 5, record_decomposition)

    def _feature_width(self):
        # Gaussian emissions cache a design per frame (pyroem.models.scaling chunks the
        # sequences past a memory budget); other emissions cache nothing that large
        cov = getattr(self.emission, "covariance_type", None)
        if cov is None:
            return None
        D = self.emission.dim
        return D * D + D + 1 if cov in ("full", "tied") else 2 * D + 1

    def _initialize(self, args, init, generator):
        # start and transition probabilities start as set (uniform by default)
        x, lengths, obs_mask, labels, _ = args + (None,) * (5 - len(args))
        self.emission.initialize(*hp.imputed(x, lengths, obs_mask), init, generator, self.params)
        if labels is not None and init != "given":
            hp.seed_emission(self.emission, *args[:4], self.params, init, generator)

    @property
    def num_parameters(self):
        """Free parameters that ``fit`` trains (as hmmlearn, counting ``params`` only)."""
        K = self.num_states
        n = (K - 1 if "s" in self.params else 0) + (K * (K - 1) if "t" in self.params else 0)
        return n + self.emission.num_parameters(self.params)

    # ------------------------------------------------------------------ scoring
    def _scoring(self, x, lengths, obs_mask=None, labels=None):
        return hp.prepare(self, x, lengths, obs_mask, labels, None, self.dtype)

    def log_prob(self, x, lengths=None, obs_mask=None, labels=None, chunk_size=None):
        r""":math:`\log p(x_{1:T})` of each sequence (``(B,)``; a 0-dim tensor for one
        sequence). With ``final_states``, paths must end in a final state; with
        ``obs_mask`` of the observed part, with ``labels`` jointly with the known states;
        in chunks of ``chunk_size`` sequences (``None``: as :meth:`fit` chunks them)."""
        args, form = self._scoring(x, lengths, obs_mask, labels)
        return unpack_scalar(self._scored_in_chunks(args, chunk_size, lambda p: p.log_prob),
                             form)

    def posterior(self, x, lengths=None, obs_mask=None, labels=None, chunk_size=None):
        r"""Per-frame posteriors :math:`\gamma_t(k) = p(z_t = k | x_{1:T})`: ``(T, K)`` for
        one sequence, a list, or ``(B, T, K)`` (zero on padding); in chunks of
        ``chunk_size`` sequences as :meth:`log_prob`."""
        args, form = self._scoring(x, lengths, obs_mask, labels)
        return unpack(self._scored_in_chunks(args, chunk_size, lambda p: p.gamma), args[1], form)

    def decode(self, x, lengths=None, algorithm="viterbi", obs_mask=None, labels=None):
        r"""
        Most probable states.

        :param str algorithm: ``"viterbi"``: the jointly most probable path
            :math:`\arg\max_z p(z | x)`, returned with :math:`\max_z \log p(x, z)`;
            ``"map"``: the most probable state of each frame, :math:`\arg\max_k
            \gamma_t(k)`, returned with :math:`\log p(x)`.
        :returns: ``(log_prob, states)``: per sequence (0-dim for one sequence) and the
            states in the data's form (``-1`` on padding).
        """
        check_option("algorithm", algorithm, DECODERS)
        args, form = self._scoring(x, lengths, obs_mask, labels)
        padded, lengths = args[:2]
        post = self.e_step(*args, hard=(algorithm == "viterbi"))
        mask = torch.arange(padded.shape[1]) < lengths.unsqueeze(-1)
        states = torch.where(mask, post.gamma.argmax(-1), -1)
        return unpack_scalar(post.log_prob, form), unpack(states, lengths, form)

    def predict(self, x, lengths=None, obs_mask=None, labels=None):
        """The Viterbi path (``decode(x)[1]``)."""
        return self.decode(x, lengths, obs_mask=obs_mask, labels=labels)[1]
