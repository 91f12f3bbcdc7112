r"""
The exact E-step of a site observed through Pyro's
:class:`~pyro.distributions.DiscreteHMM`, by the vectorised recursions of
:mod:`pyroem.ops.recursions` instead of the generic contraction.

``DiscreteHMM(initial_logits, transition_logits, observation_dist)`` puts its initial
distribution :math:`\pi` on the state :math:`z_0` *one step before* the first
observation: with :math:`A` the transition matrix,

.. math::

    p(x_{1:T}) = \sum_{z_0, \dots, z_T} \pi_{z_0} \prod_{t=1}^T A_{z_{t-1} z_t}\,
    p(x_t | z_t),

so the chain that emits starts from :math:`p(z_1) = \pi A`. Forward-backward on
:math:`z_{1:T}` with that start gives :math:`\gamma_t` and
:math:`\sum_{t \ge 2} \xi_t`; the pair :math:`(z_0, z_1)` is recovered from
:math:`\gamma_1` by Bayes,
:math:`q(z_0 = i, z_1 = j) = \pi_i A_{ij}\, \gamma_1(j) / (\pi A)_j`. The expected
counts of :math:`z_0` update :math:`\pi`, those of every transition (including
:math:`z_0 \to z_1`) update :math:`A`, and :math:`\gamma` weights the observation
distribution's own M-step rule.
"""

import warnings

import pyro.distributions as dist
import torch
import torch.distributions as td
from pyro.distributions import DiscreteHMM
from torch.distributions import Independent

from pyroem.distributions import DiagNormal
from pyroem.ops.recursions import forward_backward, path_statistics, viterbi


class ChainStatistics:
    r"""
    The exact posterior of the chains of one ``DiscreteHMM`` site, summed over chains
    where the M-step only needs sums.

    :ivar torch.Tensor gamma: :math:`q(z_t = k)`, shape ``batch_shape + (T, K)``.
    :ivar torch.Tensor init: expected counts of :math:`z_0`, ``(K,)``.
    :ivar torch.Tensor trans: expected transition counts
        :math:`\sum_b \sum_{t=1}^T \xi_t(i, j)` (from :math:`z_0` on), ``(K, K)``.
    """

    def __init__(self, gamma, init, trans):
        self.gamma = gamma
        self.init = init
        self.trans = trans


def _distinct(tensor, keep):
    """The distinct values of ``tensor``'s last ``keep`` dims when every dim to their left
    is size 1 or only expanded (stride 0), else ``None`` (the chains differ)."""
    lead = tensor.dim() - keep
    for size, stride in zip(tensor.shape[:lead], tensor.stride()[:lead]):
        if size > 1 and stride != 0:
            return None
    return tensor.reshape((-1,) + tuple(tensor.shape[lead:]))[0] if lead else tensor


def vectorisable(site, max_plate_nesting):
    """Why the observed ``DiscreteHMM`` site cannot take the vectorised E-step, or
    ``None`` when it can: one homogeneous chain shared by every sequence (initial and
    transition logits not batched, e.g. by an enumerated variable or per sequence), no
    enumerated variable in the observation distribution, no ``poutine.mask`` on it."""
    fn = site["fn"]
    if type(fn) is not DiscreteHMM or not site["is_observed"]:
        return "not an observed DiscreteHMM"
    if _distinct(fn.initial_logits, 1) is None or _distinct(fn.transition_logits, 2) is None:
        return "its initial or transition logits differ between chains (or over time)"
    if len(fn.batch_shape) > max_plate_nesting:
        return "it depends on an enumerated variable"
    if site["mask"] is not None and site["mask"] is not True:
        return "it is masked (poutine.mask)"
    return None


def is_chain_site(site):
    """Whether ``site`` is a ``DiscreteHMM`` site that the E-step marked vectorised."""
    return site.get("_chain") is not None


