r"""The exact decomposition of the evidence that EM climbs:

.. math::

    \log p(X|\eta) = \underbrace{E_q[\log p(X, Z|\eta)]}_{Q(q, \eta)}
        + \underbrace{-E_q[\log q(Z)]}_{H(q)}
        + \mathrm{KL}\big(q(Z) \,\|\, p(Z|X, \eta)\big),
    \qquad \mathrm{ELBO}(q, \eta) = Q(q, \eta) + H(q).
"""

from collections import OrderedDict, namedtuple

import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.enum import config_enumerate
from pyro.infer.util import Dice
from pyro.ops import packed
from pyro.poutine.util import prune_subsample_sites

from pyroem.infer.estep import exact_posterior, guess_max_plate_nesting
from pyroem.infer.gaussian.decompose import gaussian_decomposition
from pyroem.infer.gaussian.trace import needs_gaussian_e_step
from pyroem.infer.protocols import EStepProvider, owner_of

Decomposition = namedtuple(
    "Decomposition", ["log_evidence", "elbo", "kl", "entropy", "expected_log_joint"]
)
Decomposition.__doc__ = r"""
The exact decomposition of :math:`\log p(X|\eta)` for a guide's current ``q`` (floats).

:ivar float log_evidence: :math:`\log p(X|\eta)`.
:ivar float elbo: :math:`\mathcal L(q, \eta) = Q(q, \eta) + H(q)`.
:ivar float kl: :math:`\mathrm{KL}(q \| p(Z|X, \eta)) = \log p(X|\eta) - \mathcal L(q, \eta)`.
:ivar float entropy: :math:`H(q) = -E_q[\log q(Z)]`.
:ivar float expected_log_joint: :math:`Q(q, \eta) = E_q[\log p(X, Z|\eta)]`.
"""


def _plate_ordinal(trace, site):
    return frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)


def guide_entropy(guide, *args, max_plate_nesting, **kwargs):
    r"""
    Exact entropy :math:`H(q) = -E_q[\log q(Z)]` of a guide whose sample sites are all
    discrete: the guide is traced with every site enumerated in parallel and
    :math:`E_q` is the exact sum over the enumerated values, weighted by :math:`q`
    (Pyro's :class:`~pyro.infer.util.Dice` expectation, as in ``TraceEnum_ELBO``).

    :raises ValueError: when a guide site cannot be enumerated.
    """
    enum_guide = poutine.enum(config_enumerate(guide, default="parallel"),
                              first_available_dim=-1 - max_plate_nesting)
    trace = poutine.trace(enum_guide).get_trace(*args, **kwargs)
    trace = prune_subsample_sites(trace)
    sites = [s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]]
    for site in sites:
        if site["infer"].get("_enumerate_dim") is None:
            raise ValueError(
                f"guide site '{site['name']}' cannot be enumerated (a continuous latent, or "
                f"enumerate={site['infer'].get('enumerate')!r}); the exact decomposition needs "
                "a guide whose sample sites are all discrete.")
    trace.compute_score_parts()
    trace.pack_tensors()
    ordering = {s["name"]: _plate_ordinal(trace, s) for s in sites}
    costs = OrderedDict()
    for site in sites:
        costs.setdefault(ordering[site["name"]], []).append(packed.neg(site["packed"]["log_prob"]))
    entropy = Dice(trace, ordering).compute_expectation(costs)
    return float(entropy)


