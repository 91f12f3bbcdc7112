"""
Input checks shared by the built-in models: clear errors that name the problem and say
what was expected, raised before anything changes.

Three groups:

- options and sizes (:func:`check_option`, :func:`check_positive_int`);
- data: :func:`as_float_tensor` (integer or boolean data become float64, as numpy and
  scikit-learn do), :func:`check_finite`, :func:`check_matrix` (what ``fit`` and the
  scoring methods accept) and :func:`check_model_data` (what a built-in's Pyro ``model``,
  ``guide`` and closed-form statistics accept: the prepared tensor, nothing reshaped);
- parameter values, for every public setter: :func:`check_real` (any finite values),
  :func:`check_positive`, :func:`check_simplex` (probability rows),
  :func:`check_covariance` (symmetric within a relative tolerance, positive definite), and
  the mixin :class:`CheckedParams` that routes ``m.name = value`` through them.
"""

import contextlib
import math

import numpy as np
import torch
from pyro.nn import PyroParam

from pyroem.distributions.features import all_finite
from pyroem.models import raw

#: promoted dtype of integer or boolean data for a Gaussian model (DESIGN.md section 3)
INTEGER_DATA_DTYPE = torch.float64


# ---------------------------------------------------------------------- options and sizes
def check_option(name, value, allowed):
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    try:
        ok = value in allowed
    except TypeError:  # an unhashable value tested against a set or dict
        ok = False
    if not ok:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(allowed)}")
    return value


def check_reg_covar(reg_covar, name="reg_covar"):
    """A finite number >= 0 (added to covariance diagonals)."""
    if isinstance(reg_covar, bool) or not isinstance(reg_covar, (int, float, np.number)) \
            or not 0 <= reg_covar < math.inf:
        raise ValueError(f"{name} must be >= 0 and finite (a number), got {reg_covar!r}")
    return float(reg_covar)


def check_seed(seed):
    """``None`` or an integer seed (as ``torch.Generator.manual_seed`` takes)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    return int(seed)


def make_generator(seed):
    """A ``torch.Generator`` seeded with ``seed`` (a fresh nondeterministic seed when
    ``None``): randomness that never reads or changes the global random state."""
    seed = check_seed(seed)
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------- data
def _as_tensor(x, name, kind="numeric"):
    if torch.is_tensor(x):
        return x
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} could not be read as a {kind} array: {e}") from None
    if array.dtype == object or array.dtype.kind in "USV":
        raise ValueError(f"{name} could not be read as a {kind} array (it holds "
                         f"{array.dtype} values, e.g. ragged rows or strings)")
    try:
        return torch.as_tensor(array)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name} could not be read as a {kind} array: {e}") from None


def as_float_tensor(x, name="x", dtype=None):
    """
    ``x`` as a floating tensor (no copy where possible; never modified in place).

    Floating data keep their dtype unless ``dtype`` is given; integer and boolean data
    become float64 (as numpy and scikit-learn promote them), never float32 because that
    is torch's default. Complex data are refused.
    """
    x = _as_tensor(x, name)
    if x.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    if dtype is not None:
        return x.to(dtype)
    if not x.is_floating_point():
        x = x.to(INTEGER_DATA_DTYPE)
    return x


def first_bad_index(bad):
    """The index (a tuple) of the first ``True`` of the bool tensor ``bad``."""
    flat = int(bad.reshape(-1).nonzero()[0])
    return tuple(int(i) for i in np.unravel_index(flat, tuple(bad.shape))) if bad.dim() else ()


def check_finite(x, name="x"):
    """Raise ``ValueError`` naming the first NaN or inf of ``x`` (the missing-value
    mechanism, ``obs_mask``, is mentioned for NaN)."""
    if not x.is_floating_point() or all_finite(x):
        return x
    bad = ~torch.isfinite(x)
    if bad.any():
        index = first_bad_index(bad)
        value = float(x[index])
        hint = (" (NaN for a missing value needs an obs_mask that marks it missing)"
                if math.isnan(value) else "")
        raise ValueError(f"{name} contains NaN or inf (first: {value} at index {index}); "
                         f"data must be finite{hint}")
    return x


def check_matrix(x, dim, name="x", dtype=None):
    """Data of shape ``(N, dim)`` (or ``(N,)`` when ``dim == 1``), ``N >= 1``, finite, as
    a floating tensor (``dtype``, else the data's own; integers become float64)."""
    x = as_float_tensor(x, name, dtype)
    if x.dim() == 1 and dim == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 2 or x.shape[-1] != dim:
        expected = f"(N, {dim})" + (" or (N,)" if dim == 1 else "")
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): at least one row of "
                         f"{dim} values is needed")
    return check_finite(x, name)


