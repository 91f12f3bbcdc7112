r"""
The pieces of an automatic M-step rule: the site as a rule sees it
(:class:`WeightedSite`), the statistics a rule hands back (:class:`Stats`) and the rule
base class (:class:`MStepRule`).

A rule turns one sample site into expected sufficient statistics for the parameters its
distribution arguments select. For a site with posterior weight :math:`w` (the E-step's
marginal of the site's factor), value :math:`x` and an argument :math:`a = S\eta` that is a
selection of a parameter :math:`\eta` (:class:`~pyroem.infer.mstep.provenance.Selection`),
the rule returns statistics laid out like :math:`a`; the automatic M-step pulls them onto
:math:`\eta` with :math:`S^\top`, sums them over every site that uses :math:`\eta`, and calls
the rule's :meth:`~MStepRule.maximize`.
"""

import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import Distribution, Independent
from torch.distributions.utils import lazy_property

from pyroem.distributions.features import all_finite
from pyroem.infer.mstep.provenance import Selection, params_reached
from pyroem.infer.mstep.reduce import weighted_sum

# Attributes that never carry a parameter of their own (cached derivatives, shapes).
_NOT_ARGUMENTS = frozenset({"_param", "_unbroadcasted_scale_tril", "_batch_shape",
                            "_event_shape"})


def derived(fn, attr):
    """Whether ``attr`` of ``fn`` is a cached lazy property computed from another of its
    attributes (``logits`` from ``probs`` by a ``log_prob``), not the argument it was
    given (torch declares both ``probs`` and ``logits`` lazy: the given one is set by
    the constructor, the other is computed from it, so its graph reaches the given one)."""
    value = vars(fn).get(attr)
    if (not isinstance(getattr(type(fn), attr, None), lazy_property)
            or not torch.is_tensor(value) or value.grad_fn is None):
        return False
    others = [v for k, v in vars(fn).items()
              if torch.is_tensor(v) and v is not value and k not in _NOT_ARGUMENTS]
    if not others:
        return False  # nothing it could be derived from
    nodes = {id(v.grad_fn) for v in others if v.grad_fn is not None}
    leaves = {id(v) for v in others}
    stack, seen = [value.grad_fn], 0
    while stack and seen < 16:  # the derivation is a few elementwise ops
        node = stack.pop()
        seen += 1
        if node is None:
            continue
        if id(node) in nodes or id(getattr(node, "variable", None)) in leaves:
            return True
        stack.extend(f for f, _ in node.next_functions)
    return False


def unwrap(fn):
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


def _masked_weight(weight, extra, masks):
    # The weight in the base distribution's batch shape, times its masks: a masked
    # log-prob is 0, but the marginal there is not.
    weight = weight.reshape(weight.shape + (1,) * extra)
    for mask, level in masks:
        if torch.is_tensor(mask):
            weight = weight * mask.to(weight.dtype).reshape(mask.shape + (1,) * (extra - level))
        elif not mask:
            weight = weight * 0
    return weight


def _masked_value(value):
    """The site's value with non-finite entries as 0: the E-step has checked that every
    observed value its mask keeps is finite, so these are values ``obs_mask`` marks
    missing (weight 0), which must not turn a statistic ``0 * nan`` into NaN."""
    if (torch.is_tensor(value) and value.is_floating_point() and not value.requires_grad
            and not all_finite(value)):
        return torch.where(torch.isfinite(value), value, torch.zeros((), dtype=value.dtype))
    return value


class WeightedSite:
    r"""
    One sample site as a rule sees it.

    :ivar str name: the site's name.
    :ivar fn: its distribution without Masked/Independent/Expanded wrappers.
    :ivar torch.Tensor weight: the posterior weight :math:`w` of each position (data item
        times enumerated values), in ``fn``'s batch shape and times the masks.
    :ivar torch.Tensor value: the site's value :math:`x` (a parameter for a prior factor;
        missing values of ``obs_mask``, weight 0, read as 0).

    :ivar chain: the E-step's :class:`~pyroem.infer.chains.ChainStatistics` of a
        ``DiscreteHMM`` site that took the vectorised route, else ``None``.
    :ivar set other: parameters that a rule found reached in ways it cannot maximise
        (e.g. inside an observation distribution it handed to another rule).
    """

    def __init__(self, site, weight, names, chain=None):
        self.name = site["name"]
        self.fn, extra, masks = unwrap(site["fn"])
        self.weight = _masked_weight(weight, extra, masks)
        self.value = _masked_value(site["value"])
        self.chain = chain
        self.other = set()
        self._names = names
        self._ignored = set(_NOT_ARGUMENTS)

    def select(self, arg, normalised=False):
        """The :class:`~pyroem.infer.mstep.provenance.Selection` of a parameter that the
        argument ``arg`` (as given to the constructor) is, or ``None``. With
        ``normalised=True`` one normalisation on top is allowed (``Categorical`` does it)."""
        return Selection.find(vars(self.fn).get(arg), self._names, normalised=normalised)

    def select_log(self, arg):
        """The selection of a parameter that ``arg`` is, allowing Pyro's normalisation on
        top and one ``log`` (``DiscreteHMM(probs.log(), ...)``: :attr:`Selection.log`)."""
        return Selection.find(vars(self.fn).get(arg), self._names, normalised=True, log=True)

    @property
    def names(self):
        """``{id(leaf): parameter name}`` of the tracked parameters."""
        return self._names

    def select_value(self):
        """The selection of a parameter that the value is (a prior factor), or ``None``."""
        return Selection.find(self.value, self._names)

    def reaches(self, tensor):
        """The names of the parameters that ``tensor`` (or a distribution: any of its
        arguments, recursively) depends on in any way."""
        if isinstance(tensor, Distribution):
            found = set()
            for value in vars(tensor).values():
                if torch.is_tensor(value) or isinstance(value, Distribution):
                    found |= self.reaches(value)
            return found
        return params_reached(tensor, self._names)

    def ignore(self, *attrs):
        """Mark attributes as derived from another argument (``logits`` from ``probs``),
        so that they do not count as another use of the parameter."""
        self._ignored.update(attrs)

    def arguments(self, skip=()):
        """``{attribute: tensor or distribution}`` of the distribution's tensor attributes
        and nested distributions (``DiscreteHMM``'s ``observation_dist``), except the
        derived ones (marked, or cached lazy properties such as ``logits`` computed from
        ``probs`` by a ``log_prob``) and ``skip``."""
        return {k: v for k, v in vars(self.fn).items()
                if (torch.is_tensor(v) or isinstance(v, Distribution))
                and k not in self._ignored and k not in skip and not derived(self.fn, k)}

    @staticmethod
    def sum(operands, target):
        r""":func:`~pyroem.infer.mstep.reduce.weighted_sum` of the broadcast product of
        ``operands`` reduced to ``target`` (a shape, or a selection's :attr:`shape`)."""
        shape = target.shape if isinstance(target, Selection) else target
        return weighted_sum(operands, shape)


