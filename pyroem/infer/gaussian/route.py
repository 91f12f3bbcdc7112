"""Which generic E-step a user model gets: enumeration, or the Gaussian one."""

from pyroem.infer.gaussian.mstep import GaussianMStep
from pyroem.infer.gaussian.trace import needs_gaussian_e_step
from pyroem.infer.mstep import AutoMStep


def resolve_gaussian_route(em, args, kwargs):
    """
    Whether ``em`` (an :class:`~pyroem.infer.EM` without a model-supplied E-step) takes
    the Gaussian E-step: the model's latents are continuous
    (:func:`~pyroem.infer.gaussian.needs_gaussian_e_step`). If so its plan says so and an
    automatic M-step becomes :class:`~pyroem.infer.gaussian.GaussianMStep` (the automatic
    rules read the posterior of enumeration only).
    """
    if not needs_gaussian_e_step(em.model, args, kwargs):
        return False
    em.plan.e_step = "linear-Gaussian conditioning (joint Gaussian posterior)"
    if isinstance(em.m_step, AutoMStep):
        em.m_step = GaussianMStep(em.model)
        em.plan.m_step = "numerical: exact Q under the Gaussian posterior"
    return True
