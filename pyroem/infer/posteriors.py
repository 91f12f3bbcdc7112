r"""
Typed results of an exact E-step.

Every E-step returns a :class:`Posterior`: the exact :math:`\log p(X|\eta)` under the
parameters it ran with, and :math:`q(Z) = p(Z|X, \eta)` in the form that the M-step of
that kind of model reads:

- :class:`DiscretePosterior`: the posterior marginal of every factor (sample site) of a
  model whose latents are discrete and enumerated (mixtures, user models);
- :class:`ChainPosterior`: a Markov chain's unary marginals :math:`\gamma_t(k)` and its
  expected transition counts :math:`\sum_t \xi_t(i, j)` (hidden Markov models);
- :class:`GaussianPosterior`: a Gaussian :math:`q(z_i) = \mathcal N(m_i, C_i)` per
  continuous latent (PLDA, factor analysis, linear-Gaussian state-space models).

With ``hard=True`` (Viterbi training) the discrete posteriors are point masses at the
most probable joint assignment and ``log_evidence`` is :math:`\max_Z \log p(X, Z|\eta)`.
"""

import torch


class Posterior:
    r"""
    The result of an exact E-step.

    :ivar torch.Tensor log_evidence: :math:`\log p(X|\eta)` (0-dim; with ``hard=True``
        :math:`\max_Z \log p(X, Z|\eta)`).
    """

    def __init__(self, log_evidence):
        self.log_evidence = log_evidence

    def __repr__(self):
        return f"{type(self).__name__}(log_evidence={float(self.log_evidence):.6g})"


class DiscretePosterior(Posterior):
    r"""
    Posterior marginals of the factors of a model with enumerated discrete latents
    (:func:`~pyroem.infer.exact_posterior`).

    :ivar dict marginals: for each sample site of the model, the posterior marginal of that
        site's factor over its enumerated variables, in the shape of the site's
        ``log_prob`` (enumeration dims on the left). For an observed ``x`` whose
        distribution depends on ``z`` it is :math:`q(z)`; for an HMM transition site
        ``z_t`` written with ``pyro.markov`` it is the pairwise :math:`\xi_t(z_{t-1}, z_t)`.
    :ivar trace: the enumerated model trace the marginals refer to (``None`` when the
        marginals were given directly, e.g. responsibilities that start a fit).
    :ivar dict chains: for each observed ``DiscreteHMM`` site that took the vectorised
        E-step, its :class:`~pyroem.infer.chains.ChainStatistics` (its marginal is then 1:
        the site depends on no enumerated variable).

    ``posterior[name]`` is ``posterior.marginals[name]``.
    """

    def __init__(self, log_evidence, marginals, trace=None, chains=None):
        super().__init__(log_evidence)
        self.marginals = marginals
        self.trace = trace
        self.chains = {} if chains is None else chains

    def __getitem__(self, name):
        return self.marginals[name]

    @classmethod
    def given(cls, **marginals):
        """A posterior holding given marginals and no evidence (e.g. the one-hot
        responsibilities of a k-means initialisation, fed to a closed-form M-step)."""
        return cls(torch.tensor(float("nan")), marginals)


class ChainPosterior(Posterior):
    r"""
    The exact posterior of a batch of Markov chains :math:`z_{b,1} \to \dots \to
    z_{b,T_b}` (forward-backward; Viterbi with ``hard=True``).

    :ivar torch.Tensor gamma: :math:`\gamma_{b,t}(k) = q(z_{b,t} = k)`, shape ``(B, T, K)``
        (zero on padding; one-hot for ``hard``).
    :ivar torch.Tensor start: expected initial states :math:`\sum_b \gamma_{b,1}`, ``(K,)``.
    :ivar torch.Tensor trans: expected transitions
        :math:`\sum_{b,t} \xi_{b,t}(i, j)`, ``(K, K)``.
    :ivar torch.Tensor log_prob: :math:`\log p(x_b)` per chain, ``(B,)`` (with ``hard``,
        :math:`\max_z \log p(x_b, z)`); ``log_evidence`` is its sum.
    """

    def __init__(self, log_prob, gamma, start, trans):
        super().__init__(log_prob.sum())
        self.log_prob = log_prob
        self.gamma = gamma
        self.start = start
        self.trans = trans


class GaussianPosterior(Posterior):
    r"""
    A Gaussian posterior :math:`q(z_i) = \mathcal N(m_i, C_{g_i})` of continuous latents
    :math:`z_i`, whose covariances may be shared by groups of latents (the latents of a
    group have the same posterior covariance, e.g. PLDA's speakers of equal count).

    :ivar torch.Tensor loc: posterior means :math:`m_i`, shape ``(S, D)``.
    :ivar torch.Tensor group: ``(S,)`` index of each latent's covariance, or ``None`` when
        each latent has its own (``G == S``).

    Subclasses may store the covariances in a factorised form; :attr:`covariance` and
    :attr:`scale_tril` give them as ``(G, D, D)`` matrices.
    """

    def __init__(self, log_evidence, loc, covariance=None, group=None):
        super().__init__(log_evidence)
        self.loc = loc
        self._covariance = covariance
        self.group = group

    @property
    def covariance(self):
        """The distinct posterior covariances, shape ``(G, D, D)``."""
        return self._covariance

    @property
    def scale_tril(self):
        """Lower Cholesky factors of :attr:`covariance`, shape ``(G, D, D)``."""
        return torch.linalg.cholesky(self.covariance)

    def latent_covariance(self):
        """The posterior covariance of every latent, shape ``(S, D, D)``."""
        cov = self.covariance
        return cov if self.group is None else cov[self.group]
