r"""
Strategy 2: an automatic closed-form M-step for models written by the user.

The model is traced once (under the same enumeration as the E-step) with each
``pyro.param`` replaced by a tracked leaf (:mod:`pyroem.infer.mstep.provenance`). Each
sample site goes to the rule registered for its distribution's type
(:mod:`pyroem.infer.mstep.rules`), which returns expected statistics for the parameters
that its arguments *select* (``p``, ``p[z]`` for an enumerated ``z``, plate broadcasts).
A parameter ``p`` gets a closed form when every use of it is recognised and all of them
feed the same maximiser; the statistics are summed over every position (data item,
enumerated value) at which an argument takes that entry of ``p`` -- the transpose of the
selection -- and maximised. ``DiagNormal`` and ``Normal(...).to_event(n)`` are Normals,
``pyroem.distributions.MultivariateNormal`` and Pyro's are MVNs (``scale_tril``,
``covariance_matrix`` or ``precision_matrix``).

A conjugate prior written in the model as a factor on the parameter,
``pyro.sample("prior", Dirichlet(alpha), obs=pyro.param("weights"))`` (or ``Beta`` on
Bernoulli probs, ``Gamma`` on rates, ``Normal`` on Normal locs) makes the update the MAP:
e.g. :math:`p_c \propto \sum w [x = c] + \alpha_c - 1`.

Locations are updated first, then scales given the new locations (conditional
maximisation: the exact joint maximiser whenever each location is shared only by
positions with the same scale, as in every mixture; otherwise still monotone, ECM).
Every other parameter goes to the numerical M-step
(:class:`~pyroem.infer.mstep.numerical.NumericalMStep`), and so does a parameter whose
closed-form value is rejected (it breaks the parameter's constraint, e.g. a negative mean
declared positive, or is not finite): that is reported by a ``UserWarning``, once per
:class:`AutoMStep` and parameter.

Limitations: when the E-step's trace is not current (another E-step ran in between) the
model is run again for the M-step, so a subsampling plate must be given its indices
(``pyro.plate(..., subsample=idx)``) for both runs to see the same items; a
:class:`~pyro.nn.PyroModule` is passed as the module itself (``EM(module)``) so that its
``PyroParam`` s are ``pyro.param`` s.
"""

import warnings
from collections import defaultdict

import pyro
import torch
from pyro.distributions import DiscreteHMM
from torch.distributions import constraints, transform_to

from pyroem.infer.estep import guess_max_plate_nesting
from pyroem.infer.mstep.grouping import from_repeats, group
from pyroem.infer.mstep.numerical import NumericalMStep
from pyroem.infer.mstep.provenance import Selection, tracked_trace
from pyroem.infer.mstep.rules import WeightedSite, registry


def _label(entries):
    """``"closed-form:<Families>[+<Prior>(MAP)]"`` for the statistics of one parameter."""
    families = sorted({s.family for _, s in entries if not s.prior})
    priors = sorted({s.family for _, s in entries if s.prior})
    label = "closed-form:" + "+".join(families or priors)
    if priors and families:
        label += "+" + "+".join(f"{p}(MAP)" for p in priors)
    return label


def _current(name):
    """A parameter's value now (after the first phase's assignments)."""
    return pyro.get_param_store()[name].detach()


def _unconstrained(name):
    """The stored (unconstrained) tensor of a parameter, read without Pyro's effect
    handlers (a handful per parameter and step)."""
    return pyro.get_param_store()._params[name]


def pulled_sums(entries):
    """``(num, den)`` of one parameter: its sites' statistics pulled onto its entries and
    summed (``den`` ``None`` when no site has one); second-phase statistics read the
    parameters' current values (:func:`_current`)."""
    pulled = [s.pulled(_current) for _, s in entries]
    num = sum(p[0] for p in pulled)
    dens = [p[1] for p in pulled if p[1] is not None]
    return num, (sum(dens) if dens else None)


def _solve(entries, old):
    """The rule's maximiser on the statistics of one parameter, summed over its sites."""
    stats = entries[0][1]
    return stats.solver.maximize(stats.arg, *pulled_sums(entries), old)


def _stacked_marginals(group, marginals):
    """The marginals of a group of repeats stacked: the E-step's stack when the
    posterior's marginals are its views, else stacked here."""
    first, last = (marginals[s["name"]] for s in (group.sites[0], group.sites[-1]))
    if group.marginal is not None and first._base is group.marginal is last._base:
        return group.marginal
    return torch.stack([marginals[s["name"]] for s in group.sites])


