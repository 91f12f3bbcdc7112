r"""
Hidden Markov models: Baum-Welch (exact EM), Viterbi training and decoding.

Each model is a Pyro program that mirrors the chain

.. math::

    z_1 \sim \mathrm{Cat}(\pi), \quad z_t | z_{t-1} \sim \mathrm{Cat}(A_{z_{t-1}}), \quad
    x_t | z_t \sim p(x | \theta_{z_t}),

with ``pyro.markov`` over time and a plate over sequences (``poutine.mask`` hides the
padding of shorter sequences), so it runs under the generic
:func:`~pyroem.infer.exact_posterior` and under Pyro's ``TraceEnum_ELBO``. The built-in
fit uses the vectorised recursions of :mod:`pyroem.infer.forward_backward` through the
model's ``e_step`` instead, which are fast on long and on many sequences.
"""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.infer.posteriors import ChainPosterior
from pyroem.infer.forward_backward import forward_backward, viterbi
from pyroem.models import gaussian_emission as ge
from pyroem.models.base import EMModel, model_method
from pyroem.models.checks import check_option, check_positive_int
from pyroem.models.kmeans import kmeans
from pyroem.models.sequences import pack_sequences, unpack, unpack_scalar

DECODERS = ("viterbi", "map")


def _concentration(value, shape, name):
    value = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if not torch.isfinite(value).all() or (value < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    try:
        return value.expand(shape).clone()
    except RuntimeError:
        raise ValueError(f"{name} must broadcast to shape {shape}, got {tuple(value.shape)}") from None


def _map_probs(counts, concentration, old):
    r"""MAP of probabilities (rows of the last dim) under a Dirichlet prior:
    :math:`p \propto \max(n + \alpha - 1, 0)`, kept zero where ``old`` is zero (structural
    zeros); a row without any mass keeps its old value."""
    # (alpha - 1) first: counts + 1 - 1 would round tiny counts to zero
    w = (counts + (concentration.to(counts) - 1)).clamp_min(0) * (old > 0)
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), old)


