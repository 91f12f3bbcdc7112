r"""
Partial observation, shared by the built-in models: the checks of ``obs_mask`` (which
values are observed), ``labels`` (latents known for some items, ``-1`` where unknown)
and ``sample_weight`` (a weight per item), and the small pieces of exact EM they share.

- **Missing values** (``obs_mask``, bool, the data's shape, True = observed, Pyro's
  name): the likelihood is that of the observed part,
  :math:`p(x_o) = \int p(x_o, x_m)\, dx_m`; the values the mask marks missing are never
  read (they may hold NaN) and are replaced by zeros in the prepared data.
- **Partial labels** (``labels``, ``-1`` = unknown): a known latent is clamped,
  :math:`p(X, z_L = l) = \sum_{z_U} p(X, z_L = l, z_U)`, which is the likelihood EM then
  maximises; the E-step stays exact (the posterior of a labelled latent is a point mass).
- **Sample weights** (``sample_weight``, one per item): the objective is
  :math:`\sum_n w_n \log p(x_n)`, and the expected statistics are weighted alike; an
  integer weight is the same as repeating the item.
"""

import contextlib

import numpy as np
import torch
from pyro import poutine

from pyroem.models.checks import as_float_tensor, check_finite, first_bad_index


def _tensor(value, name):
    if torch.is_tensor(value):
        return value
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} could not be read as an array: {e}") from None
    if array.dtype == object:
        raise ValueError(f"{name} could not be read as an array (ragged or object values)")
    return torch.as_tensor(array)


def check_obs_mask(mask, shape, name="obs_mask"):
    """``mask`` as a bool tensor of exactly ``shape`` (the data's shape; True = observed).

    :raises ValueError: for another shape or a non-boolean dtype (0/1 integers are not
        taken for booleans silently)."""
    mask = _tensor(mask, name)
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a boolean tensor (True = observed), got dtype "
                         f"{mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have the data's shape {tuple(shape)}, got "
                         f"{tuple(mask.shape)}")
    return mask


def fill_missing(x, mask, name="x"):
    """``x`` with the entries that ``mask`` marks missing replaced by zeros (a new tensor;
    ``x`` is not modified), checked finite where observed."""
    filled = torch.where(mask, x, torch.zeros((), dtype=x.dtype))
    return check_finite(filled, name)


def check_labels(labels, shape, num_classes, name="labels"):
    """``labels`` as a long tensor of exactly ``shape`` with values in
    ``[-1, num_classes)`` (``-1``: unknown).

    :raises ValueError: for another shape, non-integer values or values out of range."""
    labels = _tensor(labels, name)
    if labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name} must hold integers (-1 = unknown), got dtype {labels.dtype}")
    if labels.is_floating_point():
        check_finite(labels, name)
        if not torch.equal(labels, labels.round()):
            raise ValueError(f"{name} must hold integers (-1 = unknown), got non-integer values")
    labels = labels.long()
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(labels.shape)}")
    bad = (labels < -1) | (labels >= num_classes)
    if bool(bad.any()):
        index = first_bad_index(bad)
        raise ValueError(f"{name} must lie in [-1, {num_classes}) (-1 = unknown), got "
                         f"{int(labels[index])} at index {index}")
    return labels


def check_sample_weight(weight, size, dtype, name="sample_weight", per="item"):
    """``weight`` as a ``(size,)`` tensor of ``dtype``: finite, ``>= 0``, not all zero.

    :raises ValueError: naming the first bad weight."""
    weight = _tensor(weight, name)
    if weight.dtype == torch.bool or weight.is_complex():
        raise ValueError(f"{name} must be real numbers, got dtype {weight.dtype}")
    weight = weight.to(dtype)
    if tuple(weight.shape) != (size,):
        raise ValueError(f"{name} must have one weight per {per}, shape ({size},), got "
                         f"{tuple(weight.shape)}")
    bad = ~torch.isfinite(weight) | (weight < 0)
    if bool(bad.any()):
        index = first_bad_index(bad)
        raise ValueError(f"{name} must be finite and >= 0, got {float(weight[index])} at "
                         f"index {index}")
    if not bool((weight > 0).any()):
        raise ValueError(f"{name} is zero everywhere: at least one {per} must have a "
                         "positive weight")
    return weight


#: the clamp's :math:`\log 0`: finite, so that a guide's floored probability times it stays
#: negligible in an ELBO (0 times -inf is NaN, a tiny number times -inf is -inf), and far
#: enough below any log-density that its exponential is exactly 0 in float32 and float64
LOG_ZERO = -1e30


def label_clamp(labels, num_classes, dtype):
    r"""``labels.shape + (K,)``: :math:`\log \mathbb 1[z = l]` where the label ``l`` is
    known (0 at it, :data:`LOG_ZERO` elsewhere, whose exponential is exactly 0) and 0
    where it is unknown (``-1``)."""
    states = torch.arange(num_classes)
    keep = (labels.unsqueeze(-1) < 0) | (labels.unsqueeze(-1) == states)
    return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, LOG_ZERO)


def trim(*args):
    """``args`` without trailing ``None`` (so that data with nothing partial keep the
    arguments they always had)."""
    args = list(args)
    while args and args[-1] is None:
        args.pop()
    return tuple(args)