def _views(trace, posterior, names, repeats):
    """A :class:`~pyroem.infer.mstep.rules.WeightedSite` per sample site with a marginal,
    except that the E-step's groups of repeats (``repeats``) come as one stacked view at
    their first site."""
    first = {id(g.sites[0]): g for g in repeats}
    later = {id(s) for g in repeats for s in g.sites[1:]}
    views = []
    for name, site in trace.nodes.items():
        # Deterministic sites carry no factor; integrated-out sites (missing values of
        # obs_mask) have no marginal.
        if (site["type"] != "sample" or site["infer"].get("_deterministic")
                or name not in posterior.marginals or id(site) in later):
            continue
        if id(site) in first:
            weights = _stacked_marginals(first[id(site)], posterior.marginals)
            views.append(from_repeats(first[id(site)].sites, weights, names))
            continue
        weight = posterior.marginals[name]
        scale = site["scale"]
        if not (isinstance(scale, (int, float)) and scale == 1.0):
            weight = weight * scale
        views.append(WeightedSite(site, weight, names, posterior.chains.get(name)))
    return views


def _assign(name, value):
    """Set the parameter ``name`` to ``value``; the reason when it cannot, else ``None``."""
    constraint = pyro.get_param_store()._constraints.get(name, constraints.real)
    if not bool(torch.isfinite(value).all()):
        return "is not finite"
    if not bool(constraint.check(value).all()):
        return f"breaks the parameter's constraint ({constraint})"
    with torch.no_grad():
        unconstrained = _unconstrained(name)
        new = transform_to(constraint).inv(value).to(unconstrained.dtype)
        if not bool(torch.isfinite(new).all()):
            return f"lies on the boundary of the parameter's constraint ({constraint})"
        unconstrained.copy_(new)
    return None


