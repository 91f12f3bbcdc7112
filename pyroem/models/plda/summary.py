"""The data summary PLDA's E-step reads: speaker counts, centred speaker means and the
within-speaker scatter, cached per data tensor (the data enter EM only through them)."""

import weakref
from typing import NamedTuple

import torch

from pyroem.models.checks import check_finite


class _Summary(NamedTuple):
    counts: torch.Tensor  # (S,) n_s, in the data's dtype
    means: torch.Tensor  # (S, D) speaker means minus shift
    within_scatter: torch.Tensor  # (D, D) sum_s sum_i (x_si - xbar_s)(x_si - xbar_s)^T
    shift: torch.Tensor  # (D,) data mean (centring keeps float32 well conditioned)


# (id(x), id(speaker)) -> (weakrefs, versions, summary). The data is constant across EM
# iterations and enters the E-step only through these statistics, so an iteration costs
# O(S D^2 + D^3), independent of the number of embeddings.
_CACHE = {}


def _compute_summary(x, speaker, weight=None):
    if speaker.shape != x.shape[:1]:
        raise ValueError(f"speaker codes must have shape ({x.shape[0]},), got "
                         f"{tuple(speaker.shape)}")
    check_finite(x, "x")
    if speaker.numel() and int(speaker.min()) < 0:
        raise ValueError("speaker codes must be >= 0")
    if (torch.bincount(speaker) == 0).any():
        raise ValueError("speaker codes must be contiguous 0..S-1 (see pyroem.models.plda."
                         "encode_labels)")
    # a weight per embedding counts it that many times (sums of weights, weighted means
    # and scatter); without weights every embedding counts once
    counts = torch.bincount(speaker, weights=weight).to(x.dtype)
    if weight is not None and not bool((counts > 0).all()):
        raise ValueError("every speaker needs an embedding with a sample_weight > 0")
    shift = x.mean(0) if weight is None else (weight.unsqueeze(-1) * x).sum(0) / weight.sum()
    xc = x - shift
    means = torch.zeros(counts.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    means.index_add_(0, speaker, xc if weight is None else weight.unsqueeze(-1) * xc)
    means /= counts.unsqueeze(-1)
    resid = xc.sub_(means[speaker])  # in place: xc is ours
    weighted = resid if weight is None else weight.unsqueeze(-1) * resid
    return _Summary(counts, means, weighted.T @ resid, shift)


def data_summary(x, speaker, weight=None):
    """Speaker counts, centred speaker means and the within-speaker scatter of ``x`` (with
    ``weight``, one per embedding: sums of weights, weighted means and scatter), cached
    while ``x``, ``speaker`` (and ``weight``) are alive and unmodified."""
    if x.requires_grad:
        return _compute_summary(x.detach(), speaker, weight)
    tensors = (x, speaker) if weight is None else (x, speaker, weight)
    key = tuple(id(t) for t in tensors)
    versions = tuple(t._version for t in tensors)
    hit = _CACHE.get(key)
    if hit is not None:
        refs, cached_versions, summary = hit
        if all(r() is t for r, t in zip(refs, tensors)) and cached_versions == versions:
            return summary
    summary = _compute_summary(x, speaker, weight)
    # the entry goes when any of the tensors dies
    refs = tuple(weakref.ref(t, lambda _, k=key: _CACHE.pop(k, None)) for t in tensors)
    _CACHE[key] = (refs, versions, summary)
    return summary


def scatter_statistics(summary):
    r"""
    The statistics of the ``"scatter"`` start: the M-step's input as if each speaker's
    variable were its sample mean, :math:`z_s = \bar x_s` (so the between covariance starts
    at the scatter of the speaker means and the within covariance at the pooled scatter
    about them), from a :func:`data_summary`.
    """
    means = summary.means
    mean_c = means.mean(0)
    dev = means - mean_c
    S, N = means.shape[0], float(summary.counts.sum())
    return {
        "num_speakers": means.new_tensor(float(S)),
        "num_embeddings": means.new_tensor(float(N - S)),
        "sum_z": means.sum(0),
        "sum_zz": dev.T @ dev + S * torch.outer(mean_c, mean_c),
        "sum_within": summary.within_scatter,
        "shift": summary.shift,
    }
