"""The shared base of the hidden-Markov-model estimators (hmmlearn's API): rows of ``X`` are
frames, sequences given by ``lengths`` or ``sequence_ids``; Dirichlet priors of the chain;
decoding, scoring and sampling sequence by sequence."""

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from pyroem.sklearn.base import EMEstimator, _check_n_samples


class HMMEstimator(EMEstimator):
    """
    Base of the HMM estimators: a subclass sets ``_make_model(n_features)`` and
    ``_export(model)`` (its emission parameters; :meth:`_export_chain` sets ``startprob_``
    and ``transmat_``), and may override ``_validate`` (e.g. integer symbols).
    """

    def _check_params(self):
        super()._check_params()
        k = self.n_components
        for name, shape in (("startprob_prior", (k,)), ("transmat_prior", (k, k))):
            value = getattr(self, name)
            try:
                prior = np.asarray(value, dtype=np.float64)
                np.broadcast_to(prior, shape)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number or an array broadcasting to "
                                 f"{shape} (n_components={k}), got {value!r}") from None
            if not (np.isfinite(prior).all() and (prior >= 0).all()):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")

    def _export_chain(self, model):
        self.startprob_ = model.start_probs.detach().numpy()
        self.transmat_ = model.trans_probs.detach().numpy()

    def _model_args(self, X, lengths=None, sequence_ids=None):
        """``X`` split into its sequences (:func:`split_sequences`)."""
        return (split_sequences(X, lengths, sequence_ids),)

    def _max_iter(self):
        return self.n_iter

    def _model_tol(self, n_samples):
        # hmmlearn's tol is on the total log-likelihood; the model's is per frame
        if not (isinstance(self.tol, (int, float, np.floating)) and self.tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        return float(self.tol) / n_samples

    def _lower_bound(self, history, n_samples):
        return float(history.final_log_likelihood)  # hmmlearn's: the total

    def fit(self, X, y=None, lengths=None, sequence_ids=None, sample_weight=None):
        """
        Fit by ``method`` with ``n_init`` initialisations, keeping the best.

        :param X: frames ``(n_samples, n_features)``, the sequences one after another.
        :param y: ignored (scikit-learn's API).
        :param lengths: lengths of the sequences (summing to ``n_samples``); ``None``: one
            sequence.
        :param sequence_ids: alternatively, one id per row (runs of equal ids are sequences).
        :param sample_weight: one weight ``>= 0`` per sequence (an integer weight is the
            sequence repeated).
        :returns: ``self``.
        """
        return super().fit(X, y, sample_weight=sample_weight, lengths=lengths,
                           sequence_ids=sequence_ids)

    def fit_predict(self, X, y=None, lengths=None, sequence_ids=None):
        """Fit, then :meth:`predict` ``X``."""
        return self.fit(X, y, lengths, sequence_ids).predict(X, lengths, sequence_ids)

    def _sequences(self, X, lengths, sequence_ids):
        return self._model_args(self._fitted(X), lengths, sequence_ids)[0]

    @staticmethod
    def _concat(values):
        return (torch.cat(values) if isinstance(values, list) else values).numpy()

    def score(self, X, y=None, lengths=None, sequence_ids=None):
        r"""Total log-likelihood :math:`\sum_b \log p(x^{(b)}_{1:T_b})` of the sequences
        (as hmmlearn; higher is better)."""
        seqs = self._sequences(X, lengths, sequence_ids)
        return float(self.model_.log_prob(seqs).sum())

    def score_samples(self, X, lengths=None, sequence_ids=None):
        r"""
        As hmmlearn: the total log-likelihood and the per-frame posteriors.

        :returns: ``(log_prob, posteriors)``, ``posteriors (n_samples, n_components)``
            holding :math:`\gamma_t(k) = p(z_t = k | x)`.
        """
        seqs = self._sequences(X, lengths, sequence_ids)
        return (float(self.model_.log_prob(seqs).sum()),
                self._concat(self.model_.posterior(seqs)))

    def decode(self, X, lengths=None, algorithm=None, sequence_ids=None):
        """
        As hmmlearn: ``(log_prob, states)``; ``log_prob`` is :math:`\\sum_b \\max_z \\log
        p(x, z)` for ``"viterbi"`` and :math:`\\log p(X)` for ``"map"``.
        """
        seqs = self._sequences(X, lengths, sequence_ids)
        algorithm = self.algorithm if algorithm is None else algorithm
        if not isinstance(algorithm, str) or algorithm not in self._choices["algorithm"]:
            raise ValueError(f"unknown algorithm {algorithm!r}; expected one of "
                             f"{sorted(self._choices['algorithm'])}")
        log_prob, states = self.model_.decode(seqs, algorithm=algorithm)
        return float(log_prob.sum()), self._concat(states)

    def predict(self, X, lengths=None, sequence_ids=None):
        """The decoded state of each frame (decoder ``algorithm``), shape ``(n_samples,)``."""
        return self.decode(X, lengths, sequence_ids=sequence_ids)[1]

    def predict_proba(self, X, lengths=None, sequence_ids=None):
        """Per-frame posteriors :math:`\\gamma_t(k)`, shape ``(n_samples, n_components)``."""
        return self.score_samples(X, lengths, sequence_ids)[1]

    def bic(self, X, lengths=None, sequence_ids=None):
        """Bayesian information criterion (lower is better; free parameters of ``params``
        only, as hmmlearn)."""
        seqs = self._sequences(X, lengths, sequence_ids)
        return self.model_.bic(seqs)

    def aic(self, X, lengths=None, sequence_ids=None):
        """Akaike information criterion (lower is better)."""
        seqs = self._sequences(X, lengths, sequence_ids)
        return self.model_.aic(seqs)

    def sample(self, n_samples=1, random_state=None):
        """
        One sequence of ``n_samples`` frames, seeded from ``random_state`` (else the
        estimator's) without touching the global random state.

        :returns: ``(X (n_samples, n_features), Z (n_samples,))``, ``Z`` the states.
        """
        check_is_fitted(self, "model_")
        _check_n_samples(n_samples)
        seed = self._seed(random_state)
        x, z = self.model_.sample(n_samples, seed=seed)
        return x.numpy(), z.numpy()


def split_sequences(X, lengths=None, sequence_ids=None):
    """``X``'s rows split into sequences by ``lengths`` or ``sequence_ids`` (runs of equal
    ids): a list of tensors, or ``X`` itself when it is one sequence."""
    n = X.shape[0]
    if lengths is not None and sequence_ids is not None:
        raise ValueError("give lengths or sequence_ids, not both")
    if sequence_ids is not None:
        ids = np.asarray(sequence_ids).reshape(-1)
        if ids.shape[0] != n:
            raise ValueError(f"sequence_ids must have one entry per row of X ({n}), got "
                             f"{ids.shape[0]}")
        starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        lengths = np.diff(np.concatenate([[0], starts, [n]]))
    if lengths is None:
        return X
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.shape[0] == 0 or lengths.dtype.kind not in "iu":
        raise ValueError(f"lengths must be a non-empty 1-D array of integers, got "
                         f"{lengths!r}")
    if (lengths < 1).any() or lengths.sum() != n:
        raise ValueError(f"lengths must be >= 1 and sum to the number of rows of X "
                         f"({n}), got a sum of {int(lengths.sum())}")
    return list(torch.split(X, lengths.tolist()))

