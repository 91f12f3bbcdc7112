"""The generic exact E-step: posterior marginals by backpropagation through Pyro's
exact enumeration (forward-backward is backprop; Eisner, 2016)."""

import math
from collections import OrderedDict

import torch
from pyro import poutine
from pyro.distributions import DiscreteHMM
from pyro.infer.util import is_validation_enabled
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing, MapRing
from pyro.poutine.trace_struct import scale_and_mask
from pyro.util import check_site_shape

from pyroem.distributions.features import all_finite
from pyroem.infer.chain_contract import chain_contract
from pyroem.infer.chains import chain_log_prob, is_chain_site, vectorisable, warn_generic_route
from pyroem.infer.posteriors import DiscretePosterior
from pyroem.infer.repeats import compute_log_probs, find_groups
from pyroem.infer.stacked_chain import stacked_chain_contract


def guess_max_plate_nesting(model, args, kwargs):
    """Deepest plate nesting seen in one trace of ``model`` (as ``TraceEnum_ELBO`` does)."""
    with poutine.block():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
    return max([len([f for f in s["cond_indep_stack"] if f.vectorized]) for s in sites] + [0])


def _common_scale(sites):
    scales = {id(s["scale"]): s["scale"] for s in sites}
    values = list(scales.values())
    scale = values[0] if values else 1.0
    for other in values[1:]:
        if not (torch.is_tensor(other) or torch.is_tensor(scale)) and other == scale:
            continue
        if torch.is_tensor(other) and torch.is_tensor(scale) and torch.equal(other, scale):
            continue
        raise NotImplementedError(
            "The exact E-step needs one common poutine.scale on all sites that depend on "
            "an enumerated variable; found different scales. Apply the scale to the whole "
            "model (e.g. a subsampling plate) instead of to individual sites."
        )
    if torch.is_tensor(scale) and scale.numel() != 1:
        raise NotImplementedError(
            "The exact E-step supports a scalar poutine.scale only; use poutine.mask for "
            "per-item weights of 0/1."
        )
    return scale


#: Largest log-prob table (entries) of one site that the E-step will build; beyond this a
#: site depends jointly on too many enumerated variables to be contracted in memory.
MAX_FACTOR_SIZE = 2**28


def _checked_sites(trace, max_plate_nesting):
    """The sample sites of ``trace``, checked before any log-prob is computed.

    Missing values of a continuous site observed with ``obs_mask`` (Pyro's
    ``<name>_unobserved`` latent next to ``<name>_observed``) integrate to one: they are
    marked ``_integrated`` and left out of the contraction (their values must not feed
    other sites), as are ``pyro.deterministic`` sites (log-prob 0). Any other latent must
    be enumerable, and no site's log-prob table may exceed :data:`MAX_FACTOR_SIZE`
    entries. Observed values must be finite where the site's mask keeps them
    (:func:`check_observed`).
    """
    sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
    names = {s["name"] for s in sites}
    for site in sites:
        name = site["name"]
        if site["is_observed"]:
            check_observed(site)
        if site["infer"].get("_deterministic"):
            site["_integrated"] = True  # pyro.deterministic: a Delta at its value, log-prob 0
            continue
        if not site["is_observed"] and site["infer"].get("_enumerate_dim") is None:
            if (name.endswith("_unobserved") and name[:-11] + "_observed" in names
                    and site["mask"] is not None):
                site["_integrated"] = True
                continue
            raise ValueError(
                f"Sample site '{name}' is a latent that cannot be enumerated "
                f"(a continuous latent, or enumerate={site['infer'].get('enumerate')!r}). "
                "The generic exact E-step handles discrete latents only: give the model a "
                "closed-form posterior (see pyroem.models.PLDA) or mark the site observed."
            )
        fn, value = site["fn"], site["value"]
        batch = value.shape[:value.dim() - fn.event_dim]
        if math.prod(fn.batch_shape) * math.prod(batch) <= MAX_FACTOR_SIZE:
            continue  # a bound on the broadcast size, without broadcasting (per site)
        shape = torch.broadcast_shapes(fn.batch_shape, batch)
        if math.prod(shape) > MAX_FACTOR_SIZE:
            enum_dims = [d for d in range(-len(shape), -max_plate_nesting) if shape[d] > 1]
            raise ValueError(
                f"Sample site '{name}' depends jointly on {len(enum_dims)} enumerated "
                f"variables: its log-prob table has shape {tuple(shape)} "
                f"({math.prod(shape)} entries > MAX_FACTOR_SIZE={MAX_FACTOR_SIZE}). Exact "
                "enumeration of that many variables does not fit in memory: enumerate fewer "
                "latents jointly (pyro.markov for chains, plates for independent ones), "
                "reduce their number of values, or give the model its own e_step.")
    return sites