def _check_probs(value, shape, name, dtype):
    value = torch.as_tensor(value, dtype=dtype)
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all() or (value < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    if not torch.allclose(value.sum(-1), value.new_ones(())):
        raise ValueError(f"the rows of {name} must sum to 1")
    return value / value.sum(-1, keepdim=True)


def _safe_log(p):
    # log p with log 0 = -inf and a zero (not NaN) gradient at structural zeros
    positive = p > 0
    return torch.where(positive, p.clamp_min(torch.finfo(p.dtype).tiny).log(), -math.inf)


class HiddenMarkovModel(EMModel):
    r"""
    Base class of the hidden Markov models (start and transition probabilities, data
    handling, E-step, decoding, sampling). Subclasses supply the emissions.

    EM's closed-form M-step for the chain is

    .. math::

        \pi_k \propto \max\Big(\sum_b \gamma_{b,1}(k) + \alpha^\pi_k - 1, 0\Big), \qquad
        A_{ij} \propto \max\Big(\sum_{b,t} \xi_{b,t}(i, j) + \alpha^A_{ij} - 1, 0\Big),

    the MAP estimate under Dirichlet priors of concentrations ``start_concentration``
    and ``trans_concentration`` (``1``, the default, gives maximum likelihood). A
    probability that is zero stays zero (a left-to-right topology stays left-to-right).

    :param int num_states: ``K``.
    :param str params: the parameters that ``fit`` trains, one letter each (as hmmlearn):
        ``s`` start, ``t`` transitions and the emission letters of the subclass; the others
        stay as set (frozen).
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
      (``log(num_states * num_mix)`` for :class:`GMMHMM`); equal lengths have no padding.
    - ``method="viterbi"`` and ``decode(algorithm="viterbi")`` maximise over state paths
      with the emission densities as they are (a :class:`GMMHMM` sums its mixture, as
      hmmlearn); ``log_prob`` of a path is then :math:`\max_z \log p(x, z)`.
    - The log-likelihood that ``fit`` records is :math:`\log p(X)`; with Dirichlet
      concentrations other than 1 EM is monotone in :math:`\log p(X) + \log p(\pi, A)`.
    - ``sample`` does not impose ``final_states``.
    """

    emission_letters = ""
    inits = ("given",)
    default_init = "given"

    def __init__(self, num_states, params=None, start_concentration=1.0,
                 trans_concentration=1.0, final_states=None, block_length=None):
        super().__init__()
        self.num_states = K = check_positive_int("num_states", num_states)
        letters = "st" + self.emission_letters
        params = letters if params is None else params
        if not isinstance(params, str) or any(c not in letters for c in params):
            raise ValueError(f"params must be a string of letters from {letters!r}, got {params!r}")
        self.params = params
        self.start_concentration = _concentration(start_concentration, (K,), "start_concentration")
        self.trans_concentration = _concentration(trans_concentration, (K, K), "trans_concentration")
        self.start_probs = PyroParam(torch.full((K,), 1.0 / K), constraint=constraints.simplex)
        self.trans_probs = PyroParam(torch.full((K, K), 1.0 / K), constraint=constraints.simplex,
                                     event_dim=1)
        self.final_states = final_states
        if block_length is not None:
            block_length = check_positive_int("block_length", block_length)
        self.block_length = block_length

    # ------------------------------------------------------------------ parameters
    def __setattr__(self, name, value):
        # validate the chain parameters when the user sets them
        if name in ("start_probs", "trans_probs") and not isinstance(value, PyroParam) \
                and hasattr(self, "num_states") and not getattr(self, "_internal", False):
            K = self.num_states
            value = _check_probs(value, (K,) if name == "start_probs" else (K, K), name,
                                 self.dtype)
        super().__setattr__(name, value)

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

    def _set_internal(self, **values):
        self._internal = True
        try:
            for k, v in values.items():
                setattr(self, k, v)
        finally:
            self._internal = False

    # ------------------------------------------------------------------ the Pyro model
    @model_method
    def model(self, x, lengths):
        r"""
        The chain as a Pyro program: a plate over the ``B`` sequences, ``pyro.markov``
        over time, ``z_t`` enumerated, ``x_t`` observed; frames beyond a sequence's length
        are masked out, and with ``final_states`` a factor :math:`\log \mathbb 1_F(z_T)`
        ends each sequence.

        :param x: padded data ``(B, T, ...)`` (as from :meth:`prepare`).
        :param lengths: ``(B,)``.
        """
        B, T = x.shape[:2]
        start, trans = self.start_probs, self.trans_probs
        log_final = None
        if self.final_states is not None:
            log_final = torch.zeros(self.num_states, dtype=start.dtype).masked_fill(
                ~self.final_states, -math.inf)
        with pyro.plate("sequences", B, dim=-1):
            z = None
            for t in pyro.markov(range(T)):
                with poutine.mask(mask=lengths > t):
                    probs = start if z is None else trans[z]
                    z = pyro.sample(f"z_{t}", dist.Categorical(probs),
                                    infer={"enumerate": "parallel"})
                    self._observe(t, z, x[:, t])
                if log_final is not None:
                    with poutine.mask(mask=lengths == t + 1):
                        pyro.factor(f"final_{t}", log_final[z])

    @model_method
    def guide(self, x, lengths):
        """Empty: every latent state is enumerated exactly in the model (``TraceEnum_ELBO``
        then computes :math:`\\log p(X)` itself, so SVI ascends the exact likelihood)."""

    @model_method
    def marginal_model(self, x, lengths):
        r"""
        The chain with the states summed out: :math:`\log p(X)` (the forward recursion in
        log space, masked beyond each sequence's length, differentiable in every
        parameter) as one ``pyro.factor``. ``fit(method="svi")`` runs SVI on it with the
        empty :meth:`guide`: the same objective as :meth:`model` under ``TraceEnum_ELBO``
        (the exact evidence), without tracing a Pyro site per frame.
        """
        log_emit = self._log_emission(x, grad=True)
        log_trans = _safe_log(self.trans_probs)
        alpha = _safe_log(self.start_probs) + log_emit[:, 0]
        for t in range(1, x.shape[1]):
            step = (alpha.unsqueeze(-1) + log_trans).logsumexp(-2) + log_emit[:, t]
            alpha = torch.where((lengths > t).unsqueeze(-1), step, alpha)
        if self.final_states is not None:
            alpha = alpha.masked_fill(~self.final_states, -math.inf)
        pyro.factor("log_evidence", alpha.logsumexp(-1).sum())

    def _svi_model(self):
        return self.marginal_model

    def _svi_elbo(self):
        # no latent sample sites are left in marginal_model: the ELBO is log p(X) itself
        return pyro.infer.Trace_ELBO()

    # ------------------------------------------------------------------ E-step
    def _log_emission(self, x, grad=False):
        raise NotImplementedError

    def e_step(self, x, lengths, hard=False):
        r"""
        Vectorised exact E-step (forward-backward, or Viterbi with ``hard=True``).

        :returns: a :class:`~pyroem.infer.posteriors.ChainPosterior`: ``gamma (B, T, K)``
            (zero on padding; one-hot for ``hard``), ``start (K,)`` (expected initial
            states), ``trans (K, K)`` (expected transitions, summed :math:`\xi`),
            ``log_prob (B,)`` per sequence and their sum ``log_evidence``.
        """
        with torch.no_grad():
            log_emit = self._log_emission(x)
            log_start = self.start_probs.detach().log()
            trans = self.trans_probs.detach()
            K = self.num_states
            if hard:
                best, path = viterbi(log_start, trans.log(), log_emit, lengths,
                                     self.final_states, self.block_length)
                valid = path >= 0
                gamma = torch.nn.functional.one_hot(path.clamp_min(0), K).to(log_emit.dtype)
                gamma = gamma * valid.unsqueeze(-1)
                pair = valid[:, 1:] & valid[:, :-1]
                idx = (path[:, :-1] * K + path[:, 1:])[pair]
                xi = torch.bincount(idx, minlength=K * K).reshape(K, K).to(log_emit.dtype)
                log_prob = best
            else:
                log_prob, gamma, xi = forward_backward(log_start, trans, log_emit, lengths,
                                                       self.final_states, self.block_length)
        return ChainPosterior(log_prob, gamma, gamma[:, 0].sum(0), xi)

    def expected_statistics(self, posterior, x, lengths):
        """Additive statistics: ``start``, ``trans`` and the emission statistics."""
        stats = {"start": posterior.start, "trans": posterior.trans}
        stats.update(self._emission_statistics(posterior.gamma, x))
        return stats

    def maximize(self, stats):
        """M-step of the trained parameters (see the class docstring)."""
        values = {}
        if "s" in self.params:
            old = self.start_probs.detach()
            values["start_probs"] = _map_probs(stats["start"], self.start_concentration, old)
        if "t" in self.params:
            old = self.trans_probs.detach()
            values["trans_probs"] = _map_probs(stats["trans"], self.trans_concentration, old)
        self._maximize_emission(stats)
        self._set_internal(**values)

    # ------------------------------------------------------------------ fitting hooks
    def _prepare(self, x, lengths=None, dtype=None):
        padded, lengths, _ = self._pack(x, lengths, dtype)
        return padded, lengths

    def _pack(self, x, lengths=None, dtype=None):
        raise NotImplementedError

    def _check_fit(self, args):
        n = self._num_items(args)
        if n < self.num_states:
            raise ValueError(f"fit needs at least num_states={self.num_states} frames, got {n}")

    def _num_items(self, args):
        return int(args[1].sum())

    def _frames(self, x, lengths):
        mask = torch.arange(x.shape[1]) < lengths.unsqueeze(-1)
        return x[mask], mask

    @property
    def num_parameters(self):
        """Free parameters that ``fit`` trains (as hmmlearn, counting ``params`` only)."""
        K = self.num_states
        n = (K - 1 if "s" in self.params else 0) + (K * (K - 1) if "t" in self.params else 0)
        return n + self._num_emission_parameters()

    # ------------------------------------------------------------------ scoring
    def _scoring(self, x, lengths):
        padded, lengths, form = self._pack(x, lengths, self.dtype)
        return padded, lengths, form

    def log_prob(self, x, lengths=None):
        r""":math:`\log p(x_{1:T})` of each sequence (``(B,)``; a 0-dim tensor for one
        sequence). With ``final_states``, paths must end in a final state."""
        padded, lengths, form = self._scoring(x, lengths)
        return unpack_scalar(self.e_step(padded, lengths).log_prob, form)

    def posterior(self, x, lengths=None):
        r"""Per-frame posteriors :math:`\gamma_t(k) = p(z_t = k | x_{1:T})`: ``(T, K)`` for
        one sequence, a list, or ``(B, T, K)`` (zero on padding)."""
        padded, lengths, form = self._scoring(x, lengths)
        return unpack(self.e_step(padded, lengths).gamma, lengths, form)

    def decode(self, x, lengths=None, algorithm="viterbi"):
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
        padded, lengths, form = self._scoring(x, lengths)
        post = self.e_step(padded, lengths, hard=(algorithm == "viterbi"))
        mask = torch.arange(padded.shape[1]) < lengths.unsqueeze(-1)
        states = torch.where(mask, post.gamma.argmax(-1), -1)
        return unpack_scalar(post.log_prob, form), unpack(states, lengths, form)

    def predict(self, x, lengths=None):
        """The Viterbi path (``decode(x)[1]``)."""
        return self.decode(x, lengths)[1]

    def sample(self, num_steps, num_sequences=None, seed=None):
        r"""
        Draw sequences of ``num_steps`` frames from the chain. With ``final_states`` the
        states are drawn from :math:`p(z_{1:T} | z_T \in F)`: with
        :math:`h_T = \mathbb 1_F` and :math:`h_{t-1} = A h_t`
        (:math:`h_t(k) = p(z_T \in F | z_t = k)`), :math:`z_1 \propto \pi \odot h_1` and
        :math:`z_t \propto A_{z_{t-1}} \odot h_t`.

        :returns: ``(x, z)``: ``x (T, ...)`` and states ``(T,)``, or ``(B, T, ...)`` and
            ``(B, T)`` when ``num_sequences`` is given.
        :raises ValueError: if no path of ``num_steps`` frames ends in a final state.
        """
        T = check_positive_int("num_steps", num_steps)
        B = 1 if num_sequences is None else check_positive_int("num_sequences", num_sequences)
        g = torch.Generator()
        if seed is None:
            g.seed()
        else:
            g.manual_seed(int(seed))
        with torch.no_grad():
            start, trans = self.start_probs.detach(), self.trans_probs.detach()
            h = self._final_messages(trans, T)
            first = start if h is None else start * h[0]
            if not first.sum() > 0:
                raise ValueError(f"no path of num_steps={T} frames ends in a final state")
            z = [torch.multinomial(first.expand(B, -1), 1, generator=g).squeeze(-1)]
            u = torch.rand(B, T, generator=g, dtype=trans.dtype)
            cum = trans.cumsum(-1) if h is None else None
            for t in range(1, T):
                # cumulative rows + uniforms: one searchsorted per step
                row = (cum if h is None else (trans * h[t]).cumsum(-1))[z[-1]]
                nxt = torch.searchsorted(row, u[:, t:t + 1] * row[:, -1:], right=True)
                z.append(nxt.squeeze(-1).clamp_max(self.num_states - 1))
            z = torch.stack(z, 1)
            x = self._sample_emission(z, g)
        if num_sequences is None:
            return x[0], z[0]
        return x, z

    def _final_messages(self, trans, T):
        r"""``h (T, K)``, :math:`h_t(k) \propto p(z_T \in F | z_t = k)` (each step rescaled
        to a maximum of one), or ``None`` without final states (then :math:`h = 1`)."""
        if self.final_states is None:
            return None
        h = [self.final_states.to(trans.dtype)]  # from t = T backwards
        for _ in range(T - 1):
            nxt = trans @ h[-1]
            h.append(nxt / nxt.max().clamp_min(torch.finfo(trans.dtype).tiny))
        return torch.stack(h[::-1])


class GaussianHMM(HiddenMarkovModel):
    r"""
    HMM with Gaussian emissions :math:`x_t | z_t = k \sim \mathcal N(\mu_k, \Sigma_k)`.

    The emission M-step is the Gaussian mixture one with :math:`\gamma_t(k)` as
    responsibilities (see :func:`pyroem.models.gaussian_emission.maximize`).

    :param int num_states: ``K``.
    :param int dim: ``D``.
    :param str covariance_type: ``"full"`` (``covariances (K, D, D)``), ``"diag"``
        (``(K, D)``), ``"spherical"`` (``(K,)``) or ``"tied"`` (``(D, D)``).
    :param float reg_covar: added to the covariance diagonals after each M-step.
    :param str params: trained parameters among ``"stmc"`` (start, transitions, means,
        covariances); default all.

    Other arguments as :class:`HiddenMarkovModel`. Parameters: ``start_probs (K,)``,
    ``trans_probs (K, K)``, ``means (K, D)``, ``covariances``. ``fit(init=...)``:
    ``"kmeans++"`` (default; means and covariances from k-means clusters of the frames),
    ``"random"`` (from random responsibilities) or ``"given"``; initialisation sets only
    trained emission parameters, start and transition probabilities start as set
    (uniform by default).
    """

    emission_letters = "mc"
    inits = ("kmeans++", "random", "given")
    default_init = "kmeans++"

    def __init__(self, num_states, dim=1, covariance_type="full", reg_covar=1e-6, **kwargs):
        super().__init__(num_states, **kwargs)
        self.dim = check_positive_int("dim", dim)
        self.covariance_type = check_option("covariance_type", covariance_type, ge.COVARIANCE_TYPES)
        if not reg_covar >= 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar!r}")
        self.reg_covar = float(reg_covar)
        ge.init_params(self, covariance_type, (self.num_states,), self.dim)

    @property
    def covariances(self):
        """Covariances in hmmlearn's/scikit-learn's shape for ``covariance_type``."""
        return ge.get_covariances(self)

    @covariances.setter
    def covariances(self, value):
        ge.set_covariances(self, value, (self.num_states,))

    def _pack(self, x, lengths=None, dtype=None):
        return pack_sequences(x, lengths, dim=self.dim, dtype=dtype)

    def _observe(self, t, z, x_t):
        pyro.sample(f"x_{t}", ge.distribution(self, (z,)), obs=x_t)

    def _log_emission(self, x, grad=False):
        # computed state-major, (T, K, B), the layout of the forward-backward recursion
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return ge.state_major_log_prob(self, x).permute(2, 0, 1)

    def _emission_statistics(self, gamma, x):
        # gamma from forward_backward is a (B, T, K) view of a state-major tensor
        return ge.state_major_moments(gamma.permute(1, 2, 0), x, self.covariance_type)

    def _maximize_emission(self, stats):
        if "m" in self.params or "c" in self.params:
            ge.maximize(self, stats, "m" in self.params, "c" in self.params)

    def _num_emission_parameters(self):
        K, D = self.num_states, self.dim
        full = ge.num_parameters(self.covariance_type, (K,), D)
        return (K * D if "m" in self.params else 0) + (full - K * D if "c" in self.params else 0)

    def _initialize(self, args, init, generator):
        if init == "given" or not ("m" in self.params or "c" in self.params):
            return
        x, lengths = args
        frames, mask = self._frames(x, lengths)
        K = self.num_states
        if init == "kmeans++":
            _, labels = kmeans(frames, K, generator)
            resp = torch.nn.functional.one_hot(labels, K).to(x.dtype)
        else:
            resp = torch.rand(frames.shape[0], K, generator=generator, dtype=x.dtype)
            resp = resp / resp.sum(-1, keepdim=True)
        gamma = x.new_zeros(mask.shape + (K,))
        gamma[mask] = resp
        self._maximize_emission(self._emission_statistics(gamma, x))

    def _sample_emission(self, z, generator):
        return ge.sample(self, (z,), generator)


