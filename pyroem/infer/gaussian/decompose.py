r"""
The exact decomposition :math:`\log p(X) = \mathrm{ELBO}(q) + \mathrm{KL}(q \| p(Z|X))`
for a linear-Gaussian model and a Gaussian guide (continuous latents).

A guide whose sample sites are all ``Normal``/``MultivariateNormal`` with locations
affine in each other (one Gaussian per point, or a Gaussian chain) is itself a
linear-Gaussian program without observations: :func:`~pyroem.infer.gaussian.gaussian_posterior`
of the guide is its joint Gaussian :math:`q = \mathcal N(m, S S^\top)`, with evidence 0.
Then :math:`Q(q, \eta) = E_q[\log p(X, Z)]` is exact
(:func:`~pyroem.infer.gaussian.expected_log_joint_gaussian`),

.. math::

    H(q) = \tfrac d2 (1 + \log 2\pi) + \log|\det S|,

and :math:`\mathrm{ELBO} = Q + H`, :math:`\mathrm{KL} = \log p(X) - \mathrm{ELBO}`.
"""

import torch

from pyroem.infer.gaussian.estep import gaussian_posterior
from pyroem.infer.gaussian.mstep import expected_log_joint_gaussian
from pyroem.infer.gaussian.trace import trace_model


def gaussian_decomposition(model, guide, *args, log_evidence=None, **kwargs):
    r"""
    ``(log_evidence, elbo, kl, entropy, expected_log_joint)`` as floats, for a
    linear-Gaussian ``model`` and a Gaussian ``guide`` over the same latent sites.

    :param log_evidence: :math:`\log p(X)` when known (e.g. from a model's own E-step);
        else from the model's Gaussian E-step.
    :raises ValueError: when the guide does not sample exactly the model's latent sites,
        or either program is not linear-Gaussian.
    """
    with torch.no_grad():
        q = gaussian_posterior(guide, *args, **kwargs)
        latents = {s["name"]: s["value"].shape for s in trace_model(model, args, kwargs)
                   if not s["is_observed"]}
        sampled = {name: shape for name, (_, shape) in q.layout.slices.items()}
        if latents != sampled:
            raise ValueError(f"the guide samples {sorted(sampled)} but the model's latents are "
                             f"{sorted(latents)} (with their shapes): the exact decomposition "
                             "needs a guide over exactly the model's latent sites")
        if log_evidence is None:
            log_evidence = gaussian_posterior(model, *args, **kwargs).log_evidence
        expected = float(expected_log_joint_gaussian(model, q, *args, **kwargs))
        entropy = float(q.entropy())
    log_evidence = float(log_evidence)
    elbo = expected + entropy
    return log_evidence, elbo, log_evidence - elbo, entropy, expected