def _first_index(bad):
    flat = int(bad.reshape(-1).nonzero()[0])
    if not bad.dim():
        return ()
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), bad.shape))


def check_observed(site):
    """
    Raise ``ValueError`` when an observed value of ``site`` that its mask keeps is NaN or
    inf, naming the site and the first such index (the E-step would otherwise turn it
    into NaN posteriors, and the M-step into NaN parameters). Entries that the mask drops
    (Pyro's ``obs_mask``: missing values) may hold anything.
    """
    value = site["value"]
    if not torch.is_tensor(value) or not value.is_floating_point() or site["mask"] is False:
        return
    if all_finite(value):
        return
    bad = ~torch.isfinite(value)
    mask = site["mask"]
    if torch.is_tensor(mask):
        event_dim = min(getattr(site["fn"], "event_dim", 0), value.dim())
        try:
            keep = mask.reshape(mask.shape + (1,) * event_dim).expand(value.shape)
        except RuntimeError:  # a mask that does not broadcast to the value: check all
            keep = None
        if keep is not None:
            bad = bad & keep
            if not bool(bad.any()):
                return
    index = _first_index(bad)
    found = float(value[index])
    hint = (" A NaN meant as a missing value must be marked missing: "
            f"pyro.sample('{site['name']}', ..., obs=x.nan_to_num(), obs_mask=~x.isnan())"
            if math.isnan(found) else "")
    raise ValueError(f"the observed value of site '{site['name']}' contains NaN or inf "
                     f"(first: {found} at index {index}); observed data must be finite.{hint}")


def exact_posterior(model, *args, max_plate_nesting=None, hard=False, **kwargs):
    r"""
    Exact posterior of the enumerated discrete latents of ``model`` given its observed
    sites.

    The model is traced under :class:`~pyro.poutine.enum_messenger.EnumMessenger`
    (every discrete latent site without an ``"enumerate"`` setting is enumerated in
    parallel). Each site's log-prob tensor becomes a leaf :math:`\phi_f`, the evidence

    .. math:: \log p(X) = \log \sum_Z \prod_f \exp \phi_f(Z_f)

    is contracted exactly by :func:`pyro.ops.contract.contract_to_tensor` (variable
    elimination over plates and ``pyro.markov`` chains), and one backward pass gives
    every factor's posterior marginal :math:`\partial \log p(X) / \partial \phi_f(z_f)
    = p(Z_f = z_f | X)`. With ``hard=True`` the sum is a max (the max-sum ring) and the
    gradient is the indicator of the most probable joint assignment (Viterbi).

    The factors are those of :class:`~pyro.infer.TraceEnum_ELBO`, so that ``log p(X)``
    is minus its loss: a site that depends on no enumerated variable is a term of its
    own (its ``poutine.scale`` and mask applied, marginal: its mask); the others are
    contracted, with the masks of observed sites applied inside the contraction, the
    factors of enumerated latents unmasked (a ``poutine.mask`` on a latent does not
    remove it: it is still summed over, as in Pyro, so padded steps of a chain add
    nothing), and their common scalar ``poutine.scale`` applied outside it.

    An observed :class:`~pyro.distributions.DiscreteHMM` site that depends on no
    enumerated variable and whose chain all its sequences share gets its ``log p(x)``
    from the vectorised forward-backward of :mod:`pyroem.infer.chains`, and its chain
    posterior in ``posterior.chains``.

    Repeated sites (the steps of a ``pyro.markov`` loop, :mod:`pyroem.infer.repeats`) get
    their log-probs from one call per kind; when the factors form one first-order chain
    in no plate, the contraction and the marginals are the forward-backward on the
    factors stacked by kind (:mod:`pyroem.infer.stacked_chain`), and the packed chain
    recursion (:mod:`pyroem.infer.chain_contract`) when they form one inside plates.

    :param callable model: a Pyro model whose latent sites are all discrete.
    :param int max_plate_nesting: as in ``TraceEnum_ELBO``; guessed from one trace
        when ``None``.
    :param bool hard: max-product instead of sum-product.
    :returns: a :class:`~pyroem.infer.posteriors.DiscretePosterior`.
    :raises ValueError: when the model has a latent site that cannot be enumerated.
    """
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, args, kwargs)
    trace, sites, groups = _enumerated_trace(model, args, kwargs, max_plate_nesting, hard)
    contracted, free = _split_by_enumeration(sites)
    marginals = OrderedDict()
    log_evidence = _free_terms(free, marginals)
    if contracted:
        log_evidence = log_evidence + _contract(trace, contracted, hard, marginals, groups)
    dtype = sites[0]["unscaled_log_prob"].dtype if sites else torch.float64
    chains = {s["name"]: s["_chain"] for s in free if is_chain_site(s)}
    marginals = OrderedDict((s["name"], marginals[s["name"]]) for s in sites)
    return DiscretePosterior(torch.as_tensor(log_evidence).to(dtype), marginals, trace,
                             chains=chains)


