r"""What the factor models share: their checks, the noise parameter, data handling and
the guide's data-sized parameters."""

import torch
from pyro.nn import PyroParam

from pyroem.models.base import EMModel
from pyroem.models.checks import as_float_tensor, check_finite, check_matrix, check_positive_int


def check_dims(dim, latent_dim):
    """``(dim, latent_dim)`` as ints, with ``1 <= latent_dim < dim``."""
    dim = check_positive_int("dim", dim)
    latent_dim = check_positive_int("latent_dim", latent_dim)
    if latent_dim >= dim:
        raise ValueError(f"latent_dim must be smaller than dim (got latent_dim={latent_dim}, "
                         f"dim={dim}): with latent_dim >= dim the loadings and the noise "
                         "cannot be told apart (the model is not identifiable)")
    return dim, latent_dim


def check_reg_covar(reg_covar):
    if isinstance(reg_covar, bool) or not isinstance(reg_covar, (int, float)) \
            or not reg_covar >= 0 or reg_covar == float("inf"):
        raise ValueError(f"reg_covar must be a finite number >= 0, got {reg_covar!r}")
    return float(reg_covar)


class DataSizedGuide:
    """
    Mixin of a model whose guide holds q in parameters sized for the data (one Gaussian
    per point or per speaker), declared in ``guide_params`` as ``{name: (constraint,
    event_dim)}``: they are created on first use and re-created when the data's size
    changes (factor models, PLDA).
    """

    def _q_shape(self, name):
        # shape of a guide parameter, read without building its constrained value
        q = self._parameters.get(name + "_unconstrained")
        return None if q is None else tuple(q.shape)

    def _set_q(self, **values):
        """Set the guide's parameters, re-creating those whose shape changes."""
        for name, value in values.items():
            if self._q_shape(name) != tuple(value.shape):
                constraint, event_dim = self.guide_params[name]
                setattr(self, name, PyroParam(value, constraint=constraint,
                                              event_dim=event_dim))
            else:
                setattr(self, name, value)


class FactorModel(DataSizedGuide, EMModel):
    r"""
    Base of :class:`FactorAnalysis` and :class:`MixtureOfFactorAnalyzers`: data
    ``(N, D)``, a diagonal noise covariance :math:`\Psi` held as the parameter ``psi``
    (``(D,)``, or ``(1,)`` when isotropic), continuous latents (no Viterbi training) and
    a guide whose ``q_*`` parameters are sized for the data on first use.
    """

    max_plate_nesting = 1
    isotropic = False

    # ------------------------------------------------------------------ parameters
    @property
    def noise_variance(self):
        r"""The diagonal of :math:`\Psi`, shape ``(D,)`` (a repeated :math:`\sigma^2`
        for isotropic noise)."""
        return self.psi.detach().expand(self.dim)

    @noise_variance.setter
    def noise_variance(self, value):
        value = self._checked("noise_variance", value, None)
        if value.dim() == 0 or value.shape == (1,):
            value = value.reshape(1).expand(self.dim)
        if value.shape != (self.dim,):
            raise ValueError(f"noise_variance must have shape ({self.dim},) or be a scalar, "
                             f"got {tuple(value.shape)}")
        if not (value > 0).all():
            raise ValueError("noise_variance must be positive")
        if self.isotropic:
            if not torch.allclose(value, value[:1].expand(self.dim)):
                raise ValueError("isotropic noise has one variance: give a scalar or equal "
                                 "values")
            value = value[:1]
        self.psi = value.clone()

    def _checked(self, name, value, shape):
        """``value`` as a finite tensor of the model's dtype (and of ``shape`` if given)."""
        value = check_finite(as_float_tensor(value, name, self.dtype), name)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")
        return value

    def _start_noise(self, noise, variance):
        r"""``noise`` (``(D,)``, before the floor) as the starting :math:`\Psi`; values at
        the rounding level of the data's ``variance`` (``(D,)``) count as zero."""
        resolution = 10 * torch.finfo(noise.dtype).eps * variance
        noise = torch.where(noise > resolution, noise, torch.zeros_like(noise))
        if self.isotropic:
            noise = noise.mean().unsqueeze(0)
        noise = noise.clamp_min(0) + self.reg_covar
        if not (noise > 0).all():
            raise ValueError("the data have a direction of zero variance (they lie on a "
                             "subspace): the noise would be singular; use reg_covar > 0")
        return noise

    # ------------------------------------------------------------------ fitting hooks
    def fit(self, x, method="em", **kwargs):
        r"""
        Fit the parameters to data ``x`` of shape ``(N, D)``.

        :param str method: ``"em"`` (exact EM) or ``"svi"`` (Pyro's SVI on the same
            model and guide). ``"viterbi"`` raises ``ValueError``: the latents are
            continuous.
        :param kwargs: as :meth:`pyroem.models.EMModel.fit` (``max_iter``, ``tol``,
            ``init`` in :attr:`inits`, ``num_restarts``, ``seed``, ``progress``, ``lr``).
        """
        if method == "viterbi":
            raise ValueError(f"method='viterbi' does not apply to {type(self).__name__}: its "
                             "latents are continuous (use method='em' or 'svi')")
        return super().fit(x, method=method, **kwargs)

    def _reject_hard(self, hard):
        if hard:
            raise ValueError(f"{type(self).__name__}'s latents are continuous: there is no hard "
                             "(Viterbi) E-step; use method='em' or 'svi'")

    def _prepare(self, x, dtype=None):
        return (check_matrix(x, self.dim, "x", dtype),)

    def _check_fit(self, args):
        if args[0].shape[0] < 2:
            raise ValueError(f"fit needs at least 2 points, got {args[0].shape[0]}")

    def _num_items(self, args):
        return args[0].shape[0]

    def _sample_noise(self, shape, generator):
        """Standard normal draws from ``generator``, in the model's dtype and device."""
        return torch.randn(shape, generator=generator, dtype=self.dtype).to(self.psi.device)

