r"""
One whole EM iteration of a hidden Markov model with diagonal or spherical Gaussian
emissions in one compiled call (``kernels/gaussian_hmm_step.c``, built and loaded with
:mod:`~pyroem.ops.compiled`, under the same switch ``PYROEM_COMPILED``): the E-step of
:mod:`~pyroem.ops.compiled` and :mod:`~pyroem.ops.compiled_gaussian` and the closed-form
M-step of the torch route, for problems so small that the iteration's torch operations
and Python calls, not its arithmetic, set its time.

On bench/hmm.py ``--case tiny`` (one sequence of 300 frames, 2 states, 1 dimension) the
separate steps are about a hundred torch operations and four hundred Python calls, some
0.5 ms against hmmlearn's 0.19 ms; the arithmetic is a few thousand multiply-adds. The
separate steps remain the reference: tests/test_fused_step.py runs both routes side by
side.
"""

import array

import torch

from pyroem.ops import compiled
from pyroem.ops.compiled_gaussian import MAX_DIM, cpu_floats

#: ``flags`` bits: which parameters the M-step sets (the others stay as they are).
START, TRANS, MEANS, COVARIANCES = 1, 2, 4, 8
def applies(x, *params):
    """Whether the kernel takes the data ``x (B, T, D)`` and parameters (the first one with
    the ``K`` states last): at most :data:`~pyroem.ops.compiled.MAX_STATES` states and
    :data:`~pyroem.ops.compiled_gaussian.MAX_DIM` dimensions, and
    :func:`~pyroem.ops.compiled_gaussian.cpu_floats`."""
    return x.shape[-1] <= MAX_DIM and 0 < params[0].shape[-1] <= compiled.MAX_STATES \
        and cpu_floats(x, *params)


#: the kernel's table of addresses, after the inputs: the outputs by name (its enum)
_OUTPUTS = ("log_start", "trans", "log_emit", "gamma")
_MORE_OUTPUTS = ("xi", "log_ev", "start", "new_us", "new_ut", "new_means", "new_log_scales")


def gaussian_hmm_step(x, lengths, chain, emission, flags, reg, alphas, final_w=None):
    r"""
    The E-step under the current parameters and the M-step's new values.

    :param x: ``(B, T, D)`` padded frames; ``lengths (B,)``.
    :param chain: ``(us (K,), ut (K, K))``, the stored logarithms of the start and
        transition probabilities (each row up to a constant).
    :param emission: ``(means (K, D), log_scales, spherical)``: the stored logarithms of
        the standard deviations, ``(K, D)``, or ``(K,)`` when ``spherical``.
    :param int flags: the parameters to update, a sum of :data:`START`, :data:`TRANS`,
        :data:`MEANS`, :data:`COVARIANCES`.
    :param float reg: added to the variances.
    :param alphas: ``(alpha_start (K,), alpha_trans (K, K))``, the Dirichlet
        concentrations of the priors (ones: maximum likelihood).
    :param final_w: ``(K,)`` 0/1 weights of the allowed final states, or ``None``.
    :returns: ``None`` where the M-step gave a variance that is not positive or a value
        that is NaN or infinite (nothing is returned to write); otherwise a dict: ``log_ev
        (B,)`` float64, ``gamma (B, T, K)``, ``xi (K, K)``, ``start (K,)`` (the start
        counts), ``log_emit (B, T, K)``, ``log_start (K,)``, ``trans (K, K)`` (the old
        ones), and the new stored values ``new_us``, ``new_ut``, ``new_means``,
        ``new_log_scales`` (of the parameters in ``flags``; the others unset).
    """
    us, ut = chain
    means, log_scales, spherical = emission
    B, T, D = x.shape
    K = us.shape[-1]
    dtype = x.dtype
    shapes = {"log_start": (K,), "trans": (K, K), "log_emit": (B, T, K), "gamma": (B, T, K),
              "xi": (K, K), "start": (K,), "new_us": (K,), "new_ut": (K, K),
              "new_means": (K, D), "new_log_scales": tuple(log_scales.shape)}
    out = {name: torch.empty(shape, dtype=dtype) for name, shape in shapes.items()}
    out["log_ev"] = torch.empty(B, dtype=torch.float64)
    # contiguous inputs, held here while the kernel reads their addresses
    inputs = [None if t is None else t.contiguous() for t in (
        x, lengths.to(torch.int64), us, ut, final_w, means, log_scales, *alphas)]
    fw, scale = compiled._scratch(T, K, dtype)
    table = array.array("q", [0 if t is None else t.data_ptr() for t in inputs]
                        + [out[n].data_ptr() for n in _OUTPUTS] + [fw, scale]
                        + [out[n].data_ptr() for n in _MORE_OUTPUTS])
    dims = array.array("q", (B, T, K, D, int(spherical), flags))
    status = compiled.kernel("gaussian_hmm_step", dtype)(dims.buffer_info()[0], reg,
                                                        table.buffer_info()[0])
    return None if status else out
