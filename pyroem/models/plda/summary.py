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


def _compute_summary(x, speaker):
    if speaker.shape != x.shape[:1]:
        raise ValueError(f"speaker codes must have shape ({x.shape[0]},), got "
                         f"{tuple(speaker.shape)}")
    check_finite(x, "x")
    if speaker.numel() and int(speaker.min()) < 0:
        raise ValueError("speaker codes must be >= 0")
    counts = torch.bincount(speaker).to(x.dtype)
    if (counts == 0).any():
        raise ValueError("speaker codes must be contiguous 0..S-1 (see pyroem.models.plda."
                         "encode_labels)")
    shift = x.mean(0)
    xc = x - shift
    means = torch.zeros(counts.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    means.index_add_(0, speaker, xc)
    means /= counts.unsqueeze(-1)
    resid = xc.sub_(means[speaker])  # in place: xc is ours
    return _Summary(counts, means, resid.T @ resid, shift)


def data_summary(x, speaker):
    """Speaker counts, centred speaker means and the within-speaker scatter of ``x``,
    cached while ``x`` and ``speaker`` are alive and unmodified."""
    if x.requires_grad:
        return _compute_summary(x.detach(), speaker)
    key = (id(x), id(speaker))
    hit = _CACHE.get(key)
    if hit is not None:
        (xref, sref), versions, summary = hit
        if xref() is x and sref() is speaker and versions == (x._version, speaker._version):
            return summary
    summary = _compute_summary(x, speaker)
    # the entry goes when either tensor dies
    refs = tuple(weakref.ref(t, lambda _, k=key: _CACHE.pop(k, None)) for t in (x, speaker))
    _CACHE[key] = (refs, (x._version, speaker._version), summary)
    return summary
