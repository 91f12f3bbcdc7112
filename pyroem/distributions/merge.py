r"""
Exact merging of expected sufficient statistics taken about different origins.

A closed-form M-step reads statistics that are sums over data items. Counts and
category counts add as they are. Gaussian moments are taken about a ``shift`` (the data
mean of a batch, or a point per component; see :mod:`pyroem.distributions.statistics`),
and moments about two different origins do not add. Re-expressed about one origin
:math:`o` they do: with :math:`\delta = \text{shift} - o` and :math:`x - o = (x -
\text{shift}) + \delta`,

.. math::

    s_o = s + n\,\delta, \qquad
    S_o = S + s\,\delta^\top + \delta\, s^\top + n\,\delta\delta^\top

(diagonal moments: :math:`S_o = S + 2 s \odot \delta + n\,\delta^2`). This is the exact
pairwise update of Chan, Golub and LeVeque (1979) written for raw moments about a
reference point: summing re-expressed moments equals the moments of the union, so
batches, chunks, online EM and processes can combine their statistics before the M-step.

A statistics dict may hold several such *moment groups*; :data:`MOMENT_GROUPS` lists the
key names ``(count, first, second)`` recognised next to ``"shift"``: ``("n", "sx",
"sxx")`` (Gaussian emissions: ``sxx`` flattened ``D*D`` or diagonal ``D``) and
``("num_speakers", "sum_z", "sum_zz")`` (PLDA's speaker means, a ``(D, D)`` matrix).
Every other entry is a plain sum.
"""

import torch

#: ``(count, first, second)`` keys of moment groups taken about ``stats["shift"]``
MOMENT_GROUPS = (("n", "sx", "sxx"), ("num_speakers", "sum_z", "sum_zz"))


def moment_group(stats):
    """The ``(count, first, second)`` keys of the moment group in ``stats``, or ``None``."""
    for group in MOMENT_GROUPS:
        if all(k in stats for k in group):
            return group
    return None


def _second_update(second, first, n, delta):
    """:math:`s\\delta^\\top + \\delta s^\\top + n \\delta\\delta^\\top` in the layout of
    ``second``: flattened ``(..., D*D)``, a matrix ``(..., D, D)`` or diagonal ``(..., D)``."""
    dim = first.shape[-1]
    if second.shape[-1] == dim and second.shape == first.shape:  # diagonal moments
        return 2 * first * delta + n.unsqueeze(-1) * delta * delta
    outer = first.unsqueeze(-1) * delta.unsqueeze(-2)
    update = outer + outer.mT + n[..., None, None] * delta.unsqueeze(-1) * delta.unsqueeze(-2)
    return update if second.dim() == update.dim() and second.shape[-2:] == (dim, dim) \
        else update.reshape(second.shape)


def full_shift(stats):
    """``stats["shift"]`` expanded to one point per count entry, ``n.shape + (D,)``."""
    _count, first, _ = moment_group(stats)
    return stats["shift"].expand(stats[first].shape).clone()


def reshift(stats, origin):
    """
    ``stats`` with its moment group re-expressed about ``origin`` (exact; see the module
    docstring); returned as a new dict, ``stats`` untouched.

    :param dict stats: statistics with ``"shift"`` and a moment group.
    :param torch.Tensor origin: ``(D,)`` or one point per count entry (``n.shape + (D,)``).
    """
    group = moment_group(stats)
    if group is None or "shift" not in stats:
        return dict(stats)
    count, first, second = group
    n, s = stats[count], stats[first]
    delta = (stats["shift"] - origin).expand(s.shape)
    out = dict(stats)
    out[first] = s + n.unsqueeze(-1) * delta
    out[second] = stats[second] + _second_update(stats[second], s, n, delta)
    out["shift"] = origin
    return out


def _check_keys(a, b):
    if set(a) != set(b):
        raise ValueError("cannot merge statistics with different entries: "
                         f"{sorted(a)} and {sorted(b)}")


def add_statistics(a, b):
    """
    The statistics of the union of two data sets from those of each (exact): ``b``'s
    moment group re-expressed about ``a``'s shift, then every entry summed. Nested
    dicts are merged entry by entry. Neither argument is changed.

    :raises ValueError: when the two hold different entries or shapes.
    """
    _check_keys(a, b)
    if "shift" in a and moment_group(a) is not None:
        origin = a["shift"]
        if origin.shape != b["shift"].shape:
            # one per component on one side: both about per-component points
            origin = full_shift(a)
            a = reshift(a, origin)
        b = reshift(b, origin)
    out = {}
    for key, value in a.items():
        other = b[key]
        if isinstance(value, dict):
            out[key] = add_statistics(value, other)
        elif key == "shift":
            out[key] = value
        else:
            if torch.is_tensor(value) and torch.is_tensor(other) and value.shape != other.shape:
                raise ValueError(f"cannot merge statistics '{key}' of shapes "
                                 f"{tuple(value.shape)} and {tuple(other.shape)}")
            out[key] = value + other
    return out


def scale_statistics(stats, factor):
    """Every additive entry times ``factor`` (the shift is kept): the statistics of the
    data weighted by ``factor``, as online EM's running average needs."""
    return {k: (scale_statistics(v, factor) if isinstance(v, dict)
                else v if k == "shift" else v * factor) for k, v in stats.items()}


def sum_statistics(parts):
    """:func:`add_statistics` over an iterable of statistics dicts (at least one)."""
    total = None
    for part in parts:
        total = part if total is None else add_statistics(total, part)
    if total is None:
        raise ValueError("no statistics to sum")
    return total
