r"""
Repeated sites, stacked: the sites of a ``pyro.markov`` loop (one transition and one
emission per step) are the same factor over and over, and their statistics are linear in
their weights, so the rule can see them all at once.

Two sites are *repeats* when their distributions are the same function of the
parameters: same type, every argument computed by the same autograd graph (same
operations, same saved indices and constants, same parameters at the leaves), and their
weights and values of one shape. Then for every parameter :math:`\eta` that an argument
selects, :math:`a = S \eta` with the same :math:`S`, and

.. math:: \sum_g S^\top \mathrm{stat}(w_g, x_g) = S^\top \mathrm{stat}(w_{1:G}, x_{1:G}),

where the right-hand side is the rule run once on the weights and values stacked along a
new leading dim (the rules reduce every dim an argument does not have). A ``T``-step
chain then costs a few rule calls instead of ``2T``. Sites with anything else in their
arguments (a network's output, a nested distribution, a parameter as value) are taken
one by one, as before.
"""

import copy
from collections import OrderedDict

import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import Distribution, Independent

from pyroem.infer.mstep.rules.base import _NOT_ARGUMENTS, WeightedSite, _masked_value, derived

#: Largest saved tensor (entries) compared by value in a signature; a graph that saves a
#: larger one (data-sized) is not grouped.
MAX_SAVED = 256

_SAVED_ATTRS = {}


def _saved_attrs(node):
    kind = type(node)
    if kind not in _SAVED_ATTRS:
        _SAVED_ATTRS[kind] = tuple(a for a in dir(node) if a.startswith("_saved_"))
    return _SAVED_ATTRS[kind]


class _Ungroupable(Exception):
    pass


_ATOMS = (bool, int, float, str, torch.dtype, type(None))


def _frozen(value):
    if isinstance(value, _ATOMS):
        return value
    if type(value) is torch.Size:
        return tuple(value)
    if isinstance(value, (list, tuple)):
        return tuple(v if isinstance(v, _ATOMS) else _frozen(v) for v in value)
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            # an input or output of the node (or computed from them): the walk describes
            # how it is computed, so its shape is enough
            return ("grad", tuple(value.shape))
        if value.numel() > MAX_SAVED:
            raise _Ungroupable
        return (tuple(value.shape), value.dtype, tuple(value.reshape(-1).tolist()))
    try:
        return int(value)  # SymInt
    except (TypeError, ValueError):
        raise _Ungroupable from None