def seed_responsibilities(resp, labels):
    r"""
    Starting responsibilities ``(N, K)`` in which each known class seeds its own
    component: the unsupervised start ``resp`` (e.g. one-hot k-means clusters) with its
    components renumbered to match the labels, and the labelled rows set to their
    one-hot label. Labels then decide which component is which class, while every
    component still starts from all the data (a few labelled points alone would give
    degenerate covariances).

    The matching is greedy on the overlap :math:`M_{ck} = \sum_{n: l_n = c} r_{nk}`:
    the largest remaining entry pairs class ``c`` with component ``k``; classes without
    a label take the remaining components in order.
    """
    known = labels >= 0
    if not bool(known.any()):
        return resp
    K = resp.shape[-1]
    onehot = torch.nn.functional.one_hot(labels.clamp_min(0), K).to(resp.dtype)
    overlap = (onehot * known.unsqueeze(-1)).T @ resp  # (class, component)
    overlap = overlap.masked_fill(~(onehot * known.unsqueeze(-1)).any(0).unsqueeze(-1), -1.0)
    order = [None] * K
    for _ in range(int((overlap >= 0).any(-1).sum())):
        c, k = divmod(int(overlap.argmax()), K)
        order[c] = k
        overlap[c, :], overlap[:, k] = -2.0, -2.0
    rest = iter(k for k in range(K) if k not in order)
    order = torch.tensor([k if k is not None else next(rest) for k in order])
    return torch.where(known.unsqueeze(-1), onehot, resp[:, order])


def masked_matrix(x, obs_mask, dim, check, name="x", dtype=None):
    """Data ``(N, dim)`` (``(N,)`` when ``dim == 1``) with its ``obs_mask``: returns
    ``(x, mask)``, the missing entries of ``x`` replaced by zeros (a new tensor) and the
    observed ones checked finite; ``check(x)`` is the model's check of complete data
    (shape, dtype), run on the filled values."""
    x = as_float_tensor(x, name, dtype)
    mask = _tensor(obs_mask, "obs_mask")
    if dim == 1 and x.dim() == 1:
        x = x.unsqueeze(-1)
        mask = mask.unsqueeze(-1) if mask.dim() == 1 else mask
    if x.dim() != 2 or x.shape[-1] != dim:
        check(x)  # raises the shape error of complete data
    mask = check_obs_mask(mask, x.shape)
    return check(torch.where(mask, x, torch.zeros((), dtype=x.dtype))), mask


@contextlib.contextmanager
def weight_scale(weight):
    """``poutine.scale`` by per-item weights for a Pyro model (zero weights masked out, as
    Pyro's scale must be positive), or a no-op without weights; entered where it is
    used (inside the plate)."""
    if weight is None:
        yield
        return
    positive = weight > 0
    with poutine.mask(mask=positive), poutine.scale(scale=torch.where(positive, weight, 1.0)):
        yield


def check_decomposition(weighted, record_decomposition):
    """Refuse ``record_decomposition`` on a weighted fit: the decomposition runs Pyro's
    exact enumeration, which takes a scalar ``poutine.scale`` only."""
    if weighted and record_decomposition:
        raise ValueError("record_decomposition is not available with sample_weight: Pyro's "
                         "exact enumeration takes a scalar poutine.scale only")


def _sq_dist(x, centers):
    return ((x * x).sum(-1, keepdim=True) - 2 * x @ centers.T
            + (centers * centers).sum(-1)).clamp_min(0)


def labelled_kmeans(x, labels, num_classes, generator, max_iter=20):
    r"""
    k-means whose clusters are the classes: each labelled class starts at the mean of its
    labelled points, the other centres are k-means++ draws (probability
    :math:`\propto D(x)^2` to the centres so far), and Lloyd iterations keep every
    labelled point in its class. Returns the ``(N, K)`` one-hot assignments: a start in
    which each known class seeds its own component.
    """
    K = num_classes
    known = labels >= 0
    onehot = torch.nn.functional.one_hot(labels.clamp_min(0), K).to(x.dtype) * known[:, None]
    counts = onehot.sum(0)
    centers = (onehot.T @ x) / counts.clamp_min(1).unsqueeze(-1)
    have = counts > 0
    for k in (~have).nonzero().squeeze(-1).tolist():
        if bool(have.any()):
            closest = _sq_dist(x, centers[have]).min(-1).values
            probs = closest if float(closest.sum()) > 0 else torch.ones_like(closest)
        else:
            probs = torch.ones(x.shape[0], dtype=x.dtype)
        centers[k] = x[int(torch.multinomial(probs, 1, generator=generator))]
        have[k] = True
    assigned = None
    for _ in range(max_iter):
        new = torch.where(known, labels, _sq_dist(x, centers).argmin(-1))
        if assigned is not None and torch.equal(new, assigned):
            break
        assigned = new
        resp = torch.nn.functional.one_hot(assigned, K).to(x.dtype)
        filled = resp.sum(0) > 0
        centers[filled] = (resp.T @ x)[filled] / resp.sum(0)[filled].unsqueeze(-1)
    return torch.nn.functional.one_hot(assigned, K).to(x.dtype)