def decompose(model, guide, *args, max_plate_nesting=None, log_evidence=None, **kwargs):
    r"""
    The exact decomposition :math:`\log p(X) = \mathrm{ELBO}(q) + \mathrm{KL}(q\|p(Z|X))`,
    :math:`\mathrm{ELBO} = Q + H`, for the guide's current ``q`` and the model's current
    parameters :math:`\eta`.

    All three expectations are exact sums over the enumerated latents, not Monte Carlo:

    - :math:`\log p(X|\eta)` from :func:`~pyroem.infer.exact_posterior` (or the
      model owner's ``e_step``, as :class:`~pyroem.infer.EM` does);
    - :math:`\mathrm{ELBO}(q, \eta) = E_q[\log p(X, Z) - \log q(Z)]` from
      :class:`~pyro.infer.TraceEnum_ELBO` with every guide site enumerated in parallel
      (latents of the model that the guide does not sample are summed out exactly, so
      they are part of :math:`X` here);
    - :math:`H(q)` from :func:`guide_entropy`, and :math:`Q = \mathrm{ELBO} - H`.

    After an E-step that wrote :math:`q = p(Z|X, \eta)` into the guide, ``kl`` is zero
    (to rounding) and ``elbo == log_evidence``.

    A Gaussian guide of a linear-Gaussian model (continuous latents: factor analysis,
    PLDA, a state-space model, a user's model) is decomposed exactly in closed form
    instead (:func:`~pyroem.infer.gaussian.decompose.gaussian_decomposition`).

    :param callable model: a Pyro model whose latents are enumerable.
    :param callable guide: a guide whose sample sites are all discrete (e.g. the built-in
        models' guides, which hold :math:`q` as parameters).
    :param int max_plate_nesting: as in ``TraceEnum_ELBO``; guessed when ``None``.
    :param log_evidence: :math:`\log p(X|\eta)` when already known (e.g. from the E-step
        just run); computed when ``None``.
    :returns: a :class:`Decomposition` of floats.

    A guide whose owner is also the model's owner and provides
    ``guide_decomposition(*args, log_evidence=None)`` computes all three itself (a
    built-in HMM's Markov-chain guide, by a forward pass over q: enumerating its
    :math:`K^T` paths here would not scale).
    """
    special = _closed_form_decomposition(model, guide, args, kwargs, log_evidence)
    if special is not None:
        return special
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, args, kwargs)
    with torch.no_grad():
        if log_evidence is None:
            owner = owner_of(model)
            if isinstance(owner, EStepProvider):
                log_evidence = owner.e_step(*args, hard=False, **kwargs).log_evidence
            else:
                log_evidence = exact_posterior(model, *args, max_plate_nesting=max_plate_nesting,
                                               **kwargs).log_evidence
        log_evidence = float(log_evidence)
        entropy = guide_entropy(guide, *args, max_plate_nesting=max_plate_nesting, **kwargs)
        elbo_loss = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)
        elbo = -float(elbo_loss.loss(model, config_enumerate(guide, default="parallel"),
                                     *args, **kwargs))
    return Decomposition(log_evidence=log_evidence, elbo=elbo, kl=log_evidence - elbo,
                         entropy=entropy, expected_log_joint=elbo - entropy)


def _closed_form_decomposition(model, guide, args, kwargs, log_evidence):
    """The decomposition where it has a closed form (else ``None``): a guide owner's own
    ``guide_decomposition`` (a built-in HMM's Markov chain), or the Gaussian one when the
    model and the guide have continuous latents only."""
    owner = owner_of(guide)
    if owner is not None and owner is owner_of(model) and callable(
            getattr(owner, "guide_decomposition", None)):
        return owner.guide_decomposition(*args, log_evidence=log_evidence, **kwargs)
    if needs_gaussian_e_step(guide, args, kwargs) and needs_gaussian_e_step(model, args, kwargs):
        owner = owner_of(model)
        if log_evidence is None and isinstance(owner, EStepProvider):
            log_evidence = owner.e_step(*args, hard=False, **kwargs).log_evidence
        return Decomposition(*gaussian_decomposition(model, guide, *args,
                                                     log_evidence=log_evidence, **kwargs))
    return None


ZeroVarianceELBO = namedtuple("ZeroVarianceELBO", ["log_evidence", "samples"])
ZeroVarianceELBO.__doc__ = r"""
:ivar float log_evidence: :math:`\log p(X|\eta)` from the exact E-step.
:ivar torch.Tensor samples: single-sample ``Trace_ELBO`` estimates, one per draw.
"""


def posterior_elbo_samples(model, guide, *args, num_samples=10, max_plate_nesting=None,
                           **kwargs):
    r"""
    The zero-variance demonstration: once the E-step has written the exact posterior
    :math:`q(Z) = p(Z|X, \eta)` into the guide, every single-sample Monte-Carlo ELBO

    .. math:: \log p(X, Z^{(s)}) - \log q(Z^{(s)}) = \log p(X), \qquad Z^{(s)} \sim q,

    because :math:`p(X, Z) / p(Z|X) = p(X)` for every :math:`Z`. This runs one E-step of
    :class:`~pyroem.infer.EM` (writing q into the guide, as EM does) and then
    ``num_samples`` independent estimates of Pyro's :class:`~pyro.infer.Trace_ELBO`
    with ``num_particles=1``, the guide *sampling* its sites (their enumeration is
    switched off).

    :param callable guide: a guide whose owner implements ``write_posterior`` (the
        built-in models), so that the E-step can set its q.
    :returns: a :class:`ZeroVarianceELBO` ``(log_evidence, samples)``.
    """
    from pyroem.infer.em import EM

    em = EM(model, guide, max_plate_nesting=max_plate_nesting)
    if em.plan.write == "none":
        raise ValueError("the guide has no write_posterior(); the E-step cannot set its q")
    with torch.no_grad():
        log_evidence = float(em.e_step(*args, **kwargs).log_evidence)
    sampling_guide = poutine.infer_config(guide, lambda site: {"enumerate": None})
    elbo = Trace_ELBO(num_particles=1)
    with torch.no_grad():
        samples = [-elbo.loss(model, sampling_guide, *args, **kwargs) for _ in range(num_samples)]
    return ZeroVarianceELBO(log_evidence, torch.tensor(samples, dtype=torch.float64))