class AutoMStep:
    r"""
    M-step for a model without its own closed form: recognised parameters get the
    closed-form (weighted MLE or MAP) update of their rule, the others L-BFGS on
    :math:`Q`.

    After each call :attr:`strategies` maps each parameter name to the strategy used:
    ``"closed-form:<Family>"`` (e.g. ``"closed-form:MultivariateNormal"``,
    ``"closed-form:Categorical+Dirichlet(MAP)"``), ``"numerical"`` or ``"unused"`` (no
    site depends on it).

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
        self._warned = set()
        self._modules = set()  # parameters of pyro.module s seen in the last analysis
        # why a parameter got no closed form although a rule handles a site it reaches
        self._reasons = {}

    def __call__(self, posterior, *args, **kwargs):
        """Update the parameters in place; returns (and sets) :attr:`strategies`."""
        routes = self._routes(posterior, args, kwargs, assign=True)
        numerical = {p for p, r in routes.items() if r == "numerical"}
        self._warn_modules(numerical & self._modules)
        self._warn_unrecognised(numerical - self._modules)
        if numerical and self.numerical:
            NumericalMStep(self.model, self.max_plate_nesting,
                           max_iter=self.numerical_max_iter)(posterior, numerical, *args, **kwargs)
        self.strategies = routes
        return self.strategies

    def routes(self, posterior, *args, **kwargs):
        """The route each parameter would take in a call with ``posterior``, found
        without changing any parameter (a closed form is tried, then undone, so that a
        rejected one shows as ``"numerical"``)."""
        return self._routes(posterior, args, kwargs, assign=False)

    def _routes(self, posterior, args, kwargs, assign):
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(self.model, args, kwargs)
        with torch.no_grad():
            _, leaves, stats, other = self._analyse(posterior, args, kwargs)
        if not leaves.leaves:
            raise ValueError(
                "The model has no pyro.param statement for EM to update. Declare the "
                "parameters with pyro.param(name, init, constraint=...) inside the model; for "
                "a PyroModule pass the module itself (EM(module)), not its forward method, so "
                "that its PyroParams are seen as pyro.params.")
        routes, closed = {}, {}
        for param in leaves.leaves:
            keys = {s.key for _, s in stats.get(param, [])}
            if len(keys) > 1 and param not in other:
                self._reasons[param] = ("its sites need different closed forms ("
                                        + ", ".join(sorted(str(k[1]) for k in keys)) + ")")
            if param in other or len(keys) != 1:
                routes[param] = "numerical" if (param in other or keys) else "unused"
            else:
                closed[param] = stats[param]
        saved = {} if assign else {p: _unconstrained(p).detach().clone()
                                   for p in closed}
        try:
            routes.update(self._closed_forms(closed, leaves, assign))
        finally:
            with torch.no_grad():
                for p, value in saved.items():  # routes() leaves the parameters as found
                    _unconstrained(p).copy_(value)
        return dict(sorted(routes.items()))

    def _analyse(self, posterior, args, kwargs):
        """The tracked trace, its leaves, ``{param: [(site, Stats)]}`` and the parameters
        reached in ways no rule recognises."""
        tracked = getattr(posterior.trace, "tracked", None)
        if tracked is not None and tracked.current(args, kwargs):
            # the E-step's, still current, with the repeats it found
            trace, leaves, repeats = posterior.trace, tracked.leaves, tracked.groups
        else:
            trace, leaves = tracked_trace(self.model, args, kwargs, self.max_plate_nesting)
            repeats = []
        self._modules = set(leaves.modules)
        views = _views(trace, posterior, leaves.names_by_id(), repeats)
        stats, other = defaultdict(list), set()
        # the repeated sites of a chain (one per step) go to their rule stacked
        self._reasons = {}
        for name, view in group(views):
            site_stats, site_other = registry.view_statistics(view)
            for s in site_stats:
                stats[s.param].append((name, s))
            other |= site_other
            self._note_unrecognised(name, view, site_other)
        return trace, leaves, stats, other

    def _note_unrecognised(self, name, view, params):
        """Remember why ``params``, reached at a site whose family has a rule, got no
        closed form from it (the way they reach its arguments is not a selection). A
        ``DiscreteHMM`` off the vectorised route has said so in the E-step."""
        if isinstance(view.fn, DiscreteHMM) or registry.lookup(view.fn) is None:
            return
        family = type(view.fn).__name__
        selected = set()
        for arg in view.arguments().values():
            sel = Selection.find(arg, view.names) if torch.is_tensor(arg) else None
            if sel is not None:
                selected.add(sel.name)
        for param in params:
            self._reasons.setdefault(param, (
                f"the {family} rule has no closed form for it at site '{name}' given the "
                "site's other learnt arguments (e.g. a learnt Gamma concentration)"
                if param in selected else
                f"it reaches site '{name}' ({family}) through operations that are not a "
                "selection of it (indexing, expanding, reshaping), which no rule inverts"))

    def _closed_forms(self, closed, leaves, assign):
        """Solve and assign the closed forms, locations first, then scales about the new
        locations (read from the parameters just set: no second run of the model).
        Returns each parameter's route."""
        routes = {}
        for phase in (0, 1):
            todo = [p for p, entries in closed.items() if entries[0][1].phase == phase]
            for param in todo:
                with torch.no_grad():
                    new = _solve(closed[param], leaves.leaves[param].detach())
                label = _label(closed[param])
                reason = _assign(param, new)
                if reason is None:
                    routes[param] = label
                else:
                    routes[param] = "numerical"
                    if assign:
                        self._warn(param, label, reason)
        return routes

    def _warn_modules(self, params):
        """Say once which parameters of ``pyro.module`` s have no closed form and how
        they are updated instead (a network's weights reach a site through its layers)."""
        new = sorted(p for p in params if ("module", p) not in self._warned)
        if not new:
            return
        self._warned.update(("module", p) for p in new)
        route = ("maximised numerically (L-BFGS on Q with q fixed: generalised EM)"
                 if self.numerical else "left unchanged (numerical=False)")
        warnings.warn(f"AutoMStep: the pyro.module parameter(s) {', '.join(new)} reach the "
                      "model's sites through operations no M-step rule inverts in closed "
                      f"form; they are {route}", UserWarning)

    def _warn_unrecognised(self, params):
        """Say once per parameter why one that a rule's site uses has no closed form
        and how it is updated instead (a parameter of a family without a rule is
        maximised numerically as documented, and shown in the plan)."""
        route = ("is maximised numerically instead (L-BFGS on Q with q fixed: generalised "
                 "EM, much slower)" if self.numerical else "is left unchanged (numerical=False)")
        for param in sorted(params):
            reason = self._reasons.get(param)
            if reason is None or ("unrecognised", param) in self._warned:
                continue
            self._warned.add(("unrecognised", param))
            warnings.warn(f"AutoMStep: parameter '{param}' has no closed-form update: "
                          f"{reason}; it {route}", UserWarning)

    def _warn(self, param, label, reason):
        if param in self._warned:
            return
        self._warned.add(param)
        fallback = ("is maximised numerically instead" if self.numerical
                    else "is left unchanged (numerical=False)")
        warnings.warn(f"AutoMStep: the {label} update of parameter '{param}' {reason}; "
                      f"'{param}' {fallback}", UserWarning)
