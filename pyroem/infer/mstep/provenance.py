r"""Which ``pyro.param`` flows into which distribution argument of a model.

The automatic M-step (:mod:`pyroem.infer.mstep.auto`) traces the model once with every
parameter replaced by an autograd leaf holding its current value. A distribution
argument ``a`` that is a pure *selection* of a parameter ``p`` -- ``p`` itself, or ``p``
indexed by an enumerated variable (``p[z]``), expanded by a plate, reshaped or permuted --
is a linear map :math:`a = S p` whose matrix has exactly one 1 per row. Its transpose
:math:`S^\top` scatter-adds a statistic laid out like ``a`` onto the entries of ``p``: that
is how per-site expected sufficient statistics become per-parameter statistics, whatever
the indexing. :math:`S^\top` is applied by calling the autograd nodes of the chain.
"""

import pyro
import torch
from pyro import poutine
from pyro.params.param_store import _MODULE_NAMESPACE_DIVIDER as _MODULE_DIVIDER
from pyro.poutine.messenger import Messenger

# Autograd nodes of maps that only select, repeat or rearrange entries (0/1 matrices
# with one 1 per output entry), so that the transpose is a scatter-add.
_SELECTION_NODES = frozenset({
    "ExpandBackward0", "IndexBackward0", "UnsqueezeBackward0", "SqueezeBackward0",
    "SqueezeBackward1", "SqueezeBackward2", "ViewBackward0", "UnsafeViewBackward0",
    "ReshapeAliasBackward0", "PermuteBackward0", "TransposeBackward0", "TransposeBackward1",
    "TBackward0", "SelectBackward0", "SliceBackward0", "CloneBackward0", "AliasBackward0",
    "IndexSelectBackward0", "ExpandAsBackward0", "ContiguousBackward0",
})


class ParamLeaves(Messenger):
    """Replace every ``pyro.param`` value by a detached leaf that requires grad (one leaf
    per name), so that autograd records how each parameter reaches each site.

    The parameters of a ``pyro.module`` (names ``module$$$param``) are the module's own
    ``nn.Parameter`` s, which its ``forward`` uses whatever ``pyro.param`` returns: they
    are their own leaves (kept as they are), listed in :attr:`modules`."""

    def __init__(self):
        super().__init__()
        self.leaves = {}
        self.modules = set()

    def _pyro_param(self, msg):
        name = msg["name"]
        if name not in self.leaves:
            value = msg["fn"](*msg["args"], **msg["kwargs"])
            if _MODULE_DIVIDER in name and isinstance(value, torch.nn.Parameter):
                self.modules.add(name)
                self.leaves[name] = value
            else:
                self.leaves[name] = value.detach().requires_grad_()
        msg["value"] = self.leaves[name]
        msg["done"] = True

    def names_by_id(self):
        return {id(leaf): name for name, leaf in self.leaves.items()}


def tracked_trace(model, args, kwargs, max_plate_nesting):
    """Trace ``model`` under parallel enumeration (as the E-step does) with parameters
    replaced by tracked leaves. Returns ``(trace, ParamLeaves)``."""
    from pyro.infer.enum import config_enumerate
    from pyro.poutine.util import prune_subsample_sites

    enum_model = poutine.enum(config_enumerate(model, default="parallel"),
                              first_available_dim=-1 - max_plate_nesting)
    leaves = ParamLeaves()
    with torch.enable_grad(), leaves:
        trace = poutine.trace(enum_model).get_trace(*args, **kwargs)
    return prune_subsample_sites(trace), leaves


class TracedWith:
    """What a tracked trace was run with: its :class:`ParamLeaves`, the model's arguments,
    and the version of every parameter's stored tensor, so that a later step can tell
    whether the trace still describes the model (:meth:`current`); and the repeated
    sites the E-step found in it (:attr:`groups`, :class:`~pyroem.infer.repeats.SiteGroup`)."""

    def __init__(self, leaves, args, kwargs):
        self.leaves = leaves
        self.groups = []
        self.args, self.kwargs = args, kwargs
        self._versions = self._snapshot(leaves.leaves)

    @staticmethod
    def _snapshot(names):
        store = pyro.get_param_store()._params
        return {n: (id(store[n]), store[n]._version) if n in store else None for n in names}

    def current(self, args, kwargs):
        """Whether the same arguments (the same objects) are given and no parameter has
        changed (in place or replaced) since the trace."""
        same_args = (len(args) == len(self.args) and all(a is b for a, b in zip(args, self.args))
                     and kwargs.keys() == self.kwargs.keys()
                     and all(kwargs[k] is self.kwargs[k] for k in kwargs))
        return same_args and self._snapshot(self.leaves.leaves) == self._versions