class Stats:
    r"""
    What one site contributes to the closed-form update of one parameter.

    :param str arg: the argument it is for (``"rate"``, ``"loc"``, ...); with ``solver`` it
        names the maximiser, and the statistics of one parameter are combined only when
        they name the same one.
    :param selection: the :class:`~pyroem.infer.mstep.provenance.Selection` of the
        parameter in the argument.
    :param solver: the rule whose :meth:`~MStepRule.maximize` applies (a rule for a
        conjugate prior names the likelihood's rule).
    :param torch.Tensor num: numerator, shape ``selection.shape``.
    :param torch.Tensor den: denominator, same shape, or ``None``.
    :param callable later: instead of ``num, den`` for a second-phase argument:
        ``later(current) -> (num, den)``, where ``current(name)`` is the value of a
        parameter after the first phase (so a scale reads the new locations, e.g. through
        :meth:`~pyroem.infer.mstep.provenance.Selection.push`).
    """

    def __init__(self, arg, selection, solver, num=None, den=None, later=None):
        self.arg = arg
        self.selection = selection
        # a rule class (as a prior names its likelihood's rule) stands for an instance
        self.solver = solver() if isinstance(solver, type) else solver
        self.num, self.den, self.later = num, den, later
        self.family = None  # set by the dispatch: the site's family, for the report
        self.prior = False

    @property
    def param(self):
        return self.selection.name

    @property
    def key(self):
        """``(maximiser, arg)``: equal for statistics that one update can combine."""
        maximize = self.solver.maximize
        return getattr(maximize, "__func__", maximize), self.arg

    @property
    def phase(self):
        return 1 if self.arg in self.solver.second_phase else 0

    def pulled(self, current=None):
        r"""``(num, den)`` on the parameter's entries (:math:`S^\top`); ``current`` as for
        ``later``."""
        num, den = (self.num, self.den) if self.later is None else self.later(current)
        sel = self.selection
        return sel.pull(num), (None if den is None else sel.pull(den))


class MStepRule:
    r"""
    Closed-form M-step for the parameters of one distribution family.

    A subclass sets :attr:`types` and implements :meth:`statistics` and :meth:`maximize`;
    :func:`~pyroem.infer.mstep.rules.register_rule` makes the automatic M-step use it for
    every site whose distribution is one of :attr:`types` (or a subclass).

    :cvar tuple types: the distribution classes the rule handles.
    :cvar bool prior: ``True`` for a conjugate prior written as a factor on the parameter,
        ``pyro.sample(name, Prior(...), obs=param)``: the rule then sees sites whose
        *value* is the parameter, and its statistics name the likelihood's rule as solver.
    :cvar tuple second_phase: the arguments updated after the others, given their new
        values (scales after locations).
    :cvar str family: the name in the report (``"closed-form:<family>"``); ``None`` for
        the distribution's class name.
    """

    types = ()
    prior = False
    second_phase = ()
    family = None

    def statistics(self, site):
        """The :class:`Stats` of the parameters that ``site`` (a :class:`WeightedSite`)
        selects in the arguments this rule recognises; an argument not returned still
        counts as a use of any parameter it reaches (which then goes numerical)."""
        raise NotImplementedError

    def maximize(self, arg, num, den, old):
        r"""The new value of a parameter from its summed statistics ``num, den`` (``den``
        ``None`` when no statistics had one) and its ``old`` value; keep ``old`` where the
        statistics carry no information (e.g. :math:`\sum w = 0`)."""
        raise NotImplementedError


def safe_ratio(num, den, old):
    r""":math:`\text{num}/\text{den}` where :math:`\text{den} > 0`, else ``old``."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, 1), old)
