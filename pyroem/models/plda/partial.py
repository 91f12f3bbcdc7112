r"""
PLDA with missing embeddings and per-embedding weights (:mod:`pyroem.models.partial`).

An embedding is conditionally independent of the others given its speaker's latent
:math:`z_s`, so integrating a missing one out of
:math:`p(z_s) \prod_i \mathcal N(x_{si} | z_s, \Sigma_w)` removes its factor: a missing
embedding is exactly a dropped one (and a speaker with all embeddings missing a dropped
speaker). A weight :math:`w_i` raises its factor to the power :math:`w_i`, so an integer
weight is the embedding repeated; the E-step and M-step then read the weighted counts
:math:`n_s = \sum_i w_i`, means and scatter (:func:`~pyroem.models.plda.summary.data_summary`),
and a zero weight is a dropped embedding too.
"""

import torch

from pyroem.models import partial as po
from pyroem.models.checks import check_matrix


def _row_mask(obs_mask, x):
    """The per-embedding mask from ``obs_mask`` of shape ``(N,)`` or ``(N, D)`` (whole
    embeddings only)."""
    mask = po._tensor(obs_mask, "obs_mask")
    if mask.dim() == 1:
        return po.check_obs_mask(mask, x.shape[:1])
    mask = po.check_obs_mask(mask, x.shape)
    rows = mask.any(-1)
    if not bool((mask == rows.unsqueeze(-1)).all()):
        raise ValueError("PLDA takes whole embeddings missing only: obs_mask must be the "
                         "same for every dimension of an embedding (or of shape (N,))")
    return rows


def prepare(embeddings, speaker, obs_mask, sample_weight, dim, dtype):
    """``(x, speaker[, weight])``: the observed embeddings with a positive weight, their
    speakers' contiguous codes (speakers left without an embedding dropped) and their
    weights (when given)."""
    x = po._tensor(embeddings, "embeddings") if obs_mask is not None else embeddings
    keep = None
    if obs_mask is not None:
        x = po.as_float_tensor(x, "embeddings", dtype)
        if x.dim() != 2 or x.shape[-1] != dim:
            check_matrix(x, dim, "embeddings", dtype)  # raises the shape error
        keep = _row_mask(obs_mask, x)
        x = torch.where(keep.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype))
    x = check_matrix(x, dim, "embeddings", dtype)
    if speaker.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have one entry per embedding: got {speaker.shape[0]} "
                         f"labels for {x.shape[0]} embeddings")
    weight = None
    if sample_weight is not None:
        weight = po.check_sample_weight(sample_weight, x.shape[0], x.dtype, per="embedding")
        keep = weight > 0 if keep is None else keep & (weight > 0)
    if keep is not None and not bool(keep.all()):
        if not bool(keep.any()):
            raise ValueError("no embedding is observed with a weight > 0")
        x, speaker = x[keep], torch.unique(speaker[keep], return_inverse=True)[1]
        weight = None if weight is None else weight[keep]
    return po.trim(x, speaker.to(x.device), weight)
