r"""
The M-step of a linear-Gaussian Pyro model: numerical maximisation of the exact
:math:`Q` under the joint Gaussian posterior (generalised EM).

With :math:`q(z) = \mathcal N(m, C)`, :math:`C = S S^\top` (``S`` = ``posterior.root``)
and the weighted whitened residuals :math:`r_\eta(z)`, affine in :math:`z` for every
parameter value :math:`\eta`,

.. math::

    Q(q, \eta) = E_q[\log p(X, z | \eta)]
    = -\tfrac12 \Big(\|r_\eta(m)\|^2 + \|B_\eta S\|_F^2\Big) - c_\eta,

exactly (:math:`E_q \|r(z)\|^2 = \|r(m)\|^2 + \operatorname{tr}(B C B^\top)`), where
:math:`B_\eta S` are the derivatives of :math:`r_\eta` along the ``d`` columns of ``S``
(forward mode, vectorised) and :math:`c_\eta` the residuals' constant. ``Q`` is
differentiable in :math:`\eta`; L-BFGS maximises it over the unconstrained values of the
model's ``pyro.param``\ s, and a step that does not increase ``Q`` is undone, which keeps
:math:`\log p(X)` from falling.
"""

import pyro
import torch

from pyroem.infer.gaussian.trace import residuals, trace_model
from pyroem.infer.mstep.numerical import ascend_q


def expected_log_joint_gaussian(model, posterior, *args, **kwargs):
    r""":math:`Q(q, \eta)` for a :class:`~pyroem.infer.gaussian.JointGaussianPosterior`
    ``q`` (held fixed), differentiable in the model's parameters (module docstring)."""
    layout, m = posterior.layout, posterior.loc[0].detach()
    root = posterior.root.detach()

    def residual(z):
        return residuals(model, layout, z, args, kwargs)[0]

    r, c = residuals(model, layout, m, args, kwargs)
    with pyro.validation_enabled(False):
        spread = torch.func.vmap(lambda t: torch.func.jvp(residual, (m,), (t,))[1])(root.T)
    return -0.5 * (r.square().sum() + spread.square().sum()) - c


class GaussianMStep:
    r"""
    Maximise :math:`Q` (:func:`expected_log_joint_gaussian`) over every ``pyro.param``
    the model reads, by L-BFGS on their unconstrained values, keeping the step only if
    :math:`Q` did not decrease (generalised EM: :math:`\log p(X)` never falls).

    :param callable model: a linear-Gaussian Pyro model.
    :param int max_iter: L-BFGS iterations per M-step.
    """

    def __init__(self, model, max_iter=100):
        self.model = model
        self.max_iter = max_iter
        self.strategies = {}
        #: whether the last step was kept (Q did not decrease)
        self.accepted = None

    def routes(self, posterior, *args, **kwargs):
        """Every parameter the model reads: ``"numerical"`` (exact Q, L-BFGS)."""
        names = []
        with torch.no_grad():
            trace_model(self.model, args, kwargs, posterior.layout.split(posterior.loc[0]),
                        params=names)
        return {name: "numerical" for name in dict.fromkeys(names)}

    def __call__(self, posterior, *args, **kwargs):
        """Update the parameters in place; returns the gain in :math:`Q`."""
        self.strategies = self.routes(posterior, *args, **kwargs)
        names = sorted(self.strategies)
        if not names:
            return 0.0
        values = [pyro.param(n).unconstrained() for n in names]
        gain = ascend_q(lambda: expected_log_joint_gaussian(self.model, posterior, *args,
                                                            **kwargs),
                        values, self.max_iter, tolerance_grad=1e-12, tolerance_change=1e-15)
        self.accepted = gain is not None
        return gain or 0.0