def check_model_data(x, shape, dtype, name="x", prepare="m.prepare(...)"):
    """
    The argument of a built-in model's Pyro ``model``/``guide``/``e_step``/statistics:
    a tensor of exactly ``shape`` (``None`` entries are free sizes; a leading free size
    must be >= 1) and, for floating data, the model's ``dtype``. Nothing is reshaped or
    converted: a tensor of another width would otherwise be silently read as other
    points.

    :param shape: sizes, ``None`` or a name (e.g. ``"B"``) for a free size.
    :param str prepare: how to get the right argument, for the message.
    """
    expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) \
        + ("," if len(shape) == 1 else "") + ")"
    shape = tuple(None if isinstance(s, str) else s for s in shape)
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a tensor of shape {expected} (as {prepare} "
                         f"returns it), got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)} "
                         f"(use {prepare})")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but the model computes in {dtype}: "
                         f"use {prepare} (or convert the model, e.g. .to({dtype!s}))")
    return x


# ---------------------------------------------------------------------- parameter values
def as_param_tensor(value, name, shape, dtype):
    """``value`` as a ``dtype`` tensor of exactly ``shape``, finite (the checks every
    parameter setter starts with)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be numeric, got {value!r}")
    value = _as_tensor(value, name)
    if value.dtype == torch.bool or value.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {value.dtype}")
    value = value.detach().to(dtype)
    shape = tuple(shape)
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    bad = ~torch.isfinite(value)
    if bad.any():
        index = first_bad_index(bad)
        raise ValueError(f"{name} must be finite, got {float(value[index])} at index {index}")
    return value.clone()


def check_real(value, name, shape, dtype):
    """Any finite values of ``shape`` (a mean, the means of components)."""
    return as_param_tensor(value, name, shape, dtype)


def check_positive(value, name, shape, dtype):
    """Finite values > 0 of ``shape`` (variances, rates)."""
    value = as_param_tensor(value, name, shape, dtype)
    bad = ~(value > 0)
    if bad.any():
        index = first_bad_index(bad)
        raise ValueError(f"{name} must be > 0, got {float(value[index])} at index {index}")
    return value


def simplex_tolerance(dtype):
    """How far from 1 the sum of a probability row may be (then it is renormalised)."""
    return max(1e-5, 100 * torch.finfo(dtype).eps)


def check_simplex(value, name, shape, dtype):
    """Probability rows (the last dim) of ``shape``: finite, >= 0, each summing to 1
    within :func:`simplex_tolerance` (then renormalised exactly)."""
    value = as_param_tensor(value, name, shape, dtype)
    bad = value < 0
    if bad.any():
        index = first_bad_index(bad)
        raise ValueError(f"{name} must be probabilities >= 0, got {float(value[index])} at "
                         f"index {index}")
    total = value.sum(-1, keepdim=True)
    off = (total - 1).abs() > simplex_tolerance(dtype)
    if off.any():
        index = first_bad_index(off.squeeze(-1)) if off.dim() > 1 else ()
        row = f" (row {index})" if index else ""
        raise ValueError(f"{name} must sum to 1 along its last dim{row}, got a sum of "
                         f"{float(total[index + (0,)] if index else total.reshape(-1)[0]):.6g}"
                         " (probabilities are not renormalised silently)")
    return value / total


def symmetry_tolerance(dtype):
    """Relative asymmetry ``max|A - A^T| / max|A|`` a covariance may have (rounding of a
    computed matrix); it is then symmetrised."""
    return max(1e-10, torch.finfo(dtype).eps ** 0.5)


def check_covariance(value, name, shape, dtype):
    """
    Covariance matrices of ``shape`` (``(..., D, D)``): finite, symmetric within
    :func:`symmetry_tolerance` (relative to the largest entry; then symmetrised) and
    positive definite. Returns the lower Cholesky factor.
    """
    value = as_param_tensor(value, name, shape, dtype)
    scale = value.abs().amax(dim=(-2, -1), keepdim=True)
    asym = (value - value.mT).abs().amax(dim=(-2, -1), keepdim=True)
    off = asym > symmetry_tolerance(dtype) * scale
    if off.any():
        index = first_bad_index(off.squeeze(-1).squeeze(-1)) if off.dim() > 2 else ()
        which = f" (matrix {index})" if index else ""
        ratio = float((asym / scale.clamp_min(torch.finfo(dtype).tiny))[index + (0, 0)])
        raise ValueError(f"{name} must be symmetric{which}: max |A - A^T| / max |A| = "
                         f"{ratio:.3g}, above the tolerance {symmetry_tolerance(dtype):.1g} "
                         "(a covariance is not symmetrised silently)")
    value = 0.5 * (value + value.mT)
    tril, info = torch.linalg.cholesky_ex(value)
    if info.any():
        index = first_bad_index(info > 0) if info.dim() else ()
        which = f" (matrix {index})" if index else ""
        raise ValueError(f"{name} must be symmetric positive definite{which}; it is not "
                         "(smallest eigenvalue "
                         f"{float(torch.linalg.eigvalsh(value[index]).min()):.3g})")
    return tril


# ---------------------------------------------------------------------- the setter mixin
class CheckedParams:
    """
    Mixin of a :class:`~pyro.nn.PyroModule` whose public parameters are validated when a
    user sets them: ``m.weights = w`` goes through the class's check for ``"weights"``
    (shape, finiteness, constraint; a clear ``ValueError`` that says what was expected),
    and a refused value leaves the parameter as it was.

    A class lists the checked names in ``checked_params`` and implements
    :meth:`_check_param`. The closed-form M-step and the initialisation assign their
    results inside :meth:`internal_updates`, without the user-facing checks (they run
    every iteration and their values are valid by construction; the EM step checks every
    parameter for finiteness after the M-step anyway).
    """

    checked_params = ()

    def _check_param(self, name, value):
        """``value`` validated (and converted) for the parameter ``name``."""
        raise NotImplementedError

    def __setattr__(self, name, value):
        if name in self.checked_params and not isinstance(value, (PyroParam, torch.nn.Parameter)) \
                and not self.__dict__.get("_internal", False):
            value = self._check_param(name, value)
        super().__setattr__(name, value)

    @contextlib.contextmanager
    def internal_updates(self):
        """Assign parameters without the user-facing checks (M-step results)."""
        previous = self.__dict__.get("_internal", False)
        object.__setattr__(self, "_internal", True)
        try:
            yield self
        finally:
            object.__setattr__(self, "_internal", previous)

    def _set_internal(self, **values):
        """Set parameters without the user-facing checks (M-step results): a tensor for
        an existing ``PyroParam`` straight into its unconstrained tensor
        (:func:`pyroem.models.raw.assign`, what ``PyroModule`` does after its lookups)."""
        with self.internal_updates():
            for k, v in values.items():
                if torch.is_tensor(v) and k in self.__dict__.get("_pyro_params", ()) \
                        and k + "_unconstrained" in self._parameters:
                    raw.assign(self, k, v)
                else:
                    setattr(self, k, v)
