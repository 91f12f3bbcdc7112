r"""PLDA scores: per-speaker log-likelihoods, the posterior, and verification
log-likelihood ratios of "same speaker" against "different speakers" with ``n``
enrolment embeddings (Ioffe, 2006; Kaldi's ``plda.cc``)."""

import torch

from pyroem.models.checks import as_float_tensor, check_finite, check_matrix
from pyroem.models.plda.batches import (
    chunked_summary,
    scoring_rows,
    summarised_view,
    within_quadratic,
)
from pyroem.models.plda.summary import data_summary


class PLDAScoring:
    """Scoring methods of :class:`~pyroem.models.PLDA` (which provides ``dim``, ``dtype``,
    ``mean``, ``_data``, ``_basis()``, ``_speaker_terms`` and ``e_step``)."""

    def _summarised(self, embeddings, labels, chunk_size):
        x, speaker = self._data(embeddings, labels)
        rows = scoring_rows(x, chunk_size)
        with torch.no_grad():
            summary = data_summary(x, speaker) if rows is None else chunked_summary(
                x, speaker, rows)
        return x, speaker, summary, rows

    def log_prob(self, embeddings, labels, chunk_size=None):
        r"""
        :math:`\log p(X_s)` of each speaker's embeddings (jointly Gaussian), shape
        ``(S,)`` in the order of :func:`encode_labels` (sorted labels); in chunks of
        ``chunk_size`` embeddings (``None``: whole below the memory budget of
        :mod:`pyroem.models.scaling`).
        """
        x, speaker, summary, rows = self._summarised(embeddings, labels, chunk_size)
        with torch.no_grad():
            basis = self._basis()
            lp, _, _ = self._speaker_terms(summary, basis)
            quad = within_quadratic(x, speaker, summary, basis.transform, rows)
        return lp - 0.5 * quad

    def posterior(self, embeddings, labels, chunk_size=None):
        """The exact :class:`SpeakerPosterior` of every speaker (sorted labels); the data
        summary in chunks of ``chunk_size`` embeddings as :meth:`log_prob`."""
        x, speaker, summary, rows = self._summarised(embeddings, labels, chunk_size)
        if rows is None:
            return self.e_step(x, speaker)
        return self.e_step(*summarised_view(x, speaker, summary))

    def score_means(self, enroll_means, enroll_counts, tests):
        r"""
        Verification log-likelihood ratios from enrolment means and counts,

        .. math::

            \mathrm{LLR}(k, t) = \log \mathcal N(x_t; m_k, C_{n_k} + \Sigma_w)
            - \log \mathcal N(x_t; \mu, \Sigma_b + \Sigma_w),

        the posterior predictive of model :math:`k` (mean :math:`\bar e_k` of
        :math:`n_k` enrolment embeddings) against the prior predictive; equal to
        :math:`\log p(E_k, x_t | \text{same}) - \log p(E_k) - \log p(x_t)`.

        :param enroll_means: ``(K, D)``.
        :param enroll_counts: ``(K,)`` numbers of enrolment embeddings (>= 1).
        :param tests: ``(M, D)`` test embeddings.
        :returns: scores ``(K, M)``.
        """
        dtype = self.dtype
        means = check_matrix(enroll_means, self.dim, "enroll_means", dtype)
        counts = check_finite(as_float_tensor(enroll_counts, "enroll_counts", dtype),
                              "enroll_counts").reshape(-1)
        if counts.shape[0] != means.shape[0] or not (counts >= 1).all():
            raise ValueError(f"enroll_counts must be {means.shape[0]} numbers >= 1")
        tests = check_matrix(tests, self.dim, "tests", dtype)
        with torch.no_grad():
            basis = self._basis()
            mu = self.mean.detach()
            ye = (means - mu) @ basis.transform.T
            yt = (tests - mu) @ basis.transform.T
            psi = basis.psi
            npsi = counts.unsqueeze(-1) * psi
            m = npsi / (1 + npsi) * ye  # posterior means, (K, D)
            a = 1 / (1 + psi / (1 + npsi))  # predictive precisions, (K, D)
            b = 1 / (1 + psi)
            yt2 = yt.square()
            # -1/2 sum_d a (y_t - m)^2 + 1/2 sum_d b y_t^2 + 1/2 log|diag a| - 1/2 log|diag b|,
            # expanded so that the (K, M) table is two matrix products
            scores = (-0.5 * (a @ yt2.T) + (a * m) @ yt.T
                      - 0.5 * (a * m.square()).sum(-1, keepdim=True) + 0.5 * (yt2 @ b)
                      + 0.5 * (a.log().sum(-1, keepdim=True) - b.log().sum()))
        return scores

    def llr(self, enroll, test):
        """
        Log-likelihood ratio of "same speaker" against "different speakers".

        :param enroll: ``(n, D)`` enrolment embeddings of one speaker (``n >= 1``;
            ``(D,)`` is one embedding).
        :param test: ``(D,)`` (returns a scalar) or ``(M, D)`` (returns ``(M,)``).
        """
        enroll = as_float_tensor(enroll, "enroll", self.dtype)
        if enroll.dim() == 1:
            enroll = enroll.unsqueeze(0)
        enroll = check_matrix(enroll, self.dim, "enroll")
        if enroll.shape[0] < 1:
            raise ValueError("enroll needs at least one embedding")
        test = as_float_tensor(test, "test", self.dtype)
        single = test.dim() == 1
        if single and test.shape[0] != self.dim:
            raise ValueError(f"test must have shape ({self.dim},) or (M, {self.dim}), got "
                             f"{tuple(test.shape)}")
        test = check_matrix(test.unsqueeze(0) if single else test, self.dim, "test")
        scores = self.score_means(enroll.mean(0, keepdim=True), [enroll.shape[0]], test)[0]
        return scores[0] if single else scores

    def score_matrix(self, enroll_sets, tests):
        """
        Scores of every enrolment set against every test embedding.

        :param enroll_sets: a list of ``K`` arrays ``(n_k, D)`` (``n_k >= 1``).
        :param tests: ``(M, D)``.
        :returns: ``(K, M)`` log-likelihood ratios.
        """
        if isinstance(enroll_sets, torch.Tensor) or not len(enroll_sets):
            raise ValueError("enroll_sets must be a non-empty list of (n_k, D) arrays")
        means, counts = [], []
        for k, e in enumerate(enroll_sets):
            e = check_matrix(e, self.dim, f"enroll_sets[{k}]", self.dtype)
            if e.shape[0] < 1:
                raise ValueError(f"enroll_sets[{k}] is empty")
            means.append(e.mean(0))
            counts.append(e.shape[0])
        return self.score_means(torch.stack(means), counts, tests)
