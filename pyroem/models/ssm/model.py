r"""
:class:`LinearGaussianSSM`: a linear-Gaussian state-space model written as a Pyro program,
trained by exact EM (Kalman filter and RTS smoother E-step, closed-form M-step) or SVI
on the same model and guide.
"""

from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.models.base import EMModel, model_method
from pyroem.models.checks import check_positive_int
from pyroem.models.hmm.sequences import pack_sequences
from pyroem.models.ssm import mstep
from pyroem.models.ssm.initialization import pca_start
from pyroem.models.ssm.kalman import kalman_filter, rts_smoother
from pyroem.models.ssm.parameters import SSMParameters
from pyroem.models.ssm.posterior import StatePosterior
from pyroem.models.ssm.scoring import SSMScoring


class LinearGaussianSSM(SSMScoring, SSMParameters, EMModel):
    r"""
    A linear-Gaussian state-space model (linear dynamical system),

    .. math::

        z_1 \sim \mathcal N(\mu_0, P_0), \qquad
        z_t | z_{t-1} \sim \mathcal N(A z_{t-1}, Q), \qquad
        x_t | z_t \sim \mathcal N(C z_t, R),

    the first state emitting the first observation (as pykalman and dynamax). It is a Pyro
    program (a plate over sequences, ``pyro.markov`` over time, the states sampled from
    ``MultivariateNormal``, frames beyond a sequence's length masked); the guide holds
    :math:`q(z)` as a backward Gaussian chain,
    :math:`q(z_{T_b}) \prod_{t < T_b} q(z_t | z_{t+1})`, the family of the exact
    posterior.

    **E-step**: the Kalman filter and the RTS smoother
    (:mod:`~pyroem.models.ssm.kalman`) give :math:`\log p(x)`, the smoothed marginals and
    the pairwise covariances :math:`\mathrm{Cov}(z_{t+1}, z_t | x)`; they are written into
    the guide (KL = 0). **M-step**: closed form (:mod:`~pyroem.models.ssm.mstep`,
    Shumway and Stoffer; Ghahramani and Hinton), exactly pykalman's ``em`` on one
    sequence.

    :param int state_dim: ``S``.
    :param int obs_dim: ``O``.
    :param str params: the parameters that ``fit`` trains, one letter each: ``a``
        transition matrix, ``c`` observation matrix, ``q`` transition covariance, ``r``
        observation covariance, ``m`` initial mean, ``p`` initial covariance; the others
        stay as set. Default: all (``"acqrmp"``).
    :param float reg_covar: the noise floor, added to the diagonal of each covariance
        that the M-step updates (``0`` for plain maximum likelihood).

    Parameters (readable and settable, checked): ``transition_matrix (S, S)``,
    ``observation_matrix (O, S)``, ``transition_cov (S, S)``, ``observation_cov
    (O, O)``, ``initial_mean (S,)``, ``initial_cov (S, S)``; several at once, checked
    before any changes, with :meth:`set_parameters`. Defaults are pykalman's (identity
    matrices, zero mean). Data: one sequence ``(T, O)``, a list of them, or a padded
    ``(B, T, O)`` batch with ``lengths``.
    """

    inits = ("pca", "given")
    default_init = "pca"
    max_plate_nesting = 1
    guide_params: ClassVar[dict] = {"q_loc": (constraints.real, 2),
                    "q_gain": (constraints.real, 3),
                    "q_scale_tril": (constraints.lower_cholesky, 3)}

    def __init__(self, state_dim, obs_dim, params=None, reg_covar=1e-6):
        super().__init__()
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.obs_dim = check_positive_int("obs_dim", obs_dim)
        self.params = params
        if isinstance(reg_covar, bool) or not isinstance(reg_covar, (int, float)) \
                or not reg_covar >= 0:
            raise ValueError(f"reg_covar must be a number >= 0, got {reg_covar!r}")
        self.reg_covar = float(reg_covar)
        self._register_parameters()

    @property
    def params(self):
        """The letters of the parameters that ``fit`` trains (see the class docstring)."""
        return self._params

    @params.setter
    def params(self, value):
        value = mstep.LETTERS if value is None else value
        if not isinstance(value, str) or any(c not in mstep.LETTERS for c in value):
            raise ValueError(f"params must be a string of letters from {mstep.LETTERS!r}, "
                             f"got {value!r}")
        self._params = value

    # ------------------------------------------------------------------ model and guide
    @model_method
    def model(self, x, lengths):
        """The generative model over a padded batch ``x (B, T, O)`` with ``lengths (B,)``."""
        B, T = x.shape[:2]
        A, C = self.transition_matrix, self.observation_matrix
        chol_q, chol_r = self.transition_scale_tril, self.observation_scale_tril
        first = dist.MultivariateNormal(self.initial_mean, scale_tril=self.initial_scale_tril)
        with pyro.plate("sequences", B, dim=-1):
            z = None
            for t in pyro.markov(range(T)):
                with poutine.mask(mask=lengths > t):
                    # validate_args=False: the factors are lower_cholesky PyroParams
                    prior = first if z is None else dist.MultivariateNormal(
                        z @ A.T, scale_tril=chol_q, validate_args=False)
                    z = pyro.sample(f"z_{t}", prior)
                    pyro.sample(f"x_{t}", dist.MultivariateNormal(
                        z @ C.T, scale_tril=chol_r, validate_args=False), obs=x[:, t])

    @model_method
    def guide(self, x, lengths):
        r"""The backward chain :math:`z_t \sim \mathcal N(\text{loc}_t + G_t (z_{t+1} -
        \text{loc}_{t+1}), L_t L_t^\top)` (``q_loc (B, T, S)``, ``q_gain``,
        ``q_scale_tril (B, T, S, S)``; :math:`G_t = 0` at each sequence's last frame).
        Set exactly by the E-step, trained by SVI; starts at the first state's prior."""
        B, T = x.shape[:2]
        if self._q_shape("q_loc") != (B, T, self.state_dim):
            S = self.state_dim
            self._set_guide(self.initial_mean.detach().expand(B, T, S),
                            x.new_zeros(B, T, S, S),
                            self.initial_scale_tril.detach().expand(B, T, S, S))
        loc, gain, tril = self.q_loc, self.q_gain, self.q_scale_tril
        with pyro.plate("sequences", B, dim=-1):
            z = None
            for t in pyro.markov(reversed(range(T))):
                with poutine.mask(mask=lengths > t):
                    mean = loc[:, t]
                    if z is not None:
                        step = (z - loc[:, t + 1]).unsqueeze(-2) @ gain[:, t].mT
                        mean = mean + step.squeeze(-2)
                    z = pyro.sample(f"z_{t}", dist.MultivariateNormal(
                        mean, scale_tril=tril[:, t], validate_args=False))

    def _q_shape(self, name):
        q = self._parameters.get(name + "_unconstrained")
        return None if q is None else tuple(q.shape)

    def _set_guide(self, loc, gain, tril):
        values = {"q_loc": loc, "q_gain": gain, "q_scale_tril": tril}
        for name, value in values.items():
            constraint, event_dim = self.guide_params[name]
            if self._q_shape(name) != tuple(value.shape):
                setattr(self, name, PyroParam(value.clone(), constraint=constraint,
                                              event_dim=event_dim))
            else:
                setattr(self, name, value)

    # ------------------------------------------------------------------ EM protocol
    def e_step(self, x, lengths, hard=False):
        r"""
        The exact posterior (Kalman filter and RTS smoother) and :math:`\log p(x_b)`.

        :returns: a :class:`~pyroem.models.ssm.StatePosterior`.
        :raises ValueError: for ``hard=True`` (the states are continuous).
        """
        if hard:
            raise ValueError("the states of a LinearGaussianSSM are continuous: there is no "
                             "hard (Viterbi) E-step; use method='em' or 'svi'")
        with torch.no_grad():
            params = self.linear_gaussian()
            filtered = kalman_filter(params, x, lengths)
            smoothed = rts_smoother(params, filtered, lengths)
        return StatePosterior(filtered.log_prob, smoothed, filtered.cov.filtered, lengths)

    def write_posterior(self, posterior, x, lengths):
        """E-step: the guide's chain := the exact posterior."""
        gain, tril = posterior.chain()
        self._set_guide(posterior.loc, gain, tril)

    def expected_statistics(self, posterior, x, lengths):
        """Additive float64 statistics (:func:`~pyroem.models.ssm.mstep.expected_statistics`)."""
        return mstep.expected_statistics(posterior, x, lengths)

    def maximize(self, stats):
        """M-step of the trained parameters (:func:`~pyroem.models.ssm.mstep.maximize`)."""
        values = mstep.maximize(stats, self.linear_gaussian(), self.params, self.reg_covar)
        try:
            self.set_parameters(**values)
        except ValueError as e:
            raise ValueError(f"the M-step failed: {e}; increase reg_covar (now "
                             f"{self.reg_covar:g}) or check the data") from None

    # ------------------------------------------------------------------ fitting hooks
    def fit(self, x, lengths=None, method="em", **kwargs):
        r"""
        Fit the trained parameters (``params``) to sequences.

        :param x: one ``(T, O)`` sequence, a list of them, or a padded ``(B, T, O)``
            batch with ``lengths``; every sequence needs two frames or more.
        :param str method: ``"em"`` or ``"svi"`` (``Trace_ELBO`` on the same model and
            guide); ``"viterbi"`` raises ``ValueError`` (continuous states).
        :param kwargs: as :meth:`pyroem.models.EMModel.fit` (``init`` in
            ``("pca", "given")``).
        """
        if method == "viterbi":
            raise ValueError("method='viterbi' does not apply to a LinearGaussianSSM: its "
                             "states are continuous (use method='em' or 'svi')")
        return super().fit(x, lengths, method=method, **kwargs)

    def _svi_elbo(self):
        return pyro.infer.Trace_ELBO()

    def _prepare(self, x, lengths=None, dtype=None):
        padded, lengths, _ = pack_sequences(x, lengths, dim=self.obs_dim, dtype=dtype)
        return padded, lengths

    def _check_fit(self, args):
        lengths = args[1]
        if int(lengths.min()) < 2:
            short = int((lengths < 2).nonzero()[0])
            raise ValueError(f"fit needs sequences of at least 2 frames (sequence {short} has "
                             f"{int(lengths[short])}): one frame says nothing about the "
                             "dynamics")

    def _num_items(self, args):
        return int(args[1].sum())

    def _initialize(self, args, init, generator):
        if init == "pca":
            self.set_parameters(**pca_start(*args, self.state_dim, generator))

    @property
    def num_parameters(self):
        """Free parameters that ``fit`` trains (symmetric matrices count once)."""
        S, O = self.state_dim, self.obs_dim
        sizes = {"a": S * S, "c": O * S, "q": S * (S + 1) // 2, "r": O * (O + 1) // 2,
                 "m": S, "p": S * (S + 1) // 2}
        return sum(sizes[c] for c in set(self.params))
