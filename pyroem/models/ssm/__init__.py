"""
Linear-Gaussian state-space models, trained by exact EM: the Kalman filter and RTS
smoother as the E-step, a closed-form M-step.

- :mod:`~pyroem.models.ssm.model`: :class:`LinearGaussianSSM`, the Pyro model, its guide
  and the EM contract;
- :mod:`~pyroem.models.ssm.parameters`: the parameters as checked attributes;
- :mod:`~pyroem.models.ssm.scoring`: log-likelihood, filtering, smoothing, sampling;
- :mod:`~pyroem.models.ssm.kalman`: the filter and the smoother (pure functions);
- :mod:`~pyroem.models.ssm.scan`: linear recurrences in :math:`O(\\sqrt T)` Python steps;
- :mod:`~pyroem.models.ssm.posterior`: :class:`StatePosterior`, the typed posterior;
- :mod:`~pyroem.models.ssm.mstep`: expected statistics and the closed-form M-step;
- :mod:`~pyroem.models.ssm.initialization`: the data-driven start (``init="pca"``).
"""

from pyroem.models.ssm.model import LinearGaussianSSM
from pyroem.models.ssm.posterior import StatePosterior

__all__ = ["LinearGaussianSSM", "StatePosterior"]
