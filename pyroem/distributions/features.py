"""Cached Gaussian sufficient-statistic features of observed data."""

import math
import weakref

import torch

# (id(owner), view geometry, kind) -> (weakref to owner, version, (center, design)).
# Observed data is constant across EM iterations, so its features are computed once.
_CACHE = {}
#: Features larger than this (bytes) are recomputed on each call instead of cached.
CACHE_LIMIT_BYTES = 4 * 2**30


def _compute(x, kind, center):
    # one contiguous [quad, lin, 1] matrix: quad and lin are views of it, and a single
    # matrix product with [vec(Lambda), -2 Lambda mu, const] gives the whole quadratic form
    xc = x - center
    quad = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).flatten(-2) if kind == "full" else xc * xc
    return torch.cat([quad, xc, torch.ones_like(xc[..., :1])], dim=-1)


def _views(center, design, dim):
    q = design.shape[-1] - dim - 1
    return center, design[..., :q], design[..., q:q + dim]


def gaussian_features(x, kind="full"):
    r"""
    Gaussian sufficient statistics of centred data, cached per data tensor.

    Returns ``(center, quad, lin)``: ``center`` of shape ``(D,)`` is the mean of ``x``
    over its batch dimensions and, for :math:`x_c = x - \text{center}`,
    ``lin`` :math:`= x_c` and ``quad`` is

    - ``kind="full"``: :math:`\mathrm{vec}(x_c x_c^\top)`, shape ``batch_shape + (D*D,)``;
    - ``kind="diag"``: :math:`x_c \odot x_c`, shape ``batch_shape + (D,)``.

    Centring keeps the expanded quadratic form well conditioned in float32.  The
    result is cached while ``x`` is alive and unmodified (checked by its version
    counter); tensors that require grad are never cached.

    ``quad`` and ``lin`` are column blocks of :func:`gaussian_design`'s matrix.

    :param torch.Tensor x: data of shape ``batch_shape + (D,)``.
    :param str kind: ``"full"`` or ``"diag"``.
    """
    return _views(*gaussian_design(x, kind), x.shape[-1])


# (id(owner), view geometry, what) -> (weakref to owner, version, value): small facts
# about a data tensor (its radius, that it is finite), kept while it is alive and unmodified
_FACTS = {}


def _fact(x, what, compute):
    """``compute(x)``, cached per data tensor (and view geometry) like the design."""
    if x.requires_grad:
        return compute(x.detach())
    base = x if x._base is None else x._base
    key = (id(base), x.storage_offset(), tuple(x.shape), x.stride(), x.dtype, what)
    hit = _FACTS.get(key)
    if hit is not None and hit[0]() is base and hit[1] == x._version:
        return hit[2]
    value = compute(x)
    _FACTS[key] = (weakref.ref(base, lambda _, k=key: _FACTS.pop(k, None)), x._version, value)
    return value


def _radius(x):
    flat = x.reshape(-1, x.shape[-1])
    if not flat.shape[0]:
        return 0.0
    return float((flat - flat.mean(0)).square().sum(-1).max().sqrt())


def data_radius(x):
    r"""
    :math:`\max_n \lVert x_n - \text{center} \rVert` over the rows of ``x`` (``center`` as
    :func:`gaussian_design`'s), cached per data tensor like the design: the scale of the
    centred data that the rounding of the expanded Gaussian quadratic form grows with.
    """
    return _fact(x, "radius", _radius)


def value_range(x):
    """``(min, max)`` of the entries of ``x`` as Python numbers, cached per data tensor like
    :func:`all_finite` (symbol data are range-checked once, not on every EM iteration)."""
    return _fact(x, "range", lambda t: (t.min().item(), t.max().item()))


def all_finite(x):
    """Whether every entry of the floating tensor ``x`` is finite, cached per data tensor
    (observed data are checked once, not on every EM iteration)."""
    if not x.is_floating_point():
        return True
    return _fact(x, "finite", lambda t: bool(torch.isfinite(t).all()))


def gaussian_design(x, kind="full"):
    r"""
    ``(center, design)`` with ``design = [quad, lin, 1]`` of shape ``batch_shape + (F,)``
    (see :func:`gaussian_features`; ``F = D*D + D + 1`` for ``"full"``, ``2D + 1`` for
    ``"diag"``), cached per data tensor: the Gaussian log-density of every data point under
    every parameter setting is one matrix product with it, and the weighted moments
    :math:`(\sum w x_c x_c^\top, \sum w x_c, \sum w)` are another.
    """
    if x.requires_grad:
        center = x.detach().reshape(-1, x.shape[-1]).mean(0)
        return center, _compute(x, kind, center)
    # A view (e.g. ``x.reshape(-1, D)`` inside a model) is a new object on every call:
    # key on the tensor that owns the memory plus the view's geometry.
    base = x if x._base is None else x._base
    key = (id(base), x.storage_offset(), tuple(x.shape), x.stride(), x.dtype, kind)
    hit = _CACHE.get(key)
    if hit is not None:
        ref, version, feats = hit
        if ref() is base and version == x._version:
            return feats
    center = x.reshape(-1, x.shape[-1]).mean(0) if x.numel() else x.new_zeros(x.shape[-1])
    feats = (center, _compute(x, kind, center))
    nbytes = feats[1].numel() * feats[1].element_size()
    if math.prod(x.shape[:-1]) > 1 and nbytes <= CACHE_LIMIT_BYTES:
        _CACHE[key] = (weakref.ref(base, lambda _, k=key: _CACHE.pop(k, None)), x._version, feats)
    return feats