class CategoricalHMM(HiddenMarkovModel):
    r"""
    HMM with categorical emissions :math:`x_t | z_t = k \sim \mathrm{Cat}(E_k)` over
    ``num_symbols`` symbols; M-step :math:`E_{km} \propto \sum_{b,t} \gamma_{b,t}(k)
    [x_{b,t} = m]` (zeros stay zero).

    :param int num_states: ``K``.
    :param int num_symbols: ``M``.
    :param str params: trained parameters among ``"ste"`` (start, transitions, emissions).

    Other arguments as :class:`HiddenMarkovModel`. Parameters: ``start_probs (K,)``,
    ``trans_probs (K, K)``, ``emission_probs (K, M)``. Data are integer symbols: ``(T,)``,
    a list of such, or padded ``(B, T)`` with ``lengths``. The dtype of the parameters
    (``.double()``) is the dtype of the computation. ``fit(init=...)``: ``"random"``
    (default; emission rows drawn from a flat Dirichlet) or ``"given"``.
    """

    emission_letters = "e"
    inits = ("random", "given")
    default_init = "random"

    def __init__(self, num_states, num_symbols, **kwargs):
        super().__init__(num_states, **kwargs)
        self.num_symbols = M = check_positive_int("num_symbols", num_symbols)
        self.emission_probs = PyroParam(torch.full((self.num_states, M), 1.0 / M),
                                        constraint=constraints.simplex, event_dim=1)

    def __setattr__(self, name, value):
        if name == "emission_probs" and not isinstance(value, PyroParam) \
                and not getattr(self, "_internal", False):
            value = _check_probs(value, (self.num_states, self.num_symbols), name, self.dtype)
        super().__setattr__(name, value)

    def _pack(self, x, lengths=None, dtype=None):
        return pack_sequences(x, lengths, num_symbols=self.num_symbols)

    def _observe(self, t, z, x_t):
        pyro.sample(f"x_{t}", dist.Categorical(self.emission_probs[z]), obs=x_t)

    def _log_emission(self, x, grad=False):
        probs = self.emission_probs if grad else self.emission_probs.detach()
        return _safe_log(probs).T[x]

    def _emission_statistics(self, gamma, x):
        K, M = self.num_states, self.num_symbols
        counts = gamma.new_zeros(M, K).index_add_(0, x.reshape(-1), gamma.reshape(-1, K))
        return {"emission": counts.T}

    def _maximize_emission(self, stats):
        if "e" in self.params:
            old = self.emission_probs.detach()
            self._set_internal(emission_probs=_map_probs(stats["emission"], old.new_ones(()), old))

    def _num_emission_parameters(self):
        return self.num_states * (self.num_symbols - 1) if "e" in self.params else 0

    def _initialize(self, args, init, generator):
        if init == "given" or "e" not in self.params:
            return
        e = -torch.rand(self.num_states, self.num_symbols, generator=generator,
                        dtype=self.dtype).log()
        self._set_internal(emission_probs=e / e.sum(-1, keepdim=True))

    def _sample_emission(self, z, generator):
        probs = self.emission_probs.detach()[z.reshape(-1)]
        return torch.multinomial(probs, 1, generator=generator).reshape(z.shape)