def _contract(trace, sites, hard, marginals, groups=()):
    r"""``scale * log sum_Z prod_f exp phi_f`` over the ``sites`` that depend on an
    enumerated variable; their marginals (gradients) go into ``marginals`` (and, for a
    plain chain's repeated sites, stacked into their group's ``marginal``)."""
    fast = stacked_chain_contract(sites, groups, hard)
    if fast is not None:
        return _common_scale(sites) * _chain_marginals(*fast, groups, marginals)
    # Everything from the leaves to log p(X) is differentiated, also when the caller
    # runs the E-step under torch.no_grad().
    with torch.enable_grad():
        leaves = OrderedDict()
        for site in sites:
            leaf = site["unscaled_log_prob"].detach().requires_grad_()
            leaves[site["name"]] = leaf
            site["unscaled_log_prob"] = leaf
            site["log_prob"] = leaf
        trace.pack_tensors()
        log_factors, sum_dims = _log_factors(trace, sites, hard)
        log_evidence = chain_contract(log_factors, sum_dims, *_chain_layout(trace, sites),
                                      hard=hard)
        if log_evidence is None:  # not one first-order chain: general elimination
            ring = MapRing() if hard else LogRing()
            log_evidence = contract_to_tensor(log_factors, sum_dims, ring=ring)
        grads = torch.autograd.grad(log_evidence, list(leaves.values()), allow_unused=True)
    for (name, leaf), g in zip(leaves.items(), grads):
        marginals[name] = torch.zeros_like(leaf) if g is None else g
    return _common_scale(sites) * log_evidence.detach().double()


def _chain_marginals(log_evidence, units, groups, marginals):
    """Hand out a plain chain's marginals: each member's (a view), each group's
    stacked; returns ``log_evidence`` (float64)."""
    stacked = {id(g.sites[0]): g for g in groups}
    for members, marginal in units:
        group = stacked.get(id(members[0]))
        if group is not None:
            group.marginal = marginal
        for site, one in zip(members, marginal.unbind(0)):
            marginals[site["name"]] = one
    return log_evidence.double()


def _chain_layout(trace, sites):
    """The enumerated sites' symbols in trace order, and the plates they all sit in
    (``None`` when they differ), for :func:`~pyroem.infer.chain_contract.chain_contract`."""
    enumerated = [s for s in sites if s["infer"].get("_enumerate_dim") is not None]
    ordinals = {frozenset(trace.plate_to_symbol[f.name] for f in s["cond_indep_stack"]
                          if f.vectorized) for s in enumerated}
    symbols = [s["infer"]["_enumerate_symbol"] for s in enumerated]
    return symbols, (next(iter(ordinals)) if len(ordinals) == 1 else None)


def _split_by_enumeration(sites):
    """``(contracted, free)``: the sites whose log-prob has an enumeration dim (or that
    are enumerated), and the others, which are terms of their own as in
    ``TraceEnum_ELBO``."""
    enum_dims = set()
    for site in sites:
        if site["infer"].get("_enumerate_dim") is not None:
            enum_dims.add(site["infer"]["_enumerate_dim"])
    contracted, free = [], []
    for site in sites:
        lp = site["unscaled_log_prob"]
        dims = {d - lp.dim() for d in range(lp.dim()) if lp.shape[d] > 1}
        depends = (site["infer"].get("_enumerate_dim") is not None
                   or not enum_dims.isdisjoint(dims))
        (contracted if depends else free).append(site)
    return contracted, free


def _free_terms(sites, marginals):
    """Sum of the scaled, masked log-probs of sites that depend on no enumerated
    variable (float64); each one's marginal is its mask (1 where it counts)."""
    total = torch.zeros((), dtype=torch.float64)
    for site in sites:
        lp, mask, scale = site["unscaled_log_prob"], site["mask"], site["scale"]
        keep = torch.ones((), dtype=lp.dtype) if mask is None else torch.as_tensor(
            mask, device=lp.device).to(lp.dtype)
        keep = keep.expand(lp.shape)
        marginals[site["name"]] = keep
        term = torch.where(keep > 0, lp, torch.zeros((), dtype=lp.dtype))
        total = total + scale * term.double().sum()
    return total


