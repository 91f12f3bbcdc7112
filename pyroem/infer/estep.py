"""The generic exact E-step: posterior marginals by backpropagation through Pyro's
exact enumeration (forward-backward is backprop; Eisner, 2016)."""

import math
from collections import OrderedDict

import pyro.poutine as poutine
import torch
from pyro.infer.enum import config_enumerate
from pyro.infer.util import is_validation_enabled
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing, MapRing
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_site_shape

from pyroem.distributions.features import all_finite
from pyroem.infer.posteriors import DiscretePosterior


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
        shape = torch.broadcast_shapes(fn.batch_shape, value.shape[:value.dim() - fn.event_dim])
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

    Masks (``poutine.mask``, ``obs_mask``) are applied inside the contraction; a common
    scalar ``poutine.scale`` outside it, as in :class:`~pyro.infer.TraceEnum_ELBO`.

    :param callable model: a Pyro model whose latent sites are all discrete.
    :param int max_plate_nesting: as in ``TraceEnum_ELBO``; guessed from one trace
        when ``None``.
    :param bool hard: max-product instead of sum-product.
    :returns: a :class:`~pyroem.infer.posteriors.DiscretePosterior`.
    :raises ValueError: when the model has a latent site that cannot be enumerated.
    """
    if max_plate_nesting is None:
        max_plate_nesting = guess_max_plate_nesting(model, args, kwargs)
    trace, sites = _enumerated_trace(model, args, kwargs, max_plate_nesting)
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
        log_factors, sum_dims = _log_factors(trace, sites)
        ring = MapRing() if hard else LogRing()
        log_evidence = contract_to_tensor(log_factors, sum_dims, ring=ring)
        marginals = torch.autograd.grad(log_evidence, list(leaves.values()), allow_unused=True)
    marginals = OrderedDict(
        (name, torch.zeros_like(leaf) if g is None else g)
        for (name, leaf), g in zip(leaves.items(), marginals)
    )
    return DiscretePosterior(_common_scale(sites) * log_evidence.detach(), marginals, trace)


def _enumerated_trace(model, args, kwargs, max_plate_nesting):
    """The model's trace under parallel enumeration with the log-prob of every site that
    enters the contraction computed (no graph through the parameters), and those sites."""
    enum_model = poutine.enum(config_enumerate(model, default="parallel"),
                              first_available_dim=-1 - max_plate_nesting)
    with torch.no_grad():
        try:
            trace = poutine.trace(enum_model).get_trace(*args, **kwargs)
        except RuntimeError as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            if "up to 64 dims" not in first_line:
                raise
            raise ValueError(
                f"Enumerating the model's discrete latents needs more than the 64 tensor "
                f"dims torch supports ({first_line}). Each latent that is not inside a plate "
                "or a pyro.markov context takes one dim of its own: put independent latents "
                "in a pyro.plate and chains in pyro.markov.") from e
        trace = prune_subsample_sites(trace)
        sites = _checked_sites(trace, max_plate_nesting)
        integrated = {s["name"] for s in sites if s.get("_integrated")}
        if integrated:
            sites = [s for s in sites if s["name"] not in integrated]
            trace.compute_log_prob(lambda name, site: name not in integrated)
        else:
            trace.compute_log_prob()
        if is_validation_enabled():
            for site in sites:
                check_site_shape(site, max_plate_nesting)
    return trace, sites


def _log_factors(trace, sites):
    """The packed, masked log-factors of ``sites`` grouped by plate ordinal, and the
    enumeration dims to sum out, as :func:`~pyro.ops.contract.contract_to_tensor` takes
    them."""
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
        term = packed.scale_and_mask(packed_lp, mask=site["packed"]["mask"])
        # masking may reorder the packed dims: key on the term's own dims
        key = (ordinals[site["name"]], term._pyro_dims)
        fused[key] = term if key not in fused else fused[key] + term
        if site["infer"].get("_enumerate_dim") is not None:
            sum_dims.update(packed_lp._pyro_dims)
    log_factors = OrderedDict()
    for (ordinal, dims), term in fused.items():
        term._pyro_dims = dims
        log_factors.setdefault(ordinal, []).append(term)
    sum_dims -= set().union(*ordinals.values()) if ordinals else set()
    return log_factors, sum_dims
