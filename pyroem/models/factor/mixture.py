r"""A mixture of factor analysers (Ghahramani and Hinton, 1996), trained by exact EM."""

from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from pyro.ops.indexing import Vindex
from torch.distributions import constraints

from pyroem.models.base import model_method
from pyroem.models.checks import check_positive_int, make_generator
from pyroem.models.factor.common import FactorModel, check_dims, check_reg_covar
from pyroem.models.factor.gaussian import factor_terms, ppca_closed_form
from pyroem.models.factor.mstep import factor_statistics, maximize_factors
from pyroem.models.factor.posterior import MixtureFactorPosterior
from pyroem.models.kmeans import kmeans


def _tiny_floor(p):
    # a weight of exactly 0 would be a -inf log-weight and NaN responsibilities
    return p.clamp_min(torch.finfo(p.dtype).tiny)


class MixtureOfFactorAnalyzers(FactorModel):
    r"""
    A mixture of ``K`` factor analysers sharing one diagonal noise (Ghahramani and
    Hinton, 1996): a discrete and a continuous latent per point,

    .. math::

        k_n \sim \mathrm{Categorical}(\pi), \qquad z_n \sim \mathcal N(0, I_L), \qquad
        x_n | k_n, z_n \sim \mathcal N(W_{k_n}^\top z_n + \mu_{k_n}, \Psi),

    so that :math:`p(x_n) = \sum_k \pi_k \mathcal N(x_n | \mu_k, W_k^\top W_k + \Psi)`: a
    Gaussian mixture whose covariances have ``L`` free directions each (with
    ``L = D - 1`` and small noise it approaches a full-covariance mixture).
    The Pyro model enumerates ``k`` and samples ``z`` in a plate over points; the guide
    holds :math:`q(k_n)\, q(z_n | k_n)` with
    :math:`q(z_n | k_n = k) = \mathcal N(m_{nk}, C_k)`, which contains the exact
    posterior (SVI uses ``TraceEnum_ELBO``, enumerating ``k`` in the guide).

    **E-step** (exact): per component the factor-analysis posterior
    :math:`C_k = (I + W_k \Psi^{-1} W_k^\top)^{-1}`,
    :math:`m_{nk} = C_k W_k \Psi^{-1} (x_n - \mu_k)`, and the responsibilities
    :math:`r_{nk} \propto \pi_k \mathcal N(x_n | \mu_k, W_k^\top W_k + \Psi)`
    (Woodbury and the determinant lemma, :math:`O(N K D L)`).

    **M-step**: :math:`\pi_k = \frac1N \sum_n r_{nk}`, then per component the joint
    update of :math:`(W_k, \mu_k)` and the shared :math:`\Psi` of
    :mod:`pyroem.models.factor.mstep`, plus ``reg_covar``.

    **Initialisation**: ``init="kmeans++"`` (default) fits PPCA in closed form to each
    k-means cluster (the loadings; the noise pooled over clusters); ``"random"`` does the
    same with random responsibilities; ``"given"`` keeps the parameters as set.

    :param int num_components: ``K``.
    :param int dim: ``D``.
    :param int latent_dim: ``L``, ``1 <= L < D``.
    :param float reg_covar: the noise floor added to :math:`\Psi` after each M-step.

    Parameters (readable and settable, validated): ``weights (K,)``, ``components``
    :math:`W_k`, ``(K, L, D)``; ``means`` :math:`\mu_k`, ``(K, D)``;
    ``noise_variance (D,)``; read-only ``covariances (K, D, D)``. The Pyro parameters
    behind them are ``pi``, ``loadings``, ``locs`` and ``psi``; the guide's are
    ``q_probs (N, K)``, ``q_loc (N, K, L)`` and ``q_scale_tril (K, L, L)``.
    """

    inits = ("kmeans++", "random", "given")
    default_init = "kmeans++"
    guide_params: ClassVar[dict] = {"q_probs": (constraints.simplex, 1),
                    "q_loc": (constraints.real, 2),
                    "q_scale_tril": (constraints.lower_cholesky, 3)}

    def __init__(self, num_components, dim, latent_dim, reg_covar=1e-6):
        super().__init__()
        self.num_components = check_positive_int("num_components", num_components)
        self.dim, self.latent_dim = check_dims(dim, latent_dim)
        self.reg_covar = check_reg_covar(reg_covar)
        K, L, D = self.num_components, self.latent_dim, self.dim
        self.pi = PyroParam(torch.full((K,), 1.0 / K), constraint=constraints.simplex)
        self.loadings = PyroParam(torch.eye(L, D).expand(K, L, D).clone())
        self.locs = PyroParam(torch.zeros(K, D))
        self.psi = PyroParam(torch.ones(D), constraint=constraints.positive)

    # ------------------------------------------------------------------ parameters
    @property
    def weights(self):
        r"""Mixing weights :math:`\pi`, shape ``(K,)``."""
        return self.pi.detach()

    @weights.setter
    def weights(self, value):
        value = self._checked("weights", value, (self.num_components,))
        if (value < 0).any() or not torch.isclose(value.sum(), value.new_tensor(1.0)):
            raise ValueError("weights must be non-negative and sum to 1")
        self.pi = _tiny_floor(value.clone())

    @property
    def components(self):
        r"""The loadings :math:`W_k`, shape ``(K, L, D)``."""
        return self.loadings.detach()

    @components.setter
    def components(self, value):
        shape = (self.num_components, self.latent_dim, self.dim)
        self.loadings = self._checked("components", value, shape).clone()

    @property
    def means(self):
        r"""The component means :math:`\mu_k`, shape ``(K, D)``."""
        return self.locs.detach()

    @means.setter
    def means(self, value):
        self.locs = self._checked("means", value, (self.num_components, self.dim)).clone()

    @property
    def covariances(self):
        r"""The components' covariances :math:`W_k^\top W_k + \Psi`, ``(K, D, D)``."""
        w = self.components
        return w.mT @ w + torch.diag(self.noise_variance)

    # ------------------------------------------------------------------ model and guide
    @model_method
    def model(self, x):
        """``k_n ~ Categorical(weights)`` (enumerated), ``z_n ~ N(0, I_L)``,
        ``x_n ~ N(z_n @ components[k_n] + means[k_n], diag(noise_variance))``."""
        loadings, locs, scale = self.loadings, self.locs, self.psi.sqrt()
        prior = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("component", dist.Categorical(self.pi),
                            infer={"enumerate": "parallel"})
            z = pyro.sample("z", prior)
            loc = torch.matmul(z.unsqueeze(-2), loadings[k]).squeeze(-2) + locs[k]
            pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)

    @model_method
    def guide(self, x):
        r"""``k_n ~ Categorical(q_probs[n])`` (enumerated), then
        ``z_n ~ N(q_loc[n, k_n], C_{k_n})``: set exactly by EM's E-step, trained by SVI;
        starts at uniform responsibilities and the prior."""
        n, K, L = x.shape[0], self.num_components, self.latent_dim
        if self._q_shape("q_loc") != (n, K, L) or self._q_shape("q_probs") != (n, K):
            eye = torch.eye(L, dtype=x.dtype, device=x.device)
            self._set_q(q_probs=x.new_full((n, K), 1.0 / K), q_loc=x.new_zeros(n, K, L),
                        q_scale_tril=eye.expand(K, L, L).clone())
        probs, loc, tril = self.q_probs, self.q_loc, self.q_scale_tril
        with pyro.plate("data", n):
            k = pyro.sample("component", dist.Categorical(probs),
                            infer={"enumerate": "parallel"})
            z_loc = Vindex(loc)[torch.arange(n, device=x.device), k]
            pyro.sample("z", dist.MultivariateNormal(z_loc, scale_tril=tril[k]))

    # ------------------------------------------------------------------ EM protocol
    def e_step(self, x, hard=False):
        r"""The exact posterior :math:`q(k_n)\, q(z_n | k_n)` and :math:`\log p(X)`: a
        :class:`~pyroem.models.factor.MixtureFactorPosterior`.

        :raises ValueError: for ``hard=True``.
        """
        self._reject_hard(hard)
        with torch.no_grad():
            noise = self.noise_variance
            # one component at a time: memory O(N D), not O(N K D)
            terms = [factor_terms(x, w, mu, noise) for w, mu in zip(self.components, self.means)]
            log_joint = torch.stack([t.log_prob for t in terms], -1) + self.weights.log()
            log_prob = log_joint.logsumexp(-1)
            resp = (log_joint - log_prob.unsqueeze(-1)).exp()
            loc = torch.stack([t.loc for t in terms], 1)
            cov = torch.stack([t.covariance for t in terms])
        return MixtureFactorPosterior(log_prob, resp, loc, cov)

    def write_posterior(self, posterior, x):
        """E-step: the guide's ``q(k_n) q(z_n | k_n)`` := the exact posterior."""
        q = _tiny_floor(posterior.responsibilities)
        self._set_q(q_probs=q / q.sum(-1, keepdim=True), q_loc=posterior.loc,
                    q_scale_tril=posterior.scale_tril)

    def expected_statistics(self, posterior, x):
        """Expected sufficient statistics per component, additive over points (see
        :func:`~pyroem.models.factor.mstep.factor_statistics`)."""
        return factor_statistics(x, posterior.responsibilities.T, posterior.loc.transpose(0, 1),
                                 posterior.covariance, x.mean(0))

    def maximize(self, stats):
        """M-step: the closed-form maximiser of Q (see the class docstring)."""
        loadings, means, noise = maximize_factors(stats, self.reg_covar)
        # as the Gaussian mixture: 10 eps keeps an empty component's weight positive
        n = stats["n"] + 10 * torch.finfo(stats["n"].dtype).eps
        self.loadings, self.locs, self.psi = loadings, means, noise
        self.pi = _tiny_floor(n / n.sum())

    # ------------------------------------------------------------------ fitting hooks
    def _check_fit(self, args):
        super()._check_fit(args)
        if args[0].shape[0] < self.num_components:
            raise ValueError(f"fit needs at least num_components={self.num_components} "
                             f"points, got {args[0].shape[0]}")

    def _initialize(self, args, init, generator):
        if init == "given":
            return
        (x,) = args
        K = self.num_components
        if init == "kmeans++":
            _, labels = kmeans(x, K, generator)
            resp = torch.nn.functional.one_hot(labels, K).to(x.dtype)
        else:  # "random": random responsibilities, as scikit-learn's mixtures
            resp = torch.rand(x.shape[0], K, generator=generator, dtype=x.dtype).to(x.device)
            resp = resp / resp.sum(-1, keepdim=True)
        self._start_from(x, resp)

    def _start_from(self, x, resp):
        """PPCA in closed form per component, weighted by ``resp (N, K)``; the noise is
        the components' unexplained variance, pooled."""
        n = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
        xc = x - x.mean(0)  # centred first: the covariances below lose less precision
        means_c = resp.T @ xc / n.unsqueeze(-1)
        cov = torch.matmul((resp.T.unsqueeze(-1) * xc).mT, xc) / n[:, None, None] \
            - means_c.unsqueeze(-1) * means_c.unsqueeze(-2)
        loadings, _ = ppca_closed_form(cov, self.latent_dim)
        unexplained = cov.diagonal(dim1=-2, dim2=-1) - loadings.square().sum(-2)
        pooled = (n.unsqueeze(-1) * unexplained).sum(0) / n.sum()
        self.psi = self._start_noise(pooled, xc.square().mean(0))
        self.loadings, self.locs = loadings, means_c + x.mean(0)
        self.pi = _tiny_floor(n / n.sum())

    @property
    def num_parameters(self):
        r"""Free parameters: per component :math:`DL - L(L-1)/2` loadings and a mean,
        the shared noise and ``K - 1`` weights."""
        K, D, L = self.num_components, self.dim, self.latent_dim
        return K * (D * L - L * (L - 1) // 2 + D) + D + K - 1

    # ------------------------------------------------------------------ scoring
    def log_prob(self, x):
        r"""Per-point :math:`\log \sum_k \pi_k \mathcal N(x_n | \mu_k, W_k^\top W_k +
        \Psi)`, shape ``(N,)``."""
        return self.posterior(x).log_prob

    def posterior(self, x):
        """The exact :class:`~pyroem.models.factor.MixtureFactorPosterior` of every point."""
        return self.e_step(*self._data(x))

    def predict(self, x):
        """The most probable component of each point, shape ``(N,)``."""
        return self.posterior(x).responsibilities.argmax(-1)

    def transform(self, x):
        r"""The posterior means :math:`E[z_n | x_n] = \sum_k r_{nk} m_{nk}`, ``(N, L)``."""
        return self.posterior(x).mean()

    def sample(self, num_samples, seed=None):
        """Draw ``num_samples`` points from a ``torch.Generator`` seeded with ``seed``;
        returns ``(x (n, D), k (n,), z (n, L))``."""
        num_samples = check_positive_int("num_samples", num_samples)
        generator = make_generator(seed)
        k = torch.multinomial(self.weights.cpu(), num_samples, replacement=True,
                              generator=generator).to(self.psi.device)
        z = self._sample_noise((num_samples, self.latent_dim), generator)
        eps = self._sample_noise((num_samples, self.dim), generator)
        x = (torch.matmul(z.unsqueeze(-2), self.components[k]).squeeze(-2) + self.means[k]
             + eps * self.noise_variance.sqrt())
        return x, k, z
