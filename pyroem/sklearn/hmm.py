"""hmmlearn's :class:`~hmmlearn.hmm.GaussianHMM` API on pyroem's model."""

from typing import ClassVar

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from pyroem.models import GaussianHMM as _GaussianHMM
from pyroem.models import gaussian_emission as ge
from pyroem.sklearn.base import EMEstimator, _check_n_samples


class GaussianHMM(EMEstimator):
    r"""
    A hidden Markov model with Gaussian emissions fitted by Baum-Welch (exact EM), Viterbi
    training or SVI, with the API of :class:`hmmlearn.hmm.GaussianHMM`; see
    :class:`pyroem.models.GaussianHMM` for the model and its updates.

    The rows of ``X`` are frames: one sequence, or several concatenated with their
    ``lengths`` (hmmlearn's convention), e.g. ``fit(np.concatenate([x1, x2]), lengths=[len(x1),
    len(x2)])``. Inside :class:`~sklearn.model_selection.GridSearchCV` pass
    ``sequence_ids`` (one id per row; each run of equal consecutive ids is a sequence)
    instead of ``lengths``: a per-row fit parameter is split with ``X`` by the
    cross-validation splitter (use e.g. :class:`~sklearn.model_selection.GroupKFold` with
    the same ids as groups so that folds hold whole sequences), a ``lengths`` list could
    not be. ``score`` and friends take ``lengths`` or ``sequence_ids`` too; without them
    ``X`` is one sequence, so by default a grid search scores each test fold as one
    sequence. With scikit-learn's metadata routing the test folds are scored sequence by
    sequence::

        with sklearn.config_context(enable_metadata_routing=True):
            est = GaussianHMM().set_fit_request(sequence_ids=True) \
                               .set_score_request(sequence_ids=True)
            GridSearchCV(est, {"n_components": [1, 2, 3]}, cv=GroupKFold(3)).fit(
                X, groups=ids, sequence_ids=ids)

    Pass ``lengths`` and ``sequence_ids`` by keyword (``score(X, lengths=...)``): the
    second positional argument is scikit-learn's ``y``, ignored.

    :param int n_components: number of hidden states ``K``.
    :param str covariance_type: ``"diag"`` (default, as hmmlearn), ``"full"``, ``"tied"``
        or ``"spherical"``.
    :param float reg_covar: added to the covariance diagonals after each M-step
        (hmmlearn's ``min_covar`` only pads its initial covariances; it has no match).
    :param startprob_prior: Dirichlet concentration of the start probabilities, scalar or
        ``(K,)`` (``1``: maximum likelihood; hmmlearn's meaning).
    :param transmat_prior: Dirichlet concentration of each transition row, scalar or
        ``(K, K)``.
    :param str algorithm: decoder of :meth:`predict`: ``"viterbi"`` (the jointly most
        probable path) or ``"map"`` (the most probable state of each frame).
    :param random_state: ``None``, an int or a :class:`numpy.random.RandomState`.
    :param int n_iter: EM iterations at most (hmmlearn's name; ``max_iter`` elsewhere in
        pyroem).
    :param float tol: stop when the total log-likelihood gains less than ``tol``
        (hmmlearn's meaning: not per frame).
    :param str params: the parameters ``fit`` trains, letters of ``"stmc"`` (start,
        transitions, means, covariances); the others stay at their initial values.
    :param str init_params: how the emission parameters start: ``"kmeans"`` (k-means of
        the frames from k-means++ seeds) or ``"random"`` (random responsibilities); start
        and transition probabilities start uniform. (hmmlearn's letters are not
        supported: pyroem starts all trained emission parameters from the same
        clustering.)
    :param int n_init: initialisations; the best fit is kept.
    :param str method: ``"em"`` (Baum-Welch), ``"viterbi"`` (Viterbi training) or ``"svi"``.

    Fitted attributes (hmmlearn's names): ``startprob_ (K,)``, ``transmat_ (K, K)``,
    ``means_ (K, D)``, ``covars_ (K, D, D)`` (full matrices whatever the
    ``covariance_type``, as hmmlearn's ``covars_``), ``converged_``, ``n_iter_``,
    ``lower_bound_`` (the final total objective: :math:`\log p(X)`, or
    :math:`\max_Z \log p(X, Z)` for Viterbi training), ``n_features_in_`` and ``model_``
    (whose ``history`` holds the per-iteration log-likelihood, hmmlearn's
    ``monitor_.history``).
    """

    _integer_params = ("n_components", "n_iter", "n_init")
    _nonnegative_params = ("tol", "reg_covar")
    _choices: ClassVar[dict] = {"covariance_type": ge.COVARIANCE_TYPES, "method": ("em", "viterbi", "svi"),
                "algorithm": ("viterbi", "map")}

    def __init__(self, n_components=1, covariance_type="diag", *, reg_covar=1e-6,
                 startprob_prior=1.0, transmat_prior=1.0, algorithm="viterbi",
                 random_state=None, n_iter=10, tol=1e-2, params="stmc", init_params="kmeans",
                 n_init=1, method="em"):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.params = params
        self.init_params = init_params
        self.n_init = n_init
        self.method = method

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

    def _make_model(self, n_features):
        return _GaussianHMM(self.n_components, n_features, self.covariance_type,
                            self.reg_covar, params=self.params,
                            start_concentration=self.startprob_prior,
                            trans_concentration=self.transmat_prior)

    def _export(self, model):
        self.startprob_ = model.start_probs.detach().numpy()
        self.transmat_ = model.trans_probs.detach().numpy()
        self.means_ = model.means.detach().numpy()
        self.covars_ = ge.full_covariances(model.covariances, model.covariance_type,
                                           (model.num_states,), model.dim).numpy()

    def _model_args(self, X, lengths=None, sequence_ids=None):
        """``X`` split into its sequences (a list of tensors, or ``X`` itself when it is
        one sequence)."""
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
            return (X,)
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or lengths.shape[0] == 0 or lengths.dtype.kind not in "iu":
            raise ValueError(f"lengths must be a non-empty 1-D array of integers, got "
                             f"{lengths!r}")
        if (lengths < 1).any() or lengths.sum() != n:
            raise ValueError(f"lengths must be >= 1 and sum to the number of rows of X "
                             f"({n}), got a sum of {int(lengths.sum())}")
        return (list(torch.split(X, lengths.tolist())),)

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
