r"""
The parameters of :class:`~pyroem.models.LinearGaussianSSM` as attributes that are read
and set with checks: shapes, finite values, and symmetric positive definite covariances
(stored as their Cholesky factors, ``*_scale_tril``).
"""

import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.models.checks import as_float_tensor
from pyroem.models.ssm.kalman import LinearGaussian

#: covariance attribute -> the Cholesky factor that stores it
COVARIANCES = {"transition_cov": "transition_scale_tril",
               "observation_cov": "observation_scale_tril",
               "initial_cov": "initial_scale_tril"}
#: the parameters stored as they are
PLAIN = ("transition_matrix", "observation_matrix", "initial_mean")


class SSMParameters:
    """
    Mixin of a :class:`~pyro.nn.PyroModule` with ``state_dim`` and ``obs_dim``: registers
    the parameters (pykalman's defaults: identity matrices, zero mean) and checks values
    that a user sets.
    """

    def _register_parameters(self):
        S, O = self.state_dim, self.obs_dim
        self.transition_matrix = PyroParam(torch.eye(S))
        self.observation_matrix = PyroParam(torch.eye(O, S))
        self.initial_mean = PyroParam(torch.zeros(S))
        for name, dim in (("transition", S), ("observation", O), ("initial", S)):
            setattr(self, f"{name}_scale_tril",
                    PyroParam(torch.eye(dim), constraint=constraints.lower_cholesky))

    def _shape(self, name):
        S, O = self.state_dim, self.obs_dim
        return {"transition_matrix": (S, S), "observation_matrix": (O, S),
                "initial_mean": (S,), "transition_cov": (S, S), "observation_cov": (O, O),
                "initial_cov": (S, S)}[name]

    def _checked(self, name, value):
        """``value`` as a tensor of the model's dtype and ``name``'s shape, finite; for a
        covariance its lower Cholesky factor (symmetric positive definite required)."""
        value = as_float_tensor(value, name, self.dtype)
        shape = self._shape(name)
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} contains NaN or inf")
        if name not in COVARIANCES:
            return value
        if not torch.allclose(value, value.T, rtol=1e-5, atol=1e-8 * float(value.abs().max())):
            raise ValueError(f"{name} must be symmetric")
        tril, info = torch.linalg.cholesky_ex(0.5 * (value + value.T))
        if bool(info.any()) or not bool((tril.diagonal() > 0).all()):
            raise ValueError(f"{name} must be positive definite (a singular noise "
                             "covariance is not allowed)")
        return tril

    def set_parameters(self, **values):
        """Set several parameters at once, all checked before any is changed."""
        checked = {name: self._checked(name, v) for name, v in values.items()}
        for name, value in checked.items():
            target = COVARIANCES.get(name, name)
            self._set_unchecked(target, value)

    def _set_unchecked(self, name, value):
        self.__dict__["_unchecked"] = True
        try:
            setattr(self, name, value)
        finally:
            self.__dict__["_unchecked"] = False

    def __setattr__(self, name, value):
        if name in PLAIN and not isinstance(value, PyroParam) \
                and not self.__dict__.get("_unchecked", False):
            value = self._checked(name, value)
        super().__setattr__(name, value)

    def _covariance(self, name):
        tril = getattr(self, COVARIANCES[name]).detach()
        return tril @ tril.T

    @property
    def transition_cov(self):
        r"""Transition noise covariance :math:`Q`, ``(S, S)``."""
        return self._covariance("transition_cov")

    @transition_cov.setter
    def transition_cov(self, value):
        self.set_parameters(transition_cov=value)

    @property
    def observation_cov(self):
        r"""Observation noise covariance :math:`R`, ``(O, O)``."""
        return self._covariance("observation_cov")

    @observation_cov.setter
    def observation_cov(self, value):
        self.set_parameters(observation_cov=value)

    @property
    def initial_cov(self):
        r"""Covariance :math:`P_0` of the first state, ``(S, S)``."""
        return self._covariance("initial_cov")

    @initial_cov.setter
    def initial_cov(self, value):
        self.set_parameters(initial_cov=value)

    def linear_gaussian(self):
        """The current parameters, detached, as a
        :class:`~pyroem.models.ssm.kalman.LinearGaussian`."""
        return LinearGaussian(self.transition_matrix.detach(),
                              self.observation_matrix.detach(), self.transition_cov,
                              self.observation_cov, self.initial_mean.detach(),
                              self.initial_cov)
