r"""
Strategy 2: an automatic closed-form M-step for models written by the user.

The model is traced once (under the same enumeration as the E-step) with each
``pyro.param`` replaced by a tracked leaf (:mod:`pyroem.infer.provenance`). A parameter
``p`` gets a closed form when every use of it is a recognised *role*: a distribution
argument that is a selection of ``p`` (``p``, ``p[z]`` for an enumerated ``z``, plate
broadcasts), in one of

====================  ===========================================================
site                  closed-form weighted MLE, :math:`w` = E-step marginal
====================  ===========================================================
Categorical probs     :math:`p_c \propto \sum w\,[x = c]` (logits: :math:`\log p_c`)
Bernoulli probs       :math:`p = \sum w x / \sum w` (logits: :math:`\mathrm{logit}\, p`)
Poisson rate          :math:`\lambda = \sum w x / \sum w`
Exponential rate      :math:`\lambda = \sum w / \sum w x`
Gamma rate            :math:`\beta = \sum w \alpha / \sum w x` (fixed :math:`\alpha`)
Normal loc, scale     :math:`\mu = \sum w x / \sigma^2 / \sum w / \sigma^2`,
                      :math:`\sigma^2 = \sum w (x - \mu)^2 / \sum w`
MVN loc, covariance   :math:`\mu = \sum w x / \sum w`,
                      :math:`\Sigma = \sum w (x-\mu)(x-\mu)^\top / \sum w`
====================  ===========================================================

where each sum runs over every position (data item, enumerated value) at which the
argument takes tha  t entry of ``p`` -- the transpose of the selection. ``DiagNormal`` and
``Normal(...).to_e  vent(n)`` are Normals, ``pyroem.distributions.MultivariateNormal`` and
Pyro's are MVNs (`  `scale_tril``, ``covariance_matrix`` or ``precision_matrix``).

A conjugate prior   written in the model as a factor on the parameter,
``pyro.sample("pri  or", Dirichlet(alpha), obs=pyro.param("weights"))`` (or ``Beta`` on
Bernoulli probs, ``Gamma`` on rates, ``Normal`` on Normal locs) makes the update the MAP:
e.g. :math:`p_c \propto \sum w [x = c] + \alpha_c - 1`.

Locations are updated first, then scales given the new locations (conditional
maximisation: the exact joint maximiser whenever each location is shared only by
positions with the same scale, as in every mixture; otherwise still monotone, ECM).
Every other parameter goes to the numerical fallback
(:class:`~pyroem.infer.numerical_mstep.NumericalMStep`), and so does a parameter whose
closed-form value would break its constraint (e.g. a negative mean declared positive).

Limitations: the model is run again for the M-step, so a subsampling plate must be given
its indices (``pyro.plate(..., subsample=idx)``) for both runs to see the same items; a
:class:`~pyro.nn.PyroModule` is passed as the module itself (``EM(module)``) so that its
``PyroParam`` s are ``pyro.param`` s.
"""

from collections import defaultdict

import pyro
import torch
import torch.distributions as td
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import Independent, constraints, transform_to

from pyroem.distributions import DiagNormal, gaussian_design, gaussian_features
from pyroem.infer.estep import guess_max_plate_nesting
from pyroem.infer.numerical_mstep import NumericalMStep
from pyroem.infer.provenance import Selection, compact, params_reached, tracked_trace
from pyroem.infer.reduce import weighted_sum

# Roles updated after the others (given the new locations).
_SECOND_PHASE = ("normal_scale", "mvn_cov")


def _pad_shape(shape, ndim):
    return torch.Size((1,) * (ndim - len(shape)) + tuple(shape))


def _broadcast(*shapes):
    ndim = max(len(s) for s in shapes)
    return torch.broadcast_shapes(*[_pad_shape(s, ndim) for s in shapes])