def signature(tensor, names):
    """A hashable description of how ``tensor`` is computed from the tracked parameters
    (``names``: ``{id(leaf): name}``): the autograd graph's operations with their saved
    values, and the parameters at its leaves; for a tensor without a graph, its value."""
    if not torch.is_tensor(tensor):
        raise _Ungroupable
    if not tensor.requires_grad:
        return ("constant", _frozen(tensor.reshape(-1)[:1] if _expanded(tensor) else tensor))
    if tensor.grad_fn is None:
        if id(tensor) not in names:
            raise _Ungroupable
        return ("param", names[id(tensor)])
    out, seen, stack = [], {}, [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None:
            out.append(None)
            continue
        if id(node) in seen:
            out.append(("seen", seen[id(node)]))
            continue
        seen[id(node)] = len(seen)
        variable = getattr(node, "variable", None)
        if variable is not None:
            if id(variable) not in names:
                raise _Ungroupable
            out.append(("param", names[id(variable)]))
            continue
        try:
            saved = tuple(_frozen(getattr(node, a)) for a in _saved_attrs(node))
        except RuntimeError:  # freed buffers
            raise _Ungroupable from None
        out.append((type(node).__name__, saved))
        stack.extend(f for f, _ in node.next_functions)
    return tuple(out) + (tuple(tensor.shape),)


def _expanded(tensor):
    """Whether every entry of ``tensor`` is one stored value (a broadcast constant)."""
    return tensor.numel() > 0 and all(s == 0 for s in tensor.stride())


# in the key as the distribution's batch and event shapes
_SHAPES = frozenset({"_batch_shape", "_event_shape"})


def _values(tensor):
    """The distinct values of an argument (expanded dims cut), as a hashable key."""
    compact = tensor.detach()
    for dim, (size, stride) in enumerate(zip(compact.shape, compact.stride())):
        if stride == 0 and size > 1:
            compact = compact.narrow(dim, 0, 1)
    if compact.numel() > MAX_SAVED:
        raise _Ungroupable
    return tuple(compact.shape), tuple(compact.reshape(-1).tolist())


def _arguments_key(fn, ignored, names):
    """The signatures of ``fn``'s tensor arguments (not the derived ones) and their
    values, or ``None`` when one of them cannot be described (or is a nested
    distribution). The values close what a graph does not record: an operation saves
    only what its gradient needs, so ``locs[z] + c_t`` has the same graph for every
    constant ``c_t``; equal graphs *and* equal values make the same function."""
    try:
        args, settings = [], []
        for key, value in sorted(vars(fn).items()):
            if isinstance(value, Distribution):
                return None
            if torch.is_tensor(value):
                if key not in ignored and not derived(fn, key):
                    args.append((key, signature(value, names), _values(value)))
            elif key not in _SHAPES:  # plain settings (an event dim, a count) count too
                settings.append((key, _frozen(value)))
    except (_Ungroupable, TypeError):  # TypeError: a setting that cannot be hashed
        return None
    key = (type(fn), tuple(fn.batch_shape), tuple(fn.event_shape), tuple(settings),
           tuple(args))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def site_key(view):
    """The key under which ``view`` (a :class:`~pyroem.infer.mstep.rules.WeightedSite`)
    groups with its repeats, or ``None`` when it is taken alone."""
    if view.chain is not None or not torch.is_tensor(view.value) or view.value.requires_grad:
        return None
    args = _arguments_key(view.fn, view._ignored, view.names)
    if args is None:
        return None
    return (args, tuple(view.weight.shape), tuple(view.value.shape), view.value.dtype)


def _wrappers(fn):
    """The chain of ``Independent`` / ``Expanded`` wrappers around the base distribution
    (types and shapes), and the base; ``None`` for a masked one."""
    chain = []
    while isinstance(fn, (Independent, ExpandedDistribution, MaskedDistribution)):
        if isinstance(fn, MaskedDistribution):
            return None, None
        chain.append((type(fn), tuple(fn.batch_shape), tuple(fn.event_shape)))
        fn = fn.base_dist
    return tuple(chain), fn


def trace_site_key(site, names):
    """The key under which a sample site of a tracked trace (before its log-prob is
    computed) groups with its repeats, or ``None``: the same distribution (wrappers
    included) as the same function of the parameters, a value of the same shape, no
    mask and no scale. Repeats then have equal log-prob tables up to their values, and
    their marginals stack into one :func:`site_key` group."""
    value, scale = site["value"], site["scale"]
    if (site["mask"] is not None or site["args"] or site["kwargs"] or site.get("_chain")
            or not torch.is_tensor(value) or value.requires_grad
            or not (isinstance(scale, (int, float)) and scale == 1.0)):
        return None
    chain, base = _wrappers(site["fn"])
    if chain is None:
        return None
    args = _arguments_key(base, _NOT_ARGUMENTS, names)
    if args is None:
        return None
    return (chain, args, site["is_observed"], tuple(value.shape), value.dtype)


def _depths(view):
    """How many dims one repeat's weight and value take once the new leading dim is left
    of every batch dim of every operand: weights are laid out like the distribution's
    batch, values have its event dims on the right."""
    fn = view.fn
    depth = max([view.weight.dim(), view.value.dim()]
                + [t.dim() for t in vars(fn).values() if torch.is_tensor(t)])
    return depth, depth + len(fn.event_shape)


def _under(stack, member_shape, depth):
    """``stack`` (repeats along dim 0, each of ``member_shape``) with each repeat padded
    by leading ones to ``depth`` dims."""
    return stack.reshape((stack.shape[0],) + (1,) * (depth - len(member_shape))
                         + tuple(member_shape))


def stacked(views):
    """One view of the repeats ``views``: the first one's distribution, their weights and
    values stacked along a new leading dim."""
    if len(views) == 1:
        return views[0]
    view = copy.copy(views[0])
    weight_depth, value_depth = _depths(view)
    view.weight = _under(torch.stack([v.weight for v in views]), view.weight.shape,
                         weight_depth)
    view.value = _under(torch.stack([v.value for v in views]), view.value.shape, value_depth)
    view.other = set().union(*(v.other for v in views))
    view._ignored = set(views[0]._ignored)
    return view


def from_repeats(sites, weights, names):
    """The view of :func:`stacked` for the repeats of an E-step's
    :class:`~pyroem.infer.repeats.SiteGroup` (no mask, no scale, no chain), from their
    marginals ``weights`` already stacked along dim 0: no view per site."""
    view = WeightedSite(sites[0], weights[0], names)
    weight_depth, value_depth = _depths(view)
    view.weight = _under(weights.reshape((len(sites),) + tuple(view.weight.shape)),
                         view.weight.shape, weight_depth)
    values = _masked_value(torch.stack([s["value"] for s in sites]))
    view.value = _under(values, view.value.shape, value_depth)
    view.prestacked = True
    return view


def group(views):
    """``[(first site's name, stacked view)]``: the views grouped by :func:`site_key`, in
    the order of their first site (a view of :func:`from_repeats` stays as it is)."""
    groups = OrderedDict()
    for view in views:
        key = None if getattr(view, "prestacked", False) else site_key(view)
        groups.setdefault(key if key is not None else ("alone", id(view)), []).append(view)
    return [(members[0].name, stacked(members)) for members in groups.values()]
