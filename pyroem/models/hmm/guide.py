r"""
The Markov-chain guide of the hidden Markov models,

.. math:: q(z_{1:T}) = q(z_1) \prod_{t=2}^{T} q(z_t | z_{t-1}),

held per sequence as parameters: ``q_start_logits (B, K)`` and
``q_trans_logits (B, T - 1, K, K)`` (row ``i`` of step ``t`` is
:math:`\log q(z_{t+1} = \cdot | z_t = i)` up to a constant; padded steps unused).

**E-step.** The exact posterior of an HMM is such a chain:
:math:`p(z_t = j | z_{t-1} = i, X) = \xi_t(i, j) / \gamma_{t-1}(i) \propto
A_{ij}\, b_t(j)\, \beta_t(j)` and :math:`p(z_1 | X) \propto \pi\, b_1\, \beta_1`, with
the backward messages :math:`\beta_t(k) = p(x_{t+1:T} | z_t = k)` (times the final-state
indicator). :func:`posterior_chain` computes them (rescaled per step); written into the
guide, :math:`\mathrm{KL}(q \| p(Z|X)) = 0`.

**Expectations over q.** Its marginals follow by a forward pass over q,
:math:`m_1 = q(z_1)`, :math:`P_t(i, j) = m_{t-1}(i)\, q(z_t = j | z_{t-1} = i)`,
:math:`m_t = \sum_i P_t(i, \cdot)`, which gives exactly (no enumeration of the
:math:`K^T` paths, no sampling)

.. math::

    Q(q, \eta) = \sum_k m_1(k) [\log\pi_k + \log b_1(k)]
        + \sum_{t \ge 2} \sum_{ij} P_t(i, j) [\log A_{ij} + \log b_t(j)]
        + \sum_k m_T(k) \log \mathbb 1_F(k),\\
    H(q) = -\sum_k m_1(k) \log q(z_1 = k) - \sum_{t \ge 2} \sum_{ij} P_t(i, j)
        \log q(z_t = j | z_{t-1} = i),

and :math:`\mathrm{ELBO} = Q + H` (:func:`chain_expectations`). That is the objective
:class:`MarkovChainELBO` gives SVI: exact and differentiable in both the model's
parameters and q. Pyro's ELBOs run on this guide too: ``TraceEnum_ELBO`` with the guide's
sites enumerated (``config_enumerate(m.guide)``) gives the same value and gradients, but
traces and contracts the chain site by site (15 times slower at ``T = 50``, measured:
0.56 s against 0.037 s per loss and gradient); ``Trace_ELBO`` estimates it from sampled
paths, with score-function gradients of high variance.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.infer.decompose import Decomposition
from pyroem.infer.protocols import owner_of
from pyroem.models.base import model_method
from pyroem.models.hmm import partial as hp
from pyroem.models.hmm.probs import safe_log


def _frame_mask(lengths, T):
    return torch.arange(T) < lengths.unsqueeze(-1)


def _backward(trans, emit, lengths, final):
    r"""Backward messages :math:`\beta_t`, ``(B, T, K)``, each step rescaled to a maximum
    of one (the conditionals normalise per row, so any positive scale per step will do);
    ``emit`` are the emission likelihoods, each frame rescaled alike; one on padding."""
    B, T, K = emit.shape
    beta = emit.new_ones(B, T, K)
    last = (lengths - 1).unsqueeze(-1)
    cur = final.expand(B, K)
    beta[:, T - 1] = torch.where(last == T - 1, final, 1)
    for t in range(T - 2, -1, -1):
        step = (emit[:, t + 1] * cur) @ trans.T
        step = step / step.amax(-1, keepdim=True).clamp_min(torch.finfo(step.dtype).tiny)
        cur = torch.where(t == last, final, torch.where(t < last, step, 1))
        beta[:, t] = cur
    return beta


def _log_rows(w, K):
    """Logs of rows normalised to sum one; a row without mass becomes uniform (it is
    never reached: its state has probability zero under q)."""
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, safe_log(w / total.clamp_min(torch.finfo(w.dtype).tiny)),
                       -math.log(K))


def posterior_chain(log_start, log_trans, log_emit, lengths, log_final=None):
    r"""
    The exact posterior of a batch of chains as a Markov chain:
    ``(log_q_start (B, K), log_q_trans (B, T - 1, K, K))``, normalised log-probabilities
    (uniform rows on padding and for states of probability zero), computed in float64
    (the rescaled backward recursion) and returned in ``log_emit``'s dtype.

    :param log_start: :math:`\log\pi`, ``(K,)``.
    :param log_trans: :math:`\log A`, ``(K, K)``.
    :param log_emit: :math:`\log b_t(k)`, ``(B, T, K)``.
    :param lengths: ``(B,)``.
    :param log_final: :math:`\log \mathbb 1_F`, ``(K,)`` (``None``: every state may end).
    """
    T, K = log_emit.shape[1:]
    f64 = torch.float64
    # likelihoods rescaled per frame to a maximum of one (the scale cancels per row)
    emit = (log_emit.to(f64) - log_emit.to(f64).amax(-1, keepdim=True).clamp_min(
        torch.finfo(f64).min)).exp()
    trans, start = log_trans.to(f64).exp(), log_start.to(f64).exp()
    final = emit.new_ones(K) if log_final is None else log_final.to(f64).exp()
    beta = _backward(trans, emit, lengths, final)
    log_q_start = _log_rows(start * emit[:, 0] * beta[:, 0], K)
    joint = trans * (emit[:, 1:] * beta[:, 1:]).unsqueeze(-2)  # (B, T-1, K, K)
    live = _frame_mask(lengths, T)[:, 1:, None, None]
    log_q_trans = torch.where(live, _log_rows(joint, K), -math.log(K))
    return log_q_start.to(log_emit.dtype), log_q_trans.to(log_emit.dtype)


def point_mass_chain(gamma):
    r"""A chain that puts all its mass on one path: ``gamma (B, T, K)`` one-hot (zero on
    padding), as Viterbi's E-step returns it; every row of step ``t`` is the path's
    state at ``t``."""
    B, T, K = gamma.shape
    on = torch.where(gamma > 0, 0.0, -math.inf).to(gamma.dtype)
    pad = ~(gamma.sum(-1, keepdim=True) > 0)
    on = torch.where(pad, -math.log(K), on)
    return on[:, 0], on[:, 1:].unsqueeze(-2).expand(B, T - 1, K, K).contiguous()


def _xlogy(w, v):
    """:math:`\\sum w v` over the last dim with :math:`0 \\cdot (-\\infty) = 0` (and a zero,
    not NaN, gradient there)."""
    return (w * torch.where(w > 0, v, 0)).sum(-1)


def _prefix_products(M):
    r"""Inclusive prefix products along dim ``-3``: ``out[..., s, :, :] = M_0 M_1 \cdots M_s``,
    by doubling (Hillis and Steele's scan: :math:`\lceil\log_2 S\rceil` batched products
    instead of ``S`` sequential steps; differentiable)."""
    S, shift = M.shape[-3], 1
    while shift < S:
        M = torch.cat([M[..., :shift, :, :], M[..., :-shift, :, :] @ M[..., shift:, :, :]], -3)
        shift *= 2
    return M


def chain_expectations(log_q_start, log_q_trans, log_start, log_trans, log_emit, lengths,
                       log_final=None):
    r"""
    :math:`(Q, H)` per chain, ``(B,)`` each, for the chain q (see the module docstring);
    differentiable in every argument. The marginals
    :math:`m_t = m_1 \prod_{s=2}^{t} q(z_s | z_{s-1})` come from prefix products of the
    transition matrices (identity on padding, so :math:`m` stays at its last live step),
    so no step runs in a Python loop over time.
    """
    T, K = log_emit.shape[1:]
    mask = _frame_mask(lengths, T)
    # padded frames carry no weight; a finite value there keeps gradients finite
    log_emit = torch.where(mask.unsqueeze(-1), log_emit, 0)
    m = log_q_start.exp()
    joint = _xlogy(m, log_start + log_emit[:, 0])
    entropy = -_xlogy(m, log_q_start)
    if T > 1:
        live = mask[:, 1:]
        q_trans = log_q_trans.exp()
        steps = torch.where(live[..., None, None], q_trans,
                            torch.eye(K, dtype=q_trans.dtype, device=q_trans.device))
        marginals = (m[:, None, None, :] @ _prefix_products(steps)).squeeze(-2)  # m_2..m_T
        before = torch.cat([m.unsqueeze(1), marginals[:, :-1]], 1)
        pair = before.unsqueeze(-1) * q_trans  # P_t(i, j), (B, T - 1, K, K)
        expected = _xlogy(pair, log_trans + log_emit[:, 1:, None]).sum(-1)
        joint = joint + torch.where(live, expected, 0).sum(-1)
        entropy = entropy - torch.where(live, _xlogy(pair, log_q_trans).sum(-1), 0).sum(-1)
        m = marginals[:, -1]
    if log_final is not None:
        joint = joint + _xlogy(m, log_final)
    return joint, entropy


class MarkovChainELBO(pyro.infer.ELBO):
    r"""
    The exact ELBO of a hidden Markov model's Markov-chain guide,
    :math:`\mathrm{ELBO}(q, \eta) = Q(q, \eta) + H(q)` computed by a forward pass over q
    (:func:`chain_expectations`): no sampling, no enumeration of paths, gradients in both
    the model's parameters and q. For ``pyro.infer.SVI(m.model, m.guide, optim,
    MarkovChainELBO())`` with a built-in HMM ``m``; ``fit(method="svi")`` uses it.

    :raises ValueError: when ``model`` and ``guide`` are not those of one built-in HMM.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        owner = owner_of(guide)
        if owner is None or owner_of(model) is not owner or not hasattr(owner, "chain_elbo"):
            raise ValueError("MarkovChainELBO needs the model and guide of one built-in "
                             "HMM (m.model, m.guide)")
        return -owner.chain_elbo(*args, **kwargs).sum()

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("MarkovChainELBO is exact: it draws no traces")

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