class _Use:
    """One recognised use of a parameter: its role (``kind``), the site family (for the
    report) and a function ``stats(site) -> (num, den)`` in the parameter's shape, given
    the site in the current trace (second-phase roles read the updated locations)."""

    def __init__(self, kind, family, stats, prior=False, extra=None):
        self.kind = kind
        self.family = family
        self.stats = stats
        self.prior = prior
        self.extra = extra


def _unwrap(fn):
    """Strip Masked/Independent/Expanded wrappers: ``(base, extra_event_dims, masks)``
    with each mask given with the number of reinterpreted dims outside it."""
    masks, extra = [], 0
    while True:
        if isinstance(fn, MaskedDistribution):
            masks.append((fn._mask, extra))
            fn = fn.base_dist
        elif isinstance(fn, Independent):
            extra += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        elif isinstance(fn, ExpandedDistribution):
            fn = fn.base_dist
        else:
            return fn, extra, masks


def _tensor_attrs(fn, skip):
    for key, value in vars(fn).items():
        if key not in skip and torch.is_tensor(value):
            yield key, value


def _given_arg(fn, names, normalised=False):
    """``(arg, Selection)`` for whichever of ``probs``/``logits`` (the one given, the other
    is derived lazily) is a selection of a parameter, else ``(None, None)``."""
    for arg in ("probs", "logits"):
        if arg in vars(fn):
            sel = Selection.find(vars(fn)[arg], names, normalised=normalised)
            if sel is not None:
                return arg, sel
    return None, None


