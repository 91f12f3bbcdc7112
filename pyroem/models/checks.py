"""Input checks shared by the built-in models: clear errors that name the problem."""

import numpy as np
import torch


def check_option(name, value, allowed):
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(allowed)}")
    return value


def check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def as_float_tensor(x, name="x", dtype=None):
    """``x`` as a floating tensor (no copy where possible; never modified in place)."""
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} could not be read as a numeric array: {e}") from None
    if dtype is not None:
        x = x.to(dtype)
    elif not x.is_floating_point():
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
        x = x.to(torch.get_default_dtype())
    return x


def check_finite(x, name="x"):
    bad = ~torch.isfinite(x)
    if bad.any():
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} contains NaN or inf (first at index {index})")
    return x


def check_matrix(x, dim, name="x", dtype=None):
    """Data of shape ``(N, dim)`` (or ``(N,)`` when ``dim == 1``), finite, as a tensor."""
    x = as_float_tensor(x, name, dtype)
    if x.dim() == 1 and dim == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 2 or x.shape[-1] != dim:
        expected = f"(N, {dim})" + (" or (N,)" if dim == 1 else "")
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
    return check_finite(x, name)