class GMMHMM(HiddenMarkovModel):
    r"""
    HMM whose emission in state ``k`` is a mixture of ``M`` Gaussians,

    .. math:: x_t | z_t = k \sim \sum_m w_{km} \mathcal N(\mu_{km}, \Sigma_{km}),

    written in the Pyro model with the component :math:`m_t` as a second enumerated
    latent of each step. The E-step splits :math:`\gamma_t(k)` over the components by
    their responsibilities :math:`r_t(k, m)`; the M-step is the Gaussian mixture one per
    state with :math:`w_{km} \propto \sum_t \gamma_t(k) r_t(k, m)`.

    :param int num_states: ``K``.
    :param int num_mix: ``M``.
    :param int dim: ``D``.
    :param str covariance_type: hmmlearn's shapes: ``"full"`` ``(K, M, D, D)``, ``"diag"``
        ``(K, M, D)``, ``"spherical"`` ``(K, M)``, ``"tied"`` ``(K, D, D)`` (shared by the
        components of a state).
    :param float reg_covar: added to the covariance diagonals after each M-step.
    :param str params: trained parameters among ``"stwmc"`` (``w``: mixture weights).

    Parameters: ``start_probs``, ``trans_probs``, ``weights (K, M)``, ``means (K, M, D)``,
    ``covariances``. ``fit(init=...)``: ``"kmeans++"`` (default; ``K`` k-means clusters for
    the states, each split into ``M`` clusters for its components), ``"random"`` or
    ``"given"``.
    """

    emission_letters = "wmc"
    inits = ("kmeans++", "random", "given")
    default_init = "kmeans++"

    def __init__(self, num_states, num_mix=1, dim=1, covariance_type="diag", reg_covar=1e-6,
                 **kwargs):
        super().__init__(num_states, **kwargs)
        self.num_mix = check_positive_int("num_mix", num_mix)
        self.dim = check_positive_int("dim", dim)
        self.covariance_type = check_option("covariance_type", covariance_type, ge.COVARIANCE_TYPES)
        if not reg_covar >= 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar!r}")
        self.reg_covar = float(reg_covar)
        K, M = self.num_states, self.num_mix
        self.weights = PyroParam(torch.full((K, M), 1.0 / M), constraint=constraints.simplex,
                                 event_dim=1)
        ge.init_params(self, covariance_type, (K, M), self.dim)

    def __setattr__(self, name, value):
        if name == "weights" and not isinstance(value, PyroParam) \
                and not getattr(self, "_internal", False):
            value = _check_probs(value, (self.num_states, self.num_mix), name, self.dtype)
        super().__setattr__(name, value)

    @property
    def covariances(self):
        """Covariances in hmmlearn's ``GMMHMM`` shape for ``covariance_type``."""
        return ge.get_covariances(self)

    @covariances.setter
    def covariances(self, value):
        ge.set_covariances(self, value, (self.num_states, self.num_mix))

    def _pack(self, x, lengths=None, dtype=None):
        return pack_sequences(x, lengths, dim=self.dim, dtype=dtype)

    def _observe(self, t, z, x_t):
        m = pyro.sample(f"m_{t}", dist.Categorical(self.weights[z]),
                        infer={"enumerate": "parallel"})
        pyro.sample(f"x_{t}", ge.distribution(self, (z, m)), obs=x_t)

    def _joint_component(self, x, grad=False):
        # log w_km + log N(x_t | mu_km, Sigma_km): (B, T, K, M)
        weights = self.weights if grad else self.weights.detach()
        return ge.component_log_prob(self, x, grad) + _safe_log(weights)

    def _log_emission(self, x, grad=False):
        return self._joint_component(x, grad).logsumexp(-1)

    def _emission_statistics(self, gamma, x):
        resp = self._joint_component(x).softmax(-1)
        return ge.weighted_moments(gamma.unsqueeze(-1) * resp, x, self.covariance_type)

    def _maximize_emission(self, stats):
        if "w" in self.params:
            old = self.weights.detach()
            self._set_internal(weights=_map_probs(stats["n"], old.new_ones(()), old))
        if "m" in self.params or "c" in self.params:
            ge.maximize(self, stats, "m" in self.params, "c" in self.params)

    def _num_emission_parameters(self):
        K, M, D = self.num_states, self.num_mix, self.dim
        full = ge.num_parameters(self.covariance_type, (K, M), D)
        return ((K * (M - 1) if "w" in self.params else 0) + (K * M * D if "m" in self.params else 0)
                + (full - K * M * D if "c" in self.params else 0))

    def _initialize(self, args, init, generator):
        if init == "given" or not ("m" in self.params or "c" in self.params):
            return
        x, lengths = args
        frames, mask = self._frames(x, lengths)
        K, M = self.num_states, self.num_mix
        if init == "kmeans++":
            # states from K clusters, then each state's frames split into M clusters
            _, state = kmeans(frames, K, generator)
            labels = state * M
            for k in range(K):
                sel = state == k
                if int(sel.sum()) >= M:
                    labels[sel] += kmeans(frames[sel], M, generator)[1]
                else:
                    labels[sel] += torch.randint(M, (int(sel.sum()),), generator=generator)
            resp = torch.nn.functional.one_hot(labels, K * M).to(x.dtype)
        else:
            resp = torch.rand(frames.shape[0], K * M, generator=generator, dtype=x.dtype)
            resp = resp / resp.sum(-1, keepdim=True)
        weights = x.new_zeros(mask.shape + (K * M,))
        weights[mask] = resp
        stats = ge.weighted_moments(weights.reshape(mask.shape + (K, M)), x, self.covariance_type)
        ge.maximize(self, stats, "m" in self.params, "c" in self.params)

    def _sample_emission(self, z, generator):
        w = self.weights.detach()[z.reshape(-1)]
        m = torch.multinomial(w, 1, generator=generator).reshape(z.shape)
        return ge.sample(self, (z, m), generator)
