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
from torch.distributions import Distribution

from pyroem.infer.mstep.rules.base import derived

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


def _frozen(value):
    if torch.is_tensor(value):
        if value.numel() > MAX_SAVED:
            raise _Ungroupable
        return (tuple(value.shape), str(value.dtype), tuple(value.reshape(-1).tolist()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype)):
        return value
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


def site_key(view):
    """The key under which ``view`` (a :class:`~pyroem.infer.mstep.rules.WeightedSite`)
    groups with its repeats, or ``None`` when it is taken alone."""
    if view.chain is not None or not torch.is_tensor(view.value) or view.value.requires_grad:
        return None
    try:
        args = []
        for key, value in sorted(vars(view.fn).items()):
            if isinstance(value, Distribution):
                return None
            if torch.is_tensor(value) and key not in view._ignored and not derived(view.fn, key):
                args.append((key, signature(value, view.names)))
    except _Ungroupable:
        return None
    return (type(view.fn), tuple(args), tuple(view.weight.shape), tuple(view.value.shape),
            view.value.dtype)


def stacked(views):
    """One view of the repeats ``views``: the first one's distribution, their weights and
    values stacked along a new leading dim."""
    if len(views) == 1:
        return views[0]
    view = copy.copy(views[0])
    # the new dim left of every batch dim of every operand: weights are laid out like the
    # distribution's batch, values have its event dims on the right
    fn = view.fn
    event = len(fn.event_shape)
    depth = max([view.weight.dim(), view.value.dim()]
                + [t.dim() for t in vars(fn).values() if torch.is_tensor(t)])

    def padded(t, extra=0):
        return t.reshape((1,) * (depth + extra - t.dim()) + tuple(t.shape))

    view.weight = torch.stack([padded(v.weight) for v in views])
    view.value = torch.stack([padded(v.value, event) for v in views])
    view.other = set().union(*(v.other for v in views))
    view._ignored = set(views[0]._ignored)
    return view


def group(views):
    """``[(first site's name, stacked view)]``: the views grouped by :func:`site_key`, in
    the order of their first site."""
    groups = OrderedDict()
    for view in views:
        key = site_key(view)
        groups.setdefault(key if key is not None else ("alone", id(view)), []).append(view)
    return [(members[0].name, stacked(members)) for members in groups.values()]
