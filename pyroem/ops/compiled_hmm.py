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

import torch

from pyroem.ops import compiled
from pyroem.ops.compiled_gaussian import MAX_DIM

#: ``flags`` bits: which parameters the M-step sets (the others stay as they are).
START, TRANS, MEANS, COVARIANCES = 1, 2, 4, 8
#: Status codes of the kernel other than 0 (success).
NOT_POSITIVE, NOT_FINITE = 1, 2


def applies(x, *params):
    """Whether the kernel takes the data ``x (B, T, D)`` and parameters: on the CPU, one
    float dtype, at most :data:`~pyroem.ops.compiled.MAX_STATES` states and
    :data:`~pyroem.ops.compiled_gaussian.MAX_DIM` dimensions, and the library loads."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and all(p.dtype == x.dtype and p.device.type == "cpu" for p in params)
            and x.shape[-1] <= MAX_DIM and 0 < params[0].shape[-1] <= compiled.MAX_STATES
            and compiled.library() is not None)


def gaussian_hmm_step(x, lengths, chain, emission, flags, reg, offsets, final_w=None):
    r"""
    The E-step under the current parameters and the M-step's new values.

    :param x: ``(B, T, D)`` padded frames; ``lengths (B,)``.
    :param chain: ``(us (K,), ut (K, K))``, the stored logarithms of the start and
        transition probabilities (each row up to a constant).
    :param emission: ``(means (K, D), scales (K, D), spherical)``: standard deviations
        (a spherical state's repeated along ``D``).
    :param int flags: the parameters to update, a sum of :data:`START`, :data:`TRANS`,
        :data:`MEANS`, :data:`COVARIANCES`.
    :param float reg: added to the variances.
    :param offsets: ``(alpha_start - 1, alpha_trans - 1)`` of the Dirichlet priors, each
        ``None`` for maximum likelihood.
    :param final_w: ``(K,)`` 0/1 weights of the allowed final states, or ``None``.
    :returns: ``None`` where the M-step gave a variance that is not positive or a value
        that is NaN or infinite (nothing is returned to write); otherwise a dict: ``log_ev
        (B,)`` float64, ``gamma (B, T, K)``, ``xi (K, K)``, ``start (K,)`` (the start
        counts), ``log_emit (B, T, K)``, ``log_start (K,)``, ``trans (K, K)`` (the old
        ones), and the new unconstrained values ``us``, ``ut``, ``means``,
        ``log_scales`` (``(K,)`` when spherical) of the parameters in ``flags``.
    """
    us, ut = chain
    means, scales, spherical = emission
    B, T, D = x.shape
    K = us.shape[-1]
    dtype = x.dtype
    out = {name: torch.empty(shape, dtype=dtype) for name, shape in (
        ("log_start", (K,)), ("trans", (K, K)), ("log_emit", (B, T, K)), ("gamma", (B, T, K)),
        ("xi", (K, K)), ("start", (K,)), ("moments", (K * (1 + 3 * D),)), ("us", (K,)),
        ("ut", (K, K)), ("means", (K, D)), ("log_scales", (K,) if spherical else (K, D)))}
    out["log_ev"] = torch.empty(B, dtype=torch.float64)
    # contiguous inputs, held here while the kernel reads their addresses
    inputs = [None if t is None else t.contiguous() for t in (
        x, lengths.to(torch.int64), us, ut, final_w, means, scales, *offsets)]
    fw, scale = compiled._scratch(T, K, dtype)
    fn = getattr(compiled.library(), "gaussian_hmm_step_" + ("f64" if dtype == torch.float64
                                                             else "f32"))
    status = fn(B, T, K, D, int(spherical), flags, reg,
                *(None if t is None else t.data_ptr() for t in inputs),
                *(out[n].data_ptr() for n in ("log_start", "trans", "log_emit", "gamma")),
                fw, scale, *(out[n].data_ptr() for n in (
                    "xi", "log_ev", "start", "moments", "us", "ut", "means", "log_scales")))
    return None if status else out
