"""Drawing speakers and their embeddings from a PLDA model, with a generator of its own."""

import torch

from pyroem.models.checks import check_positive_int, make_generator


def sample_speakers(mean, between_tril, within_tril, num_speakers, num_per_speaker, seed=None):
    r"""
    :math:`z_s \sim \mathcal N(\mu, L_b L_b^\top)` (:math:`L_b` ``(D, D)``, or ``(D, r)``
    for a rank-``r`` between covariance) for ``num_speakers`` speakers and
    :math:`x_{si} \sim \mathcal N(z_s, L_w L_w^\top)` for ``num_per_speaker`` embeddings
    each, from a ``torch.Generator`` seeded with ``seed``.

    :returns: ``(x (N, D), labels (N,), z (S, D))``.
    """
    num_speakers = check_positive_int("num_speakers", num_speakers)
    counts = _counts(num_per_speaker, num_speakers)
    labels = torch.repeat_interleave(torch.arange(num_speakers), counts)
    generator = make_generator(seed)
    dim = mean.shape[-1]
    with torch.no_grad():
        # between_tril may be a (D, r) factor of a rank-r between covariance
        eps = torch.randn(num_speakers, between_tril.shape[-1], generator=generator,
                          dtype=mean.dtype)
        z = mean + eps @ between_tril.T
        eps = torch.randn(labels.shape[0], dim, generator=generator, dtype=mean.dtype)
        x = z[labels] + eps @ within_tril.T
    return x, labels, z


class PLDASampling:
    """Sampling of :class:`~pyroem.models.PLDA` (which provides ``mean``,
    ``_between_root()`` and ``within_scale_tril``)."""

    def sample(self, num_speakers, num_per_speaker, seed=None):
        """
        Draw embeddings from the model.

        The draws come from a ``torch.Generator`` of their own (seeded with ``seed``, a
        fresh seed when ``None``): the global random state (torch's, numpy's, Python's)
        is neither read nor changed.

        :param int num_speakers: ``S``.
        :param num_per_speaker: an int, or ``S`` counts.
        :returns: ``(x (N, D), labels (N,), z (S, D))``: the embeddings, their speakers
            and the speakers' means.
        """
        return sample_speakers(self.mean.detach(), self._between_root(),
                               self.within_scale_tril.detach(), num_speakers,
                               num_per_speaker, seed)


def _counts(num_per_speaker, num_speakers):
    """``num_per_speaker`` (an int or ``S`` ints >= 1) as ``S`` counts."""
    message = f"num_per_speaker must be an int >= 1 or {num_speakers} such counts, got "
    try:
        counts = torch.as_tensor(num_per_speaker)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(message + repr(num_per_speaker)) from None
    if counts.is_floating_point() or counts.is_complex() or counts.dtype == torch.bool:
        raise ValueError(message + f"dtype {counts.dtype}")
    counts = counts.long().reshape(-1)
    if counts.numel() not in (1, num_speakers) or (counts < 1).any():
        raise ValueError(message + repr(num_per_speaker))
    return counts.expand(num_speakers)
