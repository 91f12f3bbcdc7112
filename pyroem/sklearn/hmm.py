"""hmmlearn's API (:class:`~hmmlearn.hmm.GaussianHMM`, :class:`~hmmlearn.hmm.CategoricalHMM`,
:class:`~hmmlearn.hmm.GMMHMM`) on pyroem's models."""

from typing import ClassVar

from pyroem.models import GMMHMM as _GMMHMM
from pyroem.models import CategoricalHMM as _CategoricalHMM
from pyroem.models import GaussianHMM as _GaussianHMM
from pyroem.models import gaussian_emission as ge
from pyroem.sklearn.sequences import HMMEstimator


class GaussianHMM(HMMEstimator):
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

    def _make_model(self, n_features):
        return _GaussianHMM(self.n_components, n_features, self.covariance_type,
                            self.reg_covar, params=self.params,
                            start_concentration=self.startprob_prior,
                            trans_concentration=self.transmat_prior)

    def _export(self, model):
        self._export_chain(model)
        self.means_ = model.means.detach().numpy()
        self.covars_ = ge.full_covariances(model.covariances, model.covariance_type,
                                           (model.num_states,), model.dim).numpy()



class CategoricalHMM(HMMEstimator):
    r"""
    A hidden Markov model over discrete symbols, with the API of
    :class:`hmmlearn.hmm.CategoricalHMM`; see :class:`pyroem.models.CategoricalHMM`.

    ``X`` is ``(n_samples, 1)`` of integer symbols ``0 .. n_features - 1`` (hmmlearn's
    layout), the sequences one after another, with ``lengths`` or ``sequence_ids`` as for
    :class:`GaussianHMM`.

    :param int n_components: number of hidden states ``K``.
    :param startprob_prior: Dirichlet concentration of the start probabilities.
    :param transmat_prior: Dirichlet concentration of each transition row.
    :param int n_features: number of symbols; ``None``: one more than the largest symbol
        seen by ``fit``.
    :param str params: trained parameters, letters of ``"ste"`` (start, transitions,
        emissions).
    :param str init_params: ``"random"``: emission rows from a flat Dirichlet (start and
        transitions uniform).

    The other parameters as :class:`GaussianHMM`. Fitted attributes: ``startprob_``,
    ``transmat_``, ``emissionprob_ (K, n_features)``, ``n_features_`` (symbols),
    ``converged_``, ``n_iter_``, ``lower_bound_``, ``model_``.
    """

    _inits: ClassVar[dict] = {"random": "random"}
    _integer_params = ("n_components", "n_iter", "n_init")
    _nonnegative_params = ("tol",)
    _choices: ClassVar[dict] = {"method": ("em", "viterbi", "svi"), "algorithm": ("viterbi", "map")}

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, *,
                 n_features=None, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2,
                 params="ste", init_params="random", n_init=1, method="em"):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.n_features = n_features
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.params = params
        self.init_params = init_params
        self.n_init = n_init
        self.method = method

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # symbols are integers >= 0
        return tags

    def _validate(self, X, reset):
        """Integer symbols in one column, as a ``(n_samples,)`` long tensor."""
        x = super()._validate(X, reset).double()
        if x.shape[1] != 1:
            raise ValueError(f"X must hold one column of integer symbols, got {x.shape[1]}")
        x = x[:, 0]
        if ((x < 0) | (x != x.round())).any():
            raise ValueError("X must hold integer symbols >= 0")
        symbols = getattr(self, "n_features_", None) if not reset else self.n_features
        if symbols is not None and (x >= symbols).any():
            raise ValueError(f"X holds symbol {int(x.max())}, beyond n_features={symbols} "
                             f"symbols (0 .. {symbols - 1})")
        return x.long()

    def _make_model(self, n_features):
        # n_features of the data is 1 (the symbol column); the model's is the alphabet
        self.n_features_ = self.n_features or int(self._last_symbols) + 1
        # float64 probabilities, as hmmlearn (symbols carry no floating dtype to follow)
        return _CategoricalHMM(self.n_components, self.n_features_, params=self.params,
                               start_concentration=self.startprob_prior,
                               trans_concentration=self.transmat_prior).double()

    def _model_args(self, X, lengths=None, sequence_ids=None):
        self._last_symbols = int(X.max())
        return super()._model_args(X, lengths, sequence_ids)

    def _export(self, model):
        self._export_chain(model)
        self.emissionprob_ = model.emission_probs.detach().numpy()


class GMMHMM(HMMEstimator):
    r"""
    A hidden Markov model with Gaussian-mixture emissions, with the API of
    :class:`hmmlearn.hmm.GMMHMM`; see :class:`pyroem.models.GMMHMM`.

    :param int n_components: number of hidden states ``K``.
    :param int n_mix: mixture components per state ``M`` (hmmlearn's name).
    :param str covariance_type: ``"diag"`` (default), ``"full"``, ``"spherical"`` or
        ``"tied"``, with hmmlearn's GMMHMM shapes.
    :param str params: trained parameters, letters of ``"stwmc"`` (``w``: mixture weights).

    The other parameters as :class:`GaussianHMM`. Fitted attributes: ``startprob_``,
    ``transmat_``, ``weights_ (K, M)``, ``means_ (K, M, D)``, ``covars_`` (hmmlearn's shape
    for ``covariance_type``), ``converged_``, ``n_iter_``, ``lower_bound_``, ``model_``.
    """

    _integer_params = ("n_components", "n_mix", "n_iter", "n_init")
    _nonnegative_params = ("tol", "reg_covar")
    _choices: ClassVar[dict] = {"covariance_type": ge.COVARIANCE_TYPES,
                                "method": ("em", "viterbi", "svi"),
                                "algorithm": ("viterbi", "map")}

    def __init__(self, n_components=1, n_mix=1, startprob_prior=1.0, transmat_prior=1.0, *,
                 covariance_type="diag", reg_covar=1e-6, algorithm="viterbi", random_state=None,
                 n_iter=10, tol=1e-2, params="stwmc", init_params="kmeans", n_init=1,
                 method="em"):
        self.n_components = n_components
        self.n_mix = n_mix
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.params = params
        self.init_params = init_params
        self.n_init = n_init
        self.method = method

    def _make_model(self, n_features):
        return _GMMHMM(self.n_components, self.n_mix, n_features, self.covariance_type,
                       self.reg_covar, params=self.params,
                       start_concentration=self.startprob_prior,
                       trans_concentration=self.transmat_prior)

    def _export(self, model):
        self._export_chain(model)
        self.weights_ = model.weights.detach().numpy()
        self.means_ = model.means.detach().numpy()
        self.covars_ = model.covariances.numpy()
