"""The exact E-step of linear-Gaussian Pyro models (continuous latents) and their M-step."""

from pyroem.infer.gaussian.estep import JointGaussianPosterior, gaussian_posterior
from pyroem.infer.gaussian.mstep import GaussianMStep, expected_log_joint_gaussian
from pyroem.infer.gaussian.trace import NotLinearGaussianError, needs_gaussian_e_step

__all__ = ["GaussianMStep", "JointGaussianPosterior", "NotLinearGaussianError",
           "expected_log_joint_gaussian", "gaussian_posterior", "needs_gaussian_e_step"]