def params_reached(tensor, names_by_id):
    """Names of the tracked parameters that ``tensor`` depends on (any path)."""
    if not torch.is_tensor(tensor) or not tensor.requires_grad:
        return set()
    if tensor.grad_fn is None:
        name = names_by_id.get(id(tensor))
        return {name} if name is not None else set()
    found, seen, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            name = names_by_id.get(id(variable))
            if name is not None:
                found.add(name)
            continue
        stack.extend(f for f, _ in node.next_functions)
    return found


def compact(tensor):
    """``tensor`` with its expanded (stride-0) dims of size > 1 cut to size 1: the
    distinct values only, as a view."""
    for dim, (size, stride) in enumerate(zip(tensor.shape, tensor.stride())):
        if stride == 0 and size > 1:
            tensor = tensor.narrow(dim, 0, 1)
    return tensor


class Selection:
    r"""
    A distribution argument that is a selection :math:`a = S p` of the parameter ``name``.

    :ivar str name: the parameter.
    :ivar torch.Size shape: the shape of ``a`` before any plate/broadcast expansion
        (the statistics are reduced to it before :meth:`pull`).
    """

    def __init__(self, name, shape, nodes, param_shape, log=False):
        self.name = name
        self.shape = torch.Size(shape)
        self.param_shape = param_shape
        self._nodes = nodes
        #: whether the argument is the log of the selected entries (``probs.log()``)
        self.log = log

    @classmethod
    def find(cls, tensor, names_by_id, normalised=False, log=False):
        """The selection that produced ``tensor``, or ``None`` if ``tensor`` is not a pure
        selection of one parameter. With ``normalised=True`` one normalisation on top
        (``probs / probs.sum(-1)`` or ``logits - logits.logsumexp(-1)``, done by
        ``Categorical``) is allowed, as the M-step sets a normalised value anyway. With
        ``log=True`` one elementwise ``log`` anywhere in the chain is allowed (it commutes
        with a selection): the result's :attr:`log` says whether there was one."""
        if not torch.is_tensor(tensor) or not tensor.requires_grad:
            return None
        if tensor.grad_fn is None:
            name = names_by_id.get(id(tensor))
            return None if name is None else cls(name, tensor.shape, [], tensor.shape)
        node, shape, nodes, took_log = tensor.grad_fn, tensor.shape, [], False
        # Broadcasting on top (plates, broadcast_all) is skipped: statistics are summed
        # over those dims before the pull, which is much cheaper.
        while type(node).__name__ == "ExpandBackward0":
            sizes = getattr(node, "_saved_self_sym_sizes", None)
            if sizes is None:  # then the expand is pulled back like any other node
                break
            shape = torch.Size(sizes)
            node = node.next_functions[0][0]
        while True:
            kind = type(node).__name__
            if kind == "AccumulateGrad":
                name = names_by_id.get(id(node.variable))
                if name is None:
                    return None
                return cls(name, shape, nodes, node.variable.shape, log=took_log)
            if kind == "LogBackward0" and log and not took_log:
                took_log = True
                node = node.next_functions[0][0]
                continue
            # probs / probs.sum(-1) or logits - logits.logsumexp(-1), done by Categorical
            if kind in ("DivBackward0", "SubBackward0") and normalised and not nodes:
                normalised = False
                node = node.next_functions[0][0]
                continue
            if kind not in _SELECTION_NODES:
                return None
            nxt = [f for f, _ in node.next_functions if f is not None]
            if len(nxt) != 1:
                return None
            nodes.append(node)
            node = nxt[0]

    def pull(self, stat):
        r""":math:`S^\top` ``stat``: sum ``stat`` (laid out like the argument, shape
        :attr:`shape`) onto the entries of the parameter."""
        if stat.shape != self.shape:
            raise ValueError(f"statistic of shape {tuple(stat.shape)} for an argument of "
                             f"shape {tuple(self.shape)}")
        grad = stat.contiguous()
        for node in self._nodes:
            out = node(grad)
            grad = out[0] if isinstance(out, tuple) else out
        return grad.reshape(self.param_shape)

    def push(self, value):
        r""":math:`S` ``value``: the argument (shape :attr:`shape`) that a parameter equal to
        ``value`` gives, without running the model again (a scale's update reads the
        locations the same M-step has just set).

        :math:`S` is the transpose of the linear map :meth:`pull`, so
        :math:`S v = \partial \langle S^\top g, v \rangle / \partial g` for any ``g``: one
        backward pass through :meth:`pull`."""
        if not self._nodes:  # the argument is the parameter itself
            return value.reshape(self.shape)
        with torch.enable_grad():
            g = torch.zeros(self.shape, dtype=value.dtype, device=value.device,
                            requires_grad=True)
            pulled = self.pull(g)
            (out,) = torch.autograd.grad(pulled, g, grad_outputs=value.reshape(pulled.shape))
        return out
