r"""Strategy 3: numerical maximisation of :math:`Q` with the posterior held fixed
(generalised EM)."""

import pyro
import torch
from pyro import poutine
from pyro.infer.enum import config_enumerate
from pyro.poutine.util import prune_subsample_sites


def expected_log_joint(model, posterior, args, kwargs, max_plate_nesting):
    r"""
    The auxiliary function under the current parameters,

    .. math::

        Q(q, \eta) = E_q[\log p(X, Z|\eta)]
        = \sum_f \sum_{z_f} q(z_f) \, \log p_f(z_f | \eta),

    one sum per factor ``f`` (sample site) of the model over its enumerated variables,
    with :math:`q(z_f)` the E-step's marginals (``posterior.marginals``, held fixed, no
    gradient). Differentiable in the parameters. Masks and ``poutine.scale`` are applied
    to each factor as in the E-step (an enumerated latent's factor is not masked). A
    site that depends on no enumerated variable contributes its own log-density, e.g.
    ``log p(x)`` of a ``DiscreteHMM`` (an exact term of :math:`\log p(X)`, so raising it
    raises the evidence as much).

    :param callable model: the Pyro model.
    :param posterior: a :class:`~pyroem.infer.posteriors.DiscretePosterior` of the same model
        and data.
    :param int max_plate_nesting: as used by the E-step.
    :rtype: torch.Tensor
    """
    enum_model = poutine.enum(config_enumerate(model, default="parallel"),
                              first_available_dim=-1 - max_plate_nesting)
    trace = prune_subsample_sites(poutine.trace(enum_model).get_trace(*args, **kwargs))
    trace.compute_log_prob(lambda name, site: name in posterior.marginals)
    total = 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or name not in posterior.marginals:
            continue  # e.g. missing values of obs_mask, integrated out by the E-step
        weight = posterior.marginals[name].detach()
        log_prob = site["log_prob"]
        if site["infer"].get("_enumerate_dim") is not None:
            # a latent's factor is not masked (TraceEnum_ELBO's factors, as the E-step)
            log_prob = site["unscaled_log_prob"] * site["scale"]
        # 0 * -inf is 0 here: configurations with no posterior mass do not count.
        total = total + torch.where(weight > 0, weight * log_prob, 0.0).sum()
    return total


class NumericalMStep:
    r"""
    Maximise :math:`Q(q, \eta)` (:func:`expected_log_joint`) over some parameters with
    the posterior ``q`` fixed, by L-BFGS on their unconstrained values.

    This is generalised EM: the step is kept only if :math:`Q` did not decrease, which
    is enough for :math:`\log p(X|\eta)` never to decrease (because
    :math:`\log p(X|\eta) - \log p(X|\eta_{old}) \ge Q(\eta) - Q(\eta_{old})`).

    :param callable model: the Pyro model.
    :param int max_plate_nesting: as used by the E-step.
    :param int max_iter: L-BFGS iterations per M-step (a partial maximisation is
        still a valid generalised-EM step).
    """

    def __init__(self, model, max_plate_nesting, max_iter=50):
        self.model = model
        self.max_plate_nesting = max_plate_nesting
        self.max_iter = max_iter
        #: whether the last step was accepted (Q did not decrease)
        self.accepted = None

    def __call__(self, posterior, names, *args, **kwargs):
        """Update the parameters ``names`` in place; returns the gain in :math:`Q`."""
        names = sorted(names)
        if not names:
            return 0.0
        with torch.no_grad():
            values = [pyro.param(n).unconstrained() for n in names]
        gain = ascend_q(lambda: expected_log_joint(self.model, posterior, args, kwargs,
                                                   self.max_plate_nesting),
                        values, self.max_iter, tolerance_grad=1e-10, tolerance_change=1e-14)
        self.accepted = gain is not None
        return gain or 0.0


def ascend_q(q_value, values, max_iter, tolerance_grad, tolerance_change):
    r"""
    Raise :math:`Q` (``q_value()``, differentiable in the tensors ``values``) with L-BFGS
    in place: a generalised-EM step. A step that does not raise :math:`Q` (NaN included)
    is undone, so :math:`\log p(X)` never falls.

    :returns: the gain in :math:`Q`, or ``None`` when the step was undone.
    """
    saved = [v.detach().clone() for v in values]
    with torch.no_grad():
        q_old = float(q_value())
    optim = torch.optim.LBFGS(values, lr=1.0, max_iter=max_iter, tolerance_grad=tolerance_grad,
                              tolerance_change=tolerance_change, line_search_fn="strong_wolfe")

    def closure():
        with torch.enable_grad():
            loss = -q_value()
            grads = torch.autograd.grad(loss, values, allow_unused=True)
        for v, g in zip(values, grads):
            v.grad = torch.zeros_like(v) if g is None else g
        return loss

    optim.step(closure)
    for v in values:
        v.grad = None
    with torch.no_grad():
        q_new = float(q_value())
        if not q_new >= q_old:  # includes NaN: keep the old parameters
            for v, s in zip(values, saved):
                v.copy_(s)
            return None
    return q_new - q_old