class AutoMStep:
    r"""
    M-step for a model without its own closed form: recognised parameters get the
    closed-form (weighted MLE or MAP) update, the others L-BFGS on :math:`Q`.

    After each call :attr:`strategies` maps each parameter name to the strategy used:
    ``"closed-form:<Family>"`` (e.g. ``"closed-form:MultivariateNormal"``,
    ``"closed-form:Categorical+Dirichlet(MAP)"``) or ``"numerical"``.

    :param callable model: the Pyro model (plain function with ``pyro.param`` s).
    :param int max_plate_nesting: as for the E-step; guessed when ``None``.
    :param bool numerical: use the numerical fallback for the other parameters (if
        ``False`` they are left unchanged).
    :param int numerical_max_iter: L-BFGS iterations of the fallback per M-step.
    """

    def __init__(self, model, max_plate_nesting=None, numerical=True, numerical_max_iter=50):
        self.model = model
        self.max_plate_nesting = max_plate_nesting
        self.numerical = numerical
        self.numerical_max_iter = numerical_max_iter
        self.strategies = {}

    # ------------------------------------------------------------------ analysis
    def _site_uses(self, site, weight, names):
        """Recognised uses ``{param: [_Use]}`` and the set of parameters reached in any
        other way (these go to the numerical fallback)."""
        uses = defaultdict(list)
        fn, extra, masks = _unwrap(site["fn"])
        other = set()
        # Weights in the base distribution's batch shape, times the distribution's masks
        # (their log-prob is 0 where masked, but the marginal there is not).
        wb = weight.reshape(weight.shape + (1,) * extra)
        for mask, level in masks:
            if torch.is_tensor(mask):
                wb = wb * mask.to(wb.dtype).reshape(mask.shape + (1,) * (extra - level))
            elif not mask:
                wb = wb * 0
        value = site["value"]
        skip = {"_param", "_unbroadcasted_scale_tril", "_batch_shape", "_event_shape"}
        value_params = params_reached(value, names)

        if value_params:
            handled = self._prior_uses(site, fn, wb, value, names, uses)
            if not handled:
                other |= value_params
            for key, t in _tensor_attrs(fn, skip):
                other |= params_reached(t, names)
            return uses, other

        if isinstance(fn, torch.distributions.Categorical):
            arg, sel = _given_arg(fn, names, normalised=True)
            if sel is not None:
                uses[sel.name].append(_Use("probs" if arg == "probs" else "cat_logits",
                                           "Categorical",
                                           self._categorical_stats(sel, wb, value)))
                skip |= {"probs", "logits"}
        elif isinstance(fn, torch.distributions.Bernoulli):
            arg, sel = _given_arg(fn, names)
            if sel is not None:
                num = weighted_sum([wb, value], sel.shape)
                den = weighted_sum([wb], sel.shape)
                uses[sel.name].append(_Use("bernoulli" if arg == "probs" else "bern_logits",
                                           "Bernoulli",
                                           lambda s, sel=sel, num=num, den=den:
                                           (sel.pull(num), sel.pull(den))))
                skip |= {"probs", "logits"}
        elif isinstance(fn, (td.Poisson, td.Exponential, td.Gamma)):
            sel = Selection.find(fn.rate, names)
            family = type(fn).__name__
            if isinstance(fn, td.Gamma):
                conc_params = params_reached(fn.concentration, names)
                ok = sel is not None and not conc_params
            else:
                ok = sel is not None
            if ok:
                if isinstance(fn, td.Poisson):
                    num, den = weighted_sum([wb, value], sel.shape), weighted_sum([wb], sel.shape)
                elif isinstance(fn, td.Exponential):
                    num, den = weighted_sum([wb], sel.shape), weighted_sum([wb, value], sel.shape)
                else:
                    num = weighted_sum([wb, fn.concentration.detach()], sel.shape)
                    den = weighted_sum([wb, value], sel.shape)
                uses[sel.name].append(_Use("rate", family, lambda s, sel=sel, num=num, den=den:
                                           (sel.pull(num), sel.pull(den))))
                skip |= {"rate"}
        elif isinstance(fn, (td.Normal, DiagNormal)):
            if isinstance(fn, DiagNormal):
                wb = wb.unsqueeze(-1)
            self._normal_uses(site["name"], fn, wb, value, names, uses, skip)
        elif isinstance(fn, torch.distributions.MultivariateNormal):
            self._mvn_uses(site["name"], fn, wb, value, names, uses, skip)

        for key, t in _tensor_attrs(fn, skip):
            other |= params_reached(t, names)
        return uses, other

    def _prior_uses(self, site, fn, wb, value, names, uses):
        """A factor ``sample(..., Prior(...), obs=param)``: the MAP terms of a conjugate
        prior. Returns whether it was recognised."""
        sel = Selection.find(value, names)
        args = [t for _, t in _tensor_attrs(fn, {"_batch_shape", "_event_shape"})]
        if sel is None or any(params_reached(t, names) for t in args):
            return False
        if isinstance(fn, td.Dirichlet):
            alpha = fn.concentration.detach()
            num = weighted_sum([wb.unsqueeze(-1), alpha - 1], sel.shape)
            uses[sel.name].append(_Use("probs", "Dirichlet", lambda s: (sel.pull(num), None),
                                       prior=True))
        elif isinstance(fn, td.Beta):
            a, b = fn.concentration1.detach(), fn.concentration0.detach()
            num = weighted_sum([wb, a - 1], sel.shape)
            den = weighted_sum([wb, a + b - 2], sel.shape)
            uses[sel.name].append(_Use("bernoulli", "Beta",
                                       lambda s: (sel.pull(num), sel.pull(den)), prior=True))
        elif isinstance(fn, td.Gamma):
            a, b = fn.concentration.detach(), fn.rate.detach()
            num, den = weighted_sum([wb, a - 1], sel.shape), weighted_sum([wb, b], sel.shape)
            uses[sel.name].append(_Use("rate", "Gamma",
                                       lambda s: (sel.pull(num), sel.pull(den)), prior=True))
        elif isinstance(fn, td.Normal):
            prec = fn.scale.detach().pow(-2)
            num = weighted_sum([wb, prec, fn.loc.detach()], sel.shape)
            den = weighted_sum([wb, prec], sel.shape)
            uses[sel.name].append(_Use("normal_loc", "Normal",
                                       lambda s: (sel.pull(num), sel.pull(den)), prior=True))
        else:
            return False
        return True

    @staticmethod
    def _categorical_stats(sel, wb, value):
        # counts[b, c] = sum of w over positions whose argument entry is b and value is c,
        # by one bincount over the (few) distinct (entry, value) pairs.
        batch, num_categories = sel.shape[:-1], sel.shape[-1]
        x = compact(value)
        group = _broadcast(x.shape, batch, torch.Size())
        w_group = weighted_sum([wb], group)
        entries = torch.arange(batch.numel(), device=wb.device).reshape(batch)
        index = (entries.reshape(_pad_shape(batch, len(group))) * num_categories
                 + x.long().reshape(_pad_shape(x.shape, len(group))))
        index = index.expand(group)
        counts = torch.bincount(index.reshape(-1), weights=w_group.reshape(-1),
                                minlength=batch.numel() * num_categories)
        counts = counts.reshape(sel.shape).to(wb.dtype)

        def stats(site):
            return sel.pull(counts), None
        return stats

    def _normal_uses(self, name, fn, wb, value, names, uses, skip):
        loc_sel = Selection.find(fn.loc, names)
        scale_sel = Selection.find(fn.scale, names)
        if loc_sel is None and scale_sel is None:
            return
        loc_c, scale_c = compact(fn.loc.detach()), compact(fn.scale.detach())
        shape_r = _broadcast(loc_sel.shape if loc_sel else loc_c.shape,
                             scale_sel.shape if scale_sel else scale_c.shape)
        if not value.requires_grad and isinstance(fn, DiagNormal):
            center, sq, lin = gaussian_features(value, "diag")
        else:
            # One shift for all entries keeps the moments well conditioned (float32).
            center = value.detach().mean()
            lin = value - center
            sq = lin * lin
        w0 = weighted_sum([wb], shape_r)
        x1 = weighted_sum([wb, lin], shape_r)
        x2 = weighted_sum([wb, sq], shape_r)
        family = type(fn).__name__
        if loc_sel is not None:
            prec = scale_c.pow(-2)
            num_r = prec * (x1 + center * w0)
            den_r = (prec * w0).expand(shape_r)
            num = weighted_sum([num_r.expand(shape_r)], loc_sel.shape)
            den = weighted_sum([den_r], loc_sel.shape)
            uses[loc_sel.name].append(_Use("normal_loc", family,
                                           lambda s, num=num, den=den: (loc_sel.pull(num), loc_sel.pull(den))))
            skip.add("loc")
        if scale_sel is not None:
            den_scale = weighted_sum([w0.expand(shape_r)], scale_sel.shape)

            def scale_stats(site):
                new_fn = _unwrap(site["fn"])[0]
                mu = compact(new_fn.loc.detach()) - center
                c_r = x2 - 2 * mu * x1 + mu * mu * w0
                return scale_sel.pull(weighted_sum([c_r.expand(shape_r)], scale_sel.shape)), \
                    scale_sel.pull(den_scale)
            uses[scale_sel.name].append(_Use("normal_scale", family, scale_stats))
            skip.add("scale")

    def _mvn_uses(self, name, fn, wb, value, names, uses, skip):
        attrs = vars(fn)
        cov_kind = ("covariance_matrix" if "covariance_matrix" in attrs else
                    "precision_matrix" if "precision_matrix" in attrs else "scale_tril")
        skip |= {"scale_tril", "covariance_matrix", "precision_matrix"} - {cov_kind}
        cov_arg = attrs[cov_kind]
        loc_sel = Selection.find(fn.loc, names)
        cov_sel = Selection.find(cov_arg, names)
        if (loc_sel is None and cov_sel is None) or value.requires_grad:
            return
        dim = fn.event_shape[-1]
        loc_c, cov_c = compact(fn.loc.detach()), compact(cov_arg.detach())
        loc_batch = loc_sel.shape[:-1] if loc_sel else loc_c.shape[:-1]
        cov_batch = cov_sel.shape[:-2] if cov_sel else cov_c.shape[:-2]
        shape_r = _broadcast(loc_batch, cov_batch)
        if loc_sel is not None:
            # sum w x / sum w maximises Q only if the covariance is the same at all positions
            # sharing a location entry: the covariance may vary only along dims where the
            # location does.
            lb = _pad_shape(loc_batch, len(shape_r))
            cb = _pad_shape(compact(cov_arg.detach()).shape[:-2], len(shape_r))
            if any(c > 1 and l == 1 for l, c in zip(lb, cb)):
                loc_sel = None
        if loc_sel is None and cov_sel is None:
            return
        center, design = gaussian_design(value, "full")  # [quad, lin, 1]: one product
        moments = weighted_sum([wb.unsqueeze(-1), design], shape_r + (design.shape[-1],))
        w0 = moments[..., -1]
        x1 = moments[..., dim * dim:dim * dim + dim]
        x2 = moments[..., :dim * dim].reshape(shape_r + (dim, dim))
        family = "MultivariateNormal"
        if loc_sel is not None:
            num = weighted_sum([x1 + center * w0.unsqueeze(-1)], loc_sel.shape)
            den = weighted_sum([w0.unsqueeze(-1).expand(shape_r + (dim,))], loc_sel.shape)
            uses[loc_sel.name].append(_Use("mvn_loc", family,
                                           lambda s, num=num, den=den: (loc_sel.pull(num), loc_sel.pull(den))))
            skip.add("loc")
        if cov_sel is not None:
            den_cov = weighted_sum([w0[..., None, None].expand(shape_r + (dim, dim))],
                                   cov_sel.shape)

            def cov_stats(site):
                new_fn = _unwrap(site["fn"])[0]
                mu = (compact(new_fn.loc.detach()) - center).expand(shape_r + (dim,))
                outer = x1.unsqueeze(-1) * mu.unsqueeze(-2)
                c_r = (x2 - outer - outer.mT
                       + w0[..., None, None] * mu.unsqueeze(-1) * mu.unsqueeze(-2))
                return cov_sel.pull(weighted_sum([c_r], cov_sel.shape)), cov_sel.pull(den_cov)
            uses[cov_sel.name].append(_Use("mvn_cov", family, cov_stats, extra=cov_kind))
            skip.add(cov_kind)

    # ------------------------------------------------------------------ solving
    @staticmethod
    def _solve(kind, uses, stats, old):
        tiny = torch.finfo(old.dtype).tiny
        num = sum(s[0] for s in stats)
        dens = [s[1] for s in stats if s[1] is not None]
        den = sum(dens) if dens else None
        if kind in ("probs", "cat_logits"):
            if kind == "cat_logits":
                old = old.softmax(-1)
            num = num.clamp_min(0)
            total = num.sum(-1, keepdim=True)
            new = torch.where(total > 0, num / total.clamp_min(tiny), old)
            new = new.clamp_min(tiny)
            new = new / new.sum(-1, keepdim=True)
            return new.log() if kind == "cat_logits" else new
        if kind == "bern_logits":
            old = old.sigmoid()
        ok = den > 0
        ratio = torch.where(ok, num / torch.where(ok, den, 1), old)
        if kind in ("bernoulli", "bern_logits"):
            eps = torch.finfo(old.dtype).eps
            new = torch.where(ok, ratio.clamp(eps, 1 - eps), old)
            return new.logit() if kind == "bern_logits" else new
        if kind == "rate":
            return torch.where(ok, ratio.clamp_min(tiny), old)
        if kind in ("normal_loc", "mvn_loc"):
            return ratio
        if kind == "normal_scale":
            return torch.where(ok, ratio.clamp_min(tiny).sqrt(), old)
        if kind == "mvn_cov":
            cov = num / den.clamp_min(tiny)
            cov = 0.5 * (cov + cov.mT)
            cov_kind = uses[0].extra
            if cov_kind == "covariance_matrix":
                new = cov
            else:
                tril, info = torch.linalg.cholesky_ex(cov)
                if info.any():
                    raise ValueError(
                        "the automatic M-step produced a covariance that is not positive "
                        "definite (a component collapsed onto too few points); use fewer "
                        "components or more data")
                if cov_kind == "scale_tril":
                    new = tril
                else:
                    new = torch.cholesky_inverse(tril)
            keep = ~(den > 0).all(-1).all(-1)
            return torch.where(keep[..., None, None], old, new)
        raise AssertionError(kind)

    @staticmethod
    def _assign(name, value):
        store = pyro.get_param_store()
        constraint = store._constraints.get(name, constraints.real)
        if not bool(constraint.check(value).all()):
            return False
        with torch.no_grad():
            unconstrained = pyro.param(name).unconstrained()
            new = transform_to(constraint).inv(value).to(unconstrained.dtype)
            if not torch.isfinite(new).all():
                return False
            unconstrained.copy_(new)
        return True

    # ------------------------------------------------------------------ the step
    def _analyse(self, posterior, args, kwargs):
        trace, leaves = tracked_trace(self.model, args, kwargs, self.max_plate_nesting)
        names = leaves.names_by_id()
        uses, other = defaultdict(list), set()
        for name, site in trace.nodes.items():
            # Deterministic sites carry no factor; integrated-out sites (missing values of
            # obs_mask) have no marginal.
            if (site["type"] != "sample" or site["infer"].get("_deterministic")
                    or name not in posterior.marginals):
                continue
            weight = posterior.marginals[name]
            scale = site["scale"]
            if not (isinstance(scale, (int, float)) and scale == 1.0):
                weight = weight * scale
            site_uses, site_other = self._site_uses(site, weight, names)
            for param, u in site_uses.items():
                uses[param].extend((name, x) for x in u)
            other |= site_other
        return trace, leaves, uses, other

    def __call__(self, posterior, *args, **kwargs):
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(self.model, args, kwargs)
        with torch.no_grad():
            trace, leaves, uses, other = self._analyse(posterior, args, kwargs)
        if not leaves.leaves:
            raise ValueError(
                "The model has no pyro.param statement for EM to update. Declare the "
                "parameters with pyro.param(name, init, constraint=...) inside the model; for "
                "a PyroModule pass the module itself (EM(module)), not its forward method, so "
                "that its PyroParams are seen as pyro.params.")
        strategies, closed = {}, {}
        for param in leaves.leaves:
            param_uses = [u for _, u in uses.get(param, [])]
            kinds = {u.kind for u in param_uses}
            if param in other or len(kinds) != 1:
                strategies[param] = "numerical" if (param in other or kinds) else "unused"
                continue
            closed[param] = kinds.pop()
        numerical = {p for p, s in strategies.items() if s == "numerical"}
        retrace = False
        for phase in (0, 1):
            todo = [p for p, k in closed.items() if (k in _SECOND_PHASE) == bool(phase)]
            if phase == 1 and todo and retrace:
                with torch.no_grad():
                    trace, _ = tracked_trace(self.model, args, kwargs, self.max_plate_nesting)
            for param in todo:
                kind = closed[param]
                entries = uses[param]
                with torch.no_grad():
                    stats = [u.stats(trace.nodes[site]) for site, u in entries]
                    new = self._solve(kind, [u for _, u in entries], stats,
                                      leaves.leaves[param].detach())
                if self._assign(param, new):
                    families = sorted({u.family for _, u in entries if not u.prior})
                    priors = sorted({u.family for _, u in entries if u.prior})
                    label = "closed-form:" + "+".join(families or priors)
                    if priors and families:
                        label += "+" + "+".join(f"{p}(MAP)" for p in priors)
                    strategies[param] = label
                    retrace = True
                else:
                    strategies[param] = "numerical"
                    numerical.add(param)
        if numerical and self.numerical:
            NumericalMStep(self.model, self.max_plate_nesting,
                           max_iter=self.numerical_max_iter)(posterior, numerical, *args, **kwargs)
        self.strategies = dict(sorted(strategies.items()))
        return self.strategies
