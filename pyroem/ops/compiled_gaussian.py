r"""
Compiled Gaussian frame kernels for small problems (``kernels/gaussian_frames.c``, built
and loaded with the recursion of :mod:`~pyroem.ops.compiled`, under the same switch
``PYROEM_COMPILED`` and with the same fallback): diagonal log-densities and each
component's moments about its own mean, one pass each.

On a tiny problem (bench/hmm.py ``--case tiny``: 300 frames, 2 states, 1 dimension) the
torch formulas of :mod:`~pyroem.models.gaussian_direct` are ten operations each of a few
microseconds, for a few hundred multiply-adds: the kernels do the same arithmetic in one
call. They accumulate in double in both dtypes; results agree with the torch formulas
to rounding (tests/test_compiled_kernel.py).
"""

import torch

from pyroem.ops import compiled

#: The most dimensions :func:`own_mean_moments` takes (the kernel's per-frame buffers).
MAX_DIM = 64


def cpu_floats(*tensors):
    """Whether the compiled kernels can read these tensors: on the CPU, all float32 or all
    float64, and the library loads."""
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64):
        return False
    for t in tensors:
        if t.dtype != first.dtype or t.device.type != "cpu":
            return False
    return compiled.library() is not None


def applies(*tensors):
    """Whether the kernels take these tensors: :func:`cpu_floats`, and none that needs a
    gradient (the kernels build no graph)."""
    return cpu_floats(*tensors) and not (
        torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def diag_log_prob(x, means, scales):
    r"""
    :math:`\log \mathcal N(x_r | \mu_c, \mathrm{diag}(s_c^2))` for every row and
    component (check :func:`applies` first).

    :param x: ``(R, D)``.
    :param means: ``(C, D)``.
    :param scales: ``(C, D)`` standard deviations.
    :returns: ``(R, C)``.
    """
    R, D = x.shape
    C = means.shape[0]
    # no detach: the kernel reads addresses, and applies() refused anything needing a gradient
    x, means, scales = x.contiguous(), means.contiguous(), scales.contiguous()
    out = torch.empty(R, C, dtype=x.dtype)
    compiled.kernel("diag_log_prob", x.dtype)(R, C, D, x.data_ptr(), means.data_ptr(),
                                      scales.data_ptr(), out.data_ptr())
    return out


def own_mean_moments(weights, x, kind="full"):
    r"""
    :func:`~pyroem.distributions.statistics.own_mean_moments` by the kernel (check
    :func:`applies` first, and ``D <=`` :data:`MAX_DIM`): each component's moments about
    its own weighted mean, two passes.

    :param weights: ``(R, C)``.
    :param x: ``(R, D)``.
    :returns: ``{"n": (C,), "sx": (C, D), "sxx": (C, D*D) or (C, D), "shift": (C, D)}``.
    """
    R, D = x.shape
    C = weights.shape[1]
    weights, x = weights.contiguous(), x.contiguous()
    full = kind == "full"
    n, refs, sx = torch.empty(C, dtype=x.dtype), torch.empty(C, D, dtype=x.dtype), \
        torch.empty(C, D, dtype=x.dtype)
    sxx = torch.empty(C, D * D if full else D, dtype=x.dtype)
    compiled.kernel("own_mean_moments", x.dtype)(R, C, D, int(full), weights.data_ptr(), x.data_ptr(),
                                         n.data_ptr(), refs.data_ptr(), sx.data_ptr(),
                                         sxx.data_ptr())
    return {"n": n, "sx": sx, "sxx": sxx, "shift": refs}
