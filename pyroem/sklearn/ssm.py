"""A linear-Gaussian state-space model as a scikit-learn estimator (pykalman's
:class:`~pykalman.KalmanFilter` in scikit-learn's shape): ``transform`` gives the smoothed
state means."""

from typing import ClassVar

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from pyroem.models import LinearGaussianSSM as _LinearGaussianSSM
from pyroem.sklearn.base import EMEstimator, unavailable
from pyroem.sklearn.sequences import split_sequences


class LinearGaussianSSM(TransformerMixin, EMEstimator):
    r"""
    :math:`z_1 \sim \mathcal N(m_0, P_0)`, :math:`z_{t+1} = A z_t + w_t`,
    :math:`x_t = C z_t + v_t` (noise covariances ``Q``, ``R``), fitted by exact EM (Kalman
    filter and RTS smoother); see :class:`pyroem.models.LinearGaussianSSM`.

    The rows of ``X`` are frames: one sequence, or several with ``lengths`` or
    ``sequence_ids`` (as :class:`~pyroem.sklearn.GaussianHMM`).

    :param int n_components: state dimension ``S``.
    :param str params: trained parameters, letters of ``"acqrmp"`` (as pykalman's
        ``em_vars``: transition, observation, both noises, initial mean and covariance).
    :param int max_iter: EM iterations at most.
    :param float tol: stop when the log-likelihood per frame gains less.
    :param float reg_covar: added to the covariance diagonals after each M-step.

    Fitted attributes (pykalman's names): ``transition_matrices_ (S, S)``,
    ``observation_matrices_ (O, S)``, ``transition_covariance_``,
    ``observation_covariance_``, ``initial_state_mean_``, ``initial_state_covariance_``,
    ``n_iter_``, ``converged_``, ``lower_bound_``, ``model_``. ``score`` is the total
    log-likelihood (pykalman's ``loglikelihood``); ``transform`` the smoothed means
    :math:`E[z_t | x_{1:T}]`, ``(n_samples, S)``.
    """

    _inits: ClassVar[dict] = {"pca": "pca"}
    _integer_params = ("n_components", "max_iter")
    _nonnegative_params = ("tol", "reg_covar")
    _choices: ClassVar[dict] = {"method": ("em", "svi")}
    n_init, init_params = 1, "pca"

    def __init__(self, n_components=1, *, params="acqrmp", max_iter=100, tol=1e-6,
                 reg_covar=1e-6, random_state=None, method="em"):
        self.n_components = n_components
        self.params = params
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.random_state = random_state
        self.method = method

    def _model_args(self, X, lengths=None, sequence_ids=None):
        if X.shape[0] < 2:  # scikit-learn's words
            raise ValueError(f"a state-space model needs at least 2 frames, got n_samples = "
                             f"{X.shape[0]}")
        return (split_sequences(X, lengths, sequence_ids),)

    def _make_model(self, n_features):
        return _LinearGaussianSSM(self.n_components, n_features, params=self.params,
                                  reg_covar=self.reg_covar)

    def _export(self, model):
        self.transition_matrices_ = model.transition_matrix.detach().numpy()
        self.observation_matrices_ = model.observation_matrix.detach().numpy()
        self.transition_covariance_ = model.transition_cov.detach().numpy()
        self.observation_covariance_ = model.observation_cov.detach().numpy()
        self.initial_state_mean_ = model.initial_mean.detach().numpy()
        self.initial_state_covariance_ = model.initial_cov.detach().numpy()

    def fit(self, X, y=None, lengths=None, sequence_ids=None):
        """Fit to the sequences of ``X`` (rows are frames). Returns ``self``."""
        return super().fit(X, y, lengths=lengths, sequence_ids=sequence_ids)

    def _sequences(self, X, lengths, sequence_ids):
        return split_sequences(self._fitted(X), lengths, sequence_ids)

    def score(self, X, y=None, lengths=None, sequence_ids=None):
        """Total log-likelihood of the sequences (pykalman's ``loglikelihood``)."""
        return float(self.model_.log_prob(self._sequences(X, lengths, sequence_ids)).sum())

    def transform(self, X, lengths=None, sequence_ids=None):
        """Smoothed state means, ``(n_samples, n_components)``, frames in ``X``'s order."""
        means, _ = self.model_.smooth(self._sequences(X, lengths, sequence_ids))
        return np.concatenate([m.numpy() for m in means]) if isinstance(means, list) \
            else means.numpy()

    def sample(self, n_samples=1):
        """One sequence: ``(X (n_samples, O), Z (n_samples, S))``."""
        check_is_fitted(self, "model_")
        x, z = self.model_.sample(n_samples, seed=self._seed())
        return x.numpy(), z.numpy()

    predict = predict_proba = fit_predict = score_samples = unavailable(
        "a LinearGaussianSSM has continuous states: use transform (smoothed means) or score")