def _diag_normal(obs):
    """``obs`` as a :class:`~pyroem.distributions.DiagNormal` with event dim 1 and the
    value's dims to add, when it is a diagonal Normal (``Normal``, or ``Normal`` with one
    reinterpreted dim), else ``None``."""
    if isinstance(obs, Independent) and obs.reinterpreted_batch_ndims == 1:
        base, extra = obs.base_dist, 0
    else:
        base, extra = obs, 1
    if type(base) not in (td.Normal, dist.Normal):
        return None
    loc, scale = (base.loc.unsqueeze(-1), base.scale.unsqueeze(-1)) if extra else (
        base.loc, base.scale)
    return DiagNormal(loc, scale, validate_args=False), extra


def _log_emissions(fn, value):
    """``log p(x_t | z_t = k)`` as ``(B, T, K)`` and the HMM's batch shape. A diagonal
    Normal takes the built-in HMMs' route: one matrix product with the data's design
    ``[x^2, x, 1]``, computed once per data tensor
    (:func:`~pyroem.distributions.gaussian_design`)."""
    obs = fn.observation_dist
    diag = _diag_normal(obs)
    if diag is not None:
        normal, extra = diag
        value = value.unsqueeze(-1) if extra else value
        log_emit = normal.log_prob(value.unsqueeze(-2))
    else:
        log_emit = obs.log_prob(value.unsqueeze(-1 - obs.event_dim))
    batch = fn.batch_shape
    log_emit = log_emit.expand(batch + log_emit.shape[-2:])
    return log_emit.reshape((-1,) + tuple(log_emit.shape[-2:])), batch


def chain_log_prob(site, hard=False):
    r"""
    ``log p(x)`` of each chain of a vectorisable ``DiscreteHMM`` site (its batch shape;
    with ``hard``, :math:`\max_z \log p(x, z)`), and its :class:`ChainStatistics`.
    """
    fn, value = site["fn"], site["value"]
    log_emit, batch = _log_emissions(fn, value)
    B, T, K = log_emit.shape
    log_init = _distinct(fn.initial_logits, 1).to(log_emit.dtype)  # normalised by Pyro
    log_trans = _distinct(fn.transition_logits, 2).to(log_emit.dtype)
    pair = log_init.unsqueeze(-1) + log_trans  # log p(z_0 = i, z_1 = j)
    lengths = torch.full((B,), T, dtype=torch.long, device=log_emit.device)
    if hard:
        log_start, first = pair.max(0)  # the best z_0 for each z_1
        best, path = viterbi(log_start, log_trans, log_emit, lengths)
        gamma, trans = path_statistics(path, K, log_emit.dtype)
        z0 = first[path[:, 0]]
        init = torch.bincount(z0, minlength=K).to(log_emit.dtype)
        trans = trans + torch.bincount(z0 * K + path[:, 0], minlength=K * K).reshape(
            K, K).to(log_emit.dtype)
        log_prob = best
    else:
        log_start = pair.logsumexp(0)  # log p(z_1) = log (pi A)
        log_prob, gamma, xi = forward_backward(log_start, log_trans.exp(), log_emit, lengths)
        # q(z_0 = i, z_1 = j) = pi_i A_ij gamma_1(j) / (pi A)_j, summed over chains
        ratio = torch.where(torch.isfinite(log_start), (pair - log_start).exp(), 0.0)
        first = ratio * gamma[:, 0].sum(0)
        init, trans = first.sum(-1), xi + first
    gamma = gamma.reshape(batch + (T, K))
    return log_prob.reshape(batch), ChainStatistics(gamma, init, trans)


def warn_generic_route(name, reason):
    """Say why a ``DiscreteHMM`` site takes the generic route (Python shows one warning
    per message)."""
    warnings.warn(
        f"DiscreteHMM site '{name}': {reason}, so the vectorised forward-backward does "
        "not apply; its log-density comes from DiscreteHMM.log_prob (Pyro's parallel "
        "scan, exact but slower) and its parameters are maximised numerically.",
        UserWarning, stacklevel=4)