def _enumerated_trace(model, args, kwargs, max_plate_nesting, hard=False):
    """The model's trace under parallel enumeration with the log-prob of every site that
    enters the contraction computed (no graph through the parameters), and those sites.
    Vectorisable ``DiscreteHMM`` sites get theirs from forward-backward.

    The trace is the automatic M-step's tracked trace
    (:func:`~pyroem.infer.mstep.provenance.tracked_trace`: parameters as autograd leaves),
    kept in ``trace.tracked`` so that the M-step of the same step need not run the model
    again."""
    # imported here: the M-step package imports this module (guess_max_plate_nesting)
    from pyroem.infer.mstep.provenance import TracedWith, tracked_trace

    with torch.no_grad():
        try:
            trace, leaves = tracked_trace(model, args, kwargs, max_plate_nesting)
        except RuntimeError as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            if "up to 64 dims" not in first_line:
                raise
            raise ValueError(
                f"Enumerating the model's discrete latents needs more than the 64 tensor "
                f"dims torch supports ({first_line}). Each latent that is not inside a plate "
                "or a pyro.markov context takes one dim of its own: put independent latents "
                "in a pyro.plate and chains in pyro.markov.") from e
        trace.tracked = TracedWith(leaves, args, kwargs)
        sites = _checked_sites(trace, max_plate_nesting)
        integrated = {s["name"] for s in sites if s.get("_integrated")}
        if integrated:
            sites = [s for s in sites if s["name"] not in integrated]
        _chain_log_probs(sites, max_plate_nesting, hard)
        groups = find_groups(sites, leaves.names_by_id())
        compute_log_probs(groups)  # the repeats of a markov loop: one call per kind
        trace.tracked.groups = groups  # the M-step takes them stacked too
        trace.compute_log_prob(lambda name, site: name not in integrated)
        if is_validation_enabled():
            for site in sites:
                check_site_shape(site, max_plate_nesting)
    return trace, sites, groups


def _chain_log_probs(sites, max_plate_nesting, hard):
    """Fill in the log-prob of every vectorisable observed ``DiscreteHMM`` site from
    forward-backward (``compute_log_prob`` then skips it); say why for the others."""
    for site in sites:
        if not isinstance(site["fn"], DiscreteHMM) or not site["is_observed"]:
            continue
        reason = vectorisable(site, max_plate_nesting)
        if reason is not None:
            warn_generic_route(site["name"], reason)
            continue
        log_prob, site["_chain"] = chain_log_prob(site, hard)
        site["unscaled_log_prob"] = log_prob
        site["log_prob"] = scale_and_mask(log_prob, site["scale"], site["mask"])


def _log_factors(trace, sites, hard=False):
    """The packed log-factors of ``sites`` grouped by plate ordinal, and the enumeration
    dims to sum out, as :func:`~pyro.ops.contract.contract_to_tensor` takes them: masked
    for observed sites, unmasked for enumerated latents (``TraceEnum_ELBO``'s factors).
    With ``hard`` a latent's mask applies too: a masked latent (a padded step) then adds
    nothing to the maximum instead of pulling the most probable path towards its own
    most probable continuation."""
    ordinals = {s["name"]: frozenset(trace.plate_to_symbol[f.name]
                                     for f in s["cond_indep_stack"] if f.vectorized)
                for s in sites}
    # Factors over the same dims in the same plates are multiplied (added in log
    # space) before contraction: for a mixture, prior and likelihood become one
    # (K, N) table and the contraction is a single logsumexp.
    fused = OrderedDict()
    sum_dims = set()
    for site in sites:
        packed_lp = site["packed"]["unscaled_log_prob"]
        enumerated = site["infer"].get("_enumerate_dim") is not None
        term = packed_lp if enumerated and not hard else packed.scale_and_mask(
            packed_lp, mask=site["packed"]["mask"])
        # masking may reorder the packed dims: key on the term's own dims
        key = (ordinals[site["name"]], term._pyro_dims)
        fused[key] = term if key not in fused else fused[key] + term
        if enumerated:
            sum_dims.update(packed_lp._pyro_dims)
    log_factors = OrderedDict()
    for (ordinal, dims), term in fused.items():
        term._pyro_dims = dims
        log_factors.setdefault(ordinal, []).append(term)
    sum_dims -= set().union(*ordinals.values()) if ordinals else set()
    return log_factors, sum_dims