_GUIDE_PARAMS = {"q_start_logits": (constraints.real, 1), "q_trans_logits": (constraints.real, 3)}


class MarkovChainGuide:
    r"""
    Mixin of :class:`~pyroem.models.HiddenMarkovModel`: its ``guide`` (a Markov chain per
    sequence, see the module docstring), the E-step's ``write_posterior``, the exact ELBO
    that SVI trains (:meth:`chain_elbo`) and the exact decomposition
    (:meth:`guide_decomposition`, which :func:`~pyroem.infer.decompose` uses).

    The E-step hands its posterior over at no cost; the chain's conditionals (a backward
    pass) are computed when the guide's q is next read (the guide runs, SVI steps, a
    decomposition, ``m.q_trans_logits`` is read), so that a fit that never reads q does
    not pay for it. Until then the guide's parameters are absent from ``state_dict``
    (never stale); loading a state drops the pending posterior.
    """

    guide_params = _GUIDE_PARAMS

    @model_method
    def guide(self, x, lengths, obs_mask=None, labels=None, sample_weight=None):
        r"""
        ``z_1 ~ Categorical(q(z_1))``, ``z_t ~ Categorical(q(z_t | z_{t-1}))`` per
        sequence, frames beyond a sequence's length masked out: the posterior chain (set
        exactly by EM's E-step, trained by SVI with :class:`MarkovChainELBO`).

        :param x: padded data ``(B, T, ...)`` (as from :meth:`prepare`).
        :param lengths: ``(B,)``.
        :param obs_mask, labels, sample_weight: the partial observation (as the model's):
            q is over every state whatever is observed, so the guide does not read them.
        """
        self.emission.check(x, lengths)
        B, T = x.shape[:2]
        self._q_for(B, T)
        start, trans = self.q_start_logits, self.q_trans_logits  # read outside the plate
        rows = torch.arange(B)
        with pyro.plate("sequences", B, dim=-1):
            z = None
            for t in pyro.markov(range(T)):
                with poutine.mask(mask=lengths > t):
                    logits = start if z is None else trans[rows, t - 1, z]
                    z = pyro.sample(f"z_{t}", dist.Categorical(logits=logits))

    def write_posterior(self, posterior, x, lengths, *partial):
        """E-step: the guide's chain := the exact posterior (computed when next read)."""
        if getattr(posterior, "chain_factors", False) is False:
            raise ValueError("write_posterior needs a posterior of this model's e_step")
        object.__setattr__(self, "_pending_q", posterior)
        for name in self.guide_params:
            if self._parameters.get(name + "_unconstrained") is not None:
                delattr(self, name)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        object.__setattr__(self, "_pending_q", None)  # the state's q (or none) is the guide's
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _q_shape(self):
        q = self._parameters.get("q_trans_logits_unconstrained")
        return None if q is None else (q.shape[0], q.shape[1] + 1)

    def __getattr__(self, name):
        # reading q_start_logits / q_trans_logits after an E-step reads its posterior
        if name in _GUIDE_PARAMS and self.__dict__.get("_pending_q") is not None:
            self._write_pending()
        return super().__getattr__(name)

    def _write_pending(self):
        """Compute the pending posterior's chain (a backward pass) into q."""
        pending = self.__dict__["_pending_q"]
        object.__setattr__(self, "_pending_q", None)
        with torch.no_grad():
            factors = pending.chain_factors
            factors = factors() if callable(factors) else factors  # computed on demand
            q = point_mass_chain(pending.gamma) if factors is None else posterior_chain(*factors)
        self._set_q(*q)

    def _q_for(self, B, T):
        """Make the guide's q a chain for ``B`` sequences of ``T`` steps: the pending
        posterior of the last E-step if it is for such data, else the one it holds, else
        uniform."""
        pending = self.__dict__.get("_pending_q")
        if pending is not None:
            if tuple(pending.gamma.shape[:2]) == (B, T):
                return self._write_pending()
            object.__setattr__(self, "_pending_q", None)  # for other data
        if self._q_shape() != (B, T):
            K = self.num_states
            self._set_q(torch.zeros(B, K, dtype=self.dtype),
                        torch.zeros(B, T - 1, K, K, dtype=self.dtype))

    def _set_q(self, start, trans):
        if self._q_shape() == (trans.shape[0], trans.shape[1] + 1):
            self.q_start_logits, self.q_trans_logits = start, trans  # in place
            return
        for (name, (constraint, event_dim)), value in zip(_GUIDE_PARAMS.items(), (start, trans)):
            setattr(self, name, PyroParam(value, constraint=constraint, event_dim=event_dim))

    def _log_final(self, dtype):
        if self.final_states is None:
            return None
        return torch.zeros(self.num_states, dtype=dtype).masked_fill(~self.final_states, -math.inf)

    @model_method
    def chain_elbo(self, x, lengths, obs_mask=None, labels=None, sample_weight=None):
        r""":math:`\mathrm{ELBO}(q, \eta)` per sequence, ``(B,)``, exact and differentiable
        in the model's parameters and the guide's q (:func:`chain_expectations`)."""
        self.emission.check(x, lengths)
        self._q_for(*x.shape[:2])
        joint, entropy = self._expectations(x, lengths, obs_mask, labels, sample_weight)
        return joint + entropy

    def _expectations(self, x, lengths, obs_mask=None, labels=None, sample_weight=None):
        """``(Q, H)`` per sequence (each multiplied by its ``sample_weight``)."""
        log_emit = hp.emission_log_prob(self.emission, x, obs_mask, labels, grad=True)
        log_q_start = self.q_start_logits.log_softmax(-1)
        log_q_trans = self.q_trans_logits.log_softmax(-1)
        joint, entropy = chain_expectations(log_q_start, log_q_trans, safe_log(self.start_probs),
                                            safe_log(self.trans_probs), log_emit, lengths,
                                            self._log_final(log_emit.dtype))
        if sample_weight is None:
            return joint, entropy
        return sample_weight * joint, sample_weight * entropy

    def guide_decomposition(self, x, lengths, obs_mask=None, labels=None, sample_weight=None,
                            log_evidence=None):
        r"""
        The exact :class:`~pyroem.infer.Decomposition` of :math:`\log p(X)` for the
        guide's current q (what :func:`~pyroem.infer.decompose` returns for a built-in
        HMM): :math:`Q` and :math:`H` by a forward pass over q, :math:`\log p(X)` by the
        E-step (or ``log_evidence`` when given).
        """
        with torch.no_grad():
            self.emission.check(x, lengths)
            self._q_for(*x.shape[:2])
            partial = (obs_mask, labels, sample_weight)
            joint, entropy = (float(v.sum()) for v in self._expectations(x, lengths, *partial))
            if log_evidence is None:
                log_evidence = self.e_step(x, lengths, *partial).log_evidence
        log_evidence, elbo = float(log_evidence), joint + entropy
        return Decomposition(log_evidence=log_evidence, elbo=elbo, kl=log_evidence - elbo,
                             entropy=entropy, expected_log_joint=joint)

    def _svi_elbo(self):
        return MarkovChainELBO()
