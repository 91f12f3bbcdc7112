r"""Factor analysis and probabilistic PCA, trained by exact EM."""

from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.models.base import model_method
from pyroem.models.checks import check_option, check_positive_int, make_generator
from pyroem.models.factor.common import FactorModel, check_dims, check_reg_covar
from pyroem.models.factor.gaussian import factor_terms, ppca_closed_form
from pyroem.models.factor.mstep import factor_statistics, maximize_factors
from pyroem.models.factor.posterior import FactorPosterior

NOISE_TYPES = ("diagonal", "isotropic")


class FactorAnalysis(FactorModel):
    r"""
    Factor analysis: ``L`` latent factors per point explain the correlations of ``D``
    observed dimensions,

    .. math::

        z_n \sim \mathcal N(0, I_L), \qquad
        x_n | z_n \sim \mathcal N(W^\top z_n + \mu, \Psi), \qquad n = 1..N,

    so that :math:`x_n \sim \mathcal N(\mu, W^\top W + \Psi)`, with :math:`\Psi` diagonal
    (``noise="diagonal"``) or :math:`\sigma^2 I` (``noise="isotropic"``: probabilistic
    PCA, :class:`PPCA`). Written as a Pyro model (a ``pyro.plate`` over points, ``z``
    sampled in it) with a guide :math:`q(z_n) = \mathcal N(m_n, C)` (one mean per point,
    one covariance for all: the exact posterior's covariance does not depend on
    :math:`x_n`).

    **E-step** (exact, :math:`O(N D L)`; see :mod:`pyroem.models.factor.gaussian`):
    :math:`C = (I + W \Psi^{-1} W^\top)^{-1}`, :math:`m_n = C W \Psi^{-1} (x_n - \mu)`,
    and :math:`\log p(x_n)` by the matrix determinant lemma and the Woodbury identity.
    Written into the guide, it makes the ELBO equal :math:`\log p(X)` (KL = 0).

    **M-step** (Rubin and Thayer, 1982; Tipping and Bishop, 1999 for PPCA): the joint
    maximiser of :math:`Q` over :math:`(W, \mu)` and then :math:`\Psi`, see
    :mod:`pyroem.models.factor.mstep`; ``reg_covar`` is then added to :math:`\Psi`.

    **Initialisation**: ``init="pca"`` (default) takes :math:`\mu` the data mean and
    :math:`W` from the top ``L`` eigenvectors of the sample covariance :math:`S` (divided
    by ``N``), as Tipping and Bishop's closed form: for PPCA this *is* the maximum
    likelihood estimate, so EM stops at once; for diagonal noise
    :math:`\Psi = \operatorname{diag}(S - W^\top W)`. ``"random"``: Gaussian loadings
    scaled to the data, :math:`\Psi = \operatorname{diag}(S)`, from the fit's
    ``torch.Generator``; ``"given"``: the parameters as set.

    :param int dim: ``D``.
    :param int latent_dim: ``L``, ``1 <= L < D`` (with :math:`L \ge D` the loadings and
        the noise are not identifiable).
    :param str noise: ``"diagonal"`` or ``"isotropic"``.
    :param float reg_covar: the noise floor: added to every noise variance after each
        M-step (and at initialisation), so that :math:`\Psi` stays invertible when a
        dimension is explained entirely by the factors (a Heywood case) or the data lie
        on a subspace. It is not a prior: :math:`\log p(X)` is monotone up to it. With
        ``reg_covar=0`` a zero noise variance is a ``ValueError``.

    Parameters (readable and settable, validated): ``components`` :math:`W`, ``(L, D)``
    as scikit-learn's ``components_``; ``mean`` :math:`\mu`, ``(D,)``;
    ``noise_variance``, ``(D,)`` (a repeated :math:`\sigma^2` when isotropic). The Pyro
    parameters behind them are ``loadings``, ``loc`` and ``psi`` (``(1,)`` when
    isotropic); the guide's are ``q_loc (N, L)`` and ``q_scale_tril (L, L)``.
    """

    inits = ("pca", "random", "given")
    default_init = "pca"
    guide_params: ClassVar[dict] = {"q_loc": (constraints.real, 1),
                    "q_scale_tril": (constraints.lower_cholesky, 2)}

    def __init__(self, dim, latent_dim, noise="diagonal", reg_covar=1e-6):
        super().__init__()
        self.dim, self.latent_dim = check_dims(dim, latent_dim)
        self.noise = check_option("noise", noise, NOISE_TYPES)
        self.reg_covar = check_reg_covar(reg_covar)
        L, D = self.latent_dim, self.dim
        self.loadings = PyroParam(torch.eye(L, D))
        self.loc = PyroParam(torch.zeros(D))
        self.psi = PyroParam(torch.ones(1 if self.isotropic else D),
                             constraint=constraints.positive)

    @property
    def isotropic(self):
        return self.noise == "isotropic"

    # ------------------------------------------------------------------ parameters
    @property
    def components(self):
        r"""The loadings :math:`W`, shape ``(L, D)`` (one factor per row)."""
        return self.loadings.detach()

    @components.setter
    def components(self, value):
        self.loadings = self._checked("components", value, (self.latent_dim, self.dim)).clone()

    @property
    def mean(self):
        r"""The mean :math:`\mu`, shape ``(D,)``."""
        return self.loc.detach()

    @mean.setter
    def mean(self, value):
        self.loc = self._checked("mean", value, (self.dim,)).clone()

    @property
    def covariance(self):
        r"""The marginal covariance :math:`W^\top W + \Psi`, shape ``(D, D)``."""
        w = self.components
        return w.T @ w + torch.diag(self.noise_variance)

    # ------------------------------------------------------------------ model and guide
    @model_method
    def model(self, x):
        """``z_n ~ N(0, I_L)``, ``x_n ~ N(z_n @ components + mean, diag(noise_variance))``.

        :param torch.Tensor x: data ``(N, D)``.
        """
        loadings, loc, scale = self.loadings, self.loc, self.psi.sqrt()
        prior = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ loadings + loc, scale).to_event(1), obs=x)

    @model_method
    def guide(self, x):
        r"""``z_n ~ N(q_loc[n], q_scale_tril q_scale_tril^T)``: set exactly by EM's
        E-step, trained by SVI; starts at the prior."""
        n, L = x.shape[0], self.latent_dim
        if self._q_shape("q_loc") != (n, L) or self._q_shape("q_scale_tril") != (L, L):
            eye = torch.eye(L, dtype=x.dtype, device=x.device)
            self._set_q(q_loc=x.new_zeros(n, L), q_scale_tril=eye)
        loc, tril = self.q_loc, self.q_scale_tril  # read params outside the plate
        with pyro.plate("data", n):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=tril))

    # ------------------------------------------------------------------ EM protocol
    def e_step(self, x, hard=False):
        r"""The exact posterior of every :math:`z_n` and :math:`\log p(X)`: a
        :class:`~pyroem.models.factor.FactorPosterior`.

        :raises ValueError: for ``hard=True`` (no Viterbi training for continuous latents).
        """
        self._reject_hard(hard)
        with torch.no_grad():
            terms = factor_terms(x, self.components, self.mean, self.noise_variance)
        return FactorPosterior(terms.log_prob, terms.loc, terms.covariance)

    def write_posterior(self, posterior, x):
        """E-step: the guide's ``q(z_n)`` := the exact posterior."""
        self._set_q(q_loc=posterior.loc, q_scale_tril=posterior.scale_tril[0])

    def expected_statistics(self, posterior, x):
        """Expected sufficient statistics, additive over points (see
        :func:`~pyroem.models.factor.mstep.factor_statistics`, one component)."""
        resp = x.new_ones(1, x.shape[0])
        return factor_statistics(x, resp, posterior.loc.unsqueeze(0), posterior.covariance,
                                 x.mean(0))

    def maximize(self, stats):
        """M-step: the closed-form maximiser of Q (see the class docstring)."""
        loadings, means, noise = maximize_factors(stats, self.reg_covar, self.isotropic)
        self.loadings, self.loc, self.psi = loadings[0], means[0], noise

    # ------------------------------------------------------------------ fitting hooks
    def _svi_elbo(self):
        return pyro.infer.Trace_ELBO()

    def _initialize(self, args, init, generator):
        if init == "given":
            return
        (x,) = args
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / x.shape[0]
        if init == "pca":
            loadings, _ = ppca_closed_form(cov, self.latent_dim)
            noise = cov.diagonal() - loadings.square().sum(0)  # diag(S - W^T W) >= 0
        else:  # "random"
            var = cov.diagonal()
            loadings = self._sample_noise((self.latent_dim, self.dim), generator) \
                * (var / self.latent_dim).sqrt()
            noise = var
        self.psi = self._start_noise(noise, cov.diagonal())
        self.loadings, self.loc = loadings, mean

    @property
    def num_parameters(self):
        r"""Free parameters: :math:`DL - L(L-1)/2` loadings (up to rotation), the mean
        and ``D`` noise variances (one when isotropic)."""
        D, L = self.dim, self.latent_dim
        return D * L - L * (L - 1) // 2 + D + (1 if self.isotropic else D)

    # ------------------------------------------------------------------ scoring
    def log_prob(self, x):
        r"""Per-point :math:`\log \mathcal N(x_n | \mu, W^\top W + \Psi)`, shape ``(N,)``,
        in :math:`O(N D L)`."""
        (x,) = self._data(x)
        with torch.no_grad():
            return factor_terms(x, self.components, self.mean, self.noise_variance).log_prob

    def posterior(self, x):
        """The exact :class:`~pyroem.models.factor.FactorPosterior` of every point."""
        return self.e_step(*self._data(x))

    def transform(self, x):
        r"""The posterior means :math:`E[z_n | x_n]`, shape ``(N, L)`` (as scikit-learn's
        ``FactorAnalysis.transform``)."""
        return self.posterior(x).loc

    def sample(self, num_samples, seed=None):
        """Draw ``num_samples`` points from a ``torch.Generator`` seeded with ``seed``
        (a fresh seed when ``None``); returns ``(x (n, D), z (n, L))``."""
        num_samples = check_positive_int("num_samples", num_samples)
        generator = make_generator(seed)
        z = self._sample_noise((num_samples, self.latent_dim), generator)
        eps = self._sample_noise((num_samples, self.dim), generator)
        x = z @ self.components + self.mean + eps * self.noise_variance.sqrt()
        return x, z


class PPCA(FactorAnalysis):
    r"""
    Probabilistic PCA (Tipping and Bishop, 1999): :class:`FactorAnalysis` with isotropic
    noise :math:`\Psi = \sigma^2 I`. Its maximum-likelihood estimate is in closed form
    (the top ``L`` eigenvectors of the sample covariance), which ``init="pca"`` computes;
    EM reaches it from any other start.

    :param int dim: ``D``.
    :param int latent_dim: ``L < D``.
    :param float reg_covar: the floor added to :math:`\sigma^2`.
    """

    not_config = ("name", "noise")

    def __init__(self, dim, latent_dim, reg_covar=1e-6):
        super().__init__(dim, latent_dim, noise="isotropic", reg_covar=reg_covar)
